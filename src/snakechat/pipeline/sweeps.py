"""The config's named sweeps as ordinary models: each run of a sweep is a model entry derived from
the sweep's base model (tokenizer, data, eval bundle, precision and every setting shared, recipe
included), so that it trains, resumes, records its provenance and goes stale by the ordinary rules,
and a target results/base/<run> names it like any model.

- A series lists depths: run `<series>-d<depth>` is the base model at that depth.
- A scaling sweep lists FLOP budgets and per budget the depths to try: run
  `<sweep>-<budget>-d<depth>` (budget written as 2e12, 2.5e12) trains for exactly that budget
  (base.target_flops; steps are then derived from it, so base.steps is set to 0).

A sweep's `base` mapping overrides base settings for all its runs (shorter evaluations, a tokens per
parameter ratio); it is checked against the schema as the runs' own base section.
"""

import copy

KINDS = ("series", "scaling")


def budget_label(flops):
    """A FLOP budget as a run name writes it: 2e12, 2.5e12, 1e19 (no '+', no trailing zeros)."""
    mantissa, _, exponent = f"{flops:.6e}".partition("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def runs(config):
    """One dict per run of every sweep: run, kind, sweep, model (the base entry), depth, budget
    (None in a series) and key (the config key it comes from, for errors)."""
    out = []
    sweeps = config.get("sweeps") or {}
    for name, s in (sweeps.get("series") or {}).items():
        for depth in s["depths"]:
            out.append({"run": f"{name}-d{depth}", "kind": "series", "sweep": name, "model": s["model"], "depth": depth, "budget": None,
                        "key": f"sweeps.series.{name}"})
    for name, s in (sweeps.get("scaling") or {}).items():
        for i, b in enumerate(s["budgets"]):
            for depth in b["depths"]:
                out.append({"run": f"{name}-{budget_label(b['flops'])}-d{depth}", "kind": "scaling", "sweep": name, "model": s["model"],
                            "depth": depth, "budget": b["flops"], "key": f"sweeps.scaling.{name}.budgets.{i}"})
    return out


def of(config, kind, name):
    """The runs of the sweep `name` of `kind`, in the config's order."""
    return [r for r in runs(config) if r["kind"] == kind and r["sweep"] == name]


def run_entry(config, run):
    """The model entry of one run: its base model's entry at the run's depth, the sweep's base
    overrides applied, and for a scaling run the budget as target_flops."""
    sweep = config["sweeps"][run["kind"]][run["sweep"]]
    entry = copy.deepcopy(config["models"][run["model"]])
    entry["depth"] = run["depth"]
    entry["base"] = {**entry.get("base", {}), **copy.deepcopy(sweep.get("base", {}))}
    if run["budget"] is not None:
        entry["base"].update(steps=0, target_flops=run["budget"])
    return entry


def problems(config):
    """Why the sweeps cannot be expanded, one line each: a base model the config lacks, a run name
    that is already a model's or another run's, a scaling sweep that sets steps."""
    out, seen = [], {}
    models = config.get("models") or {}
    for kind in KINDS:
        for name, s in ((config.get("sweeps") or {}).get(kind) or {}).items():
            if name in models:
                out.append(f"sweeps.{kind}.{name}: a sweep may not have a model's name (plan and targets name either)")
            if s["model"] not in models:
                out.append(f"sweeps.{kind}.{name}.model: {s['model']!r} is not defined in models (known: {', '.join(sorted(models)) or 'none'})")
            if kind == "scaling" and "steps" in s.get("base", {}):
                out.append(f"sweeps.scaling.{name}.base.steps: a scaling run's steps come from its budget; remove it")
    for r in runs(config):
        if r["run"] in models:
            out.append(f"{r['key']}: run {r['run']!r} has the name of a model of the config; rename the sweep")
        elif r["run"] in seen:
            out.append(f"{r['key']}: run {r['run']!r} is also a run of {seen[r['run']]} (a depth or budget given twice?)")
        seen.setdefault(r["run"], r["key"])
    return out


def expand(config):
    """{run: model entry} of every sweep run (call after `problems` found none)."""
    return {r["run"]: run_entry(config, r) for r in runs(config)}


def budget_problem(config, model_name):
    """Why a scaling run's budget buys not even one step of its model, as one line naming the
    sweep's key; None where it does, or where the model has no budget. Checked per planned job
    (by common.smk's launch), as sizing a model imports torch and builds it on the meta device."""
    m = config["models"][model_name]
    if not m["base"]["target_flops"]:
        return None
    from snakechat.model import sizing  # imports torch

    vocab = config["tokenizers"][m["tokenizer"]]["vocab_size"]
    try:
        sizing.size(m["depth"], vocab, **{k: m["base"][k] for k in sizing.SIZE_KEYS})
    except ValueError as e:
        key = next((r["key"] for r in runs(config) if r["run"] == model_name), f"models.{model_name}.base.target_flops")
        return f"{key}: run {model_name}: {e}"
    return None
