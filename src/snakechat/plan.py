"""What a model will cost before it is launched: per stage, parameters, tokens, FLOPs, GPUs, wall time, cost, data and disk.

    python -m snakechat.plan d20                      # reads config/config.yaml (+ config/local.yaml), validated
    python -m snakechat.plan d20 --config my.yaml --out results/plan/d20.md
    python -m snakechat.plan d-scaling                # a sweep: each run's base_train (+ base_eval in a series), and the total

The Snakemake rule `results/plan/{model}.md` passes the validated config as JSON (`--config-json`).
Wall time = FLOPs / (GPUs × peak FLOP/s × assumed MFU); cost = GPU-hours × price. Both assumptions
come from the config's `plan` section. Anchor: nanochat's d20 (≈561M parameters, ≈11B tokens) took
about 3 hours on 8×H100, which this gives at an MFU of about 0.48.
"""

import argparse
import json
from pathlib import Path


from snakechat.pipeline import configcheck, sweeps
from snakechat.model import sizing
from snakechat.evaluate import tasks
from snakechat.world import chat as world_chat
from snakechat.runtime.common import write_text_atomic

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_BYTES_PER_PARAM = 4  # fp32 weights
STATE_BYTES_PER_PARAM = 12  # weights + up to two optimizer moments


GENERATIVE_KINDS = ("gsm8k", "humaneval")  # chat_eval samples replies for these
SCORED_KINDS = ("mc", *GENERATIVE_KINDS)  # the kinds chat_eval scores


def evaluations(steps, every):
    """How often a training loop evaluates: every `every` steps and after the last (snakechat.train_loop)."""
    return steps // every + (1 if steps % every else 0) if every else 1


def base_validation_tokens(base, step_tokens, steps):
    """Tokens base_train's validation forwards: eval_tokens in whole steps, at each evaluation."""
    per_eval = max(1, base["eval_tokens"] // step_tokens) * step_tokens
    n = evaluations(steps, base["eval_every"])
    return n * per_eval, f"{n} validations × {per_eval:,} tokens"


def base_loss_cost(settings, seq, gpus):
    """(tokens, basis) of base_loss: each split in whole passes of device_batch_rows × GPUs rows,
    then greedy samples, which re-read their whole context for each new token (no KV cache)."""
    per_pass = settings["device_batch_rows"] * gpus * seq
    per_split = max(1, settings["split_tokens"] // per_pass) * per_pass
    prompts, new = settings["prompts"], settings["max_new_tokens"]
    # prompt length at about 4 bytes per token
    samples = sum(len(p.encode()) // 4 + 1 + i for p in prompts for i in range(new))
    basis = (f"forward only: train and val × {per_split:,} tokens (split_tokens {settings['split_tokens']:,} in passes of {per_pass:,}); "
             f"{len(prompts)} greedy samples × {new} tokens")
    return 2 * per_split + samples, basis


def base_eval_cost(settings, bundle, plan):
    """(tokens, basis) of base_eval, or (None, why) where the plan does not know the bundle's size."""
    facts = plan["bundle_items"].get(bundle)
    if facts is None:
        return None, f"not priced: eval bundle {bundle!r} has no plan.bundle_items entry"
    cap = settings["max_per_task"]
    items = min(facts["items"], facts["tasks"] * cap) if cap else facts["items"]
    per_item = plan["core_tokens_per_item"]
    scope = f"at most {cap} per task" if cap else "all"
    return items * per_item, f"forward only: {facts['tasks']} tasks, {items:,} items ({scope}) × {per_item:,} tokens"


def scored_tasks(chat_data, plan):
    """{task: (kind, test rows or None)} of the tasks chat_eval scores in a chat data entry."""
    world = {name: (kind, n_test) for name, kind, _, _, n_test, _ in world_chat.TASKS}
    if chat_data["kind"] == "synthetic":
        found = world
    else:
        found = {name: world[name] for name in chat_data["world_tasks"] if name in world}
        for name, spec in chat_data["tasks"].items():
            if "test" in spec["splits"]:
                found[name] = (tasks.FORMAT_KINDS[spec["format"]], plan["test_items"].get(name))
    return {name: v for name, v in sorted(found.items()) if v[0] in SCORED_KINDS}


def chat_eval_cost(settings, scored, stages, conv_tokens):
    """(tokens, basis) of chat_eval over every chat stage: a prompt per multiple-choice item;
    num_samples replies of up to max_new_tokens per generative item."""
    per_stage, unknown, parts = 0, [], []
    for name, (kind, rows) in scored.items():
        if rows is None:
            unknown.append(name)
            continue
        items = min(rows, settings["max_per_task"]) if settings["max_per_task"] else rows
        generated = settings["num_samples"] * (conv_tokens + settings["max_new_tokens"]) if kind in GENERATIVE_KINDS else conv_tokens
        per_stage += items * generated
        parts.append(f"{name} {items:,}")
    basis = (f"forward only, {len(stages)} stages ({', '.join(stages)}) × items ({', '.join(parts) or 'none'}); "
             f"{conv_tokens} prompt tokens, generative items × {settings['num_samples']} samples × {settings['max_new_tokens']} new tokens")
    if unknown:
        basis += f"; not priced (no plan.test_items): {', '.join(unknown)}"
    return len(stages) * per_stage, basis


def mixture_examples(mixture):
    """Examples a mixture draws by weight; tasks taken by epochs depend on the data, so are not counted."""
    counted = sum(int(spec.get("weight", 0)) for spec in (mixture or {}).values())
    by_epochs = sorted(t for t, spec in (mixture or {}).items() if "epochs" in spec)
    return counted, by_epochs


def base_size(m, vocab_size):
    """The base run's sizing under the model's recipe, as the fields the plan prices: params, flops_per_token
    (window-aware under nanochat-2026-07), sequence_len, step_tokens, steps, training_tokens, total_flops, and
    the base_train row's note on the horizon."""
    b = m["base"]
    if m.get("recipe") == sizing.RECIPE_2026:
        s = sizing.size_2026_from_base(m["depth"], vocab_size, b)
        derived = "" if b["step_tokens"] else " (D^0.383 law)"
        note = (f"{s.num_iterations:,} steps × {s.total_batch_size:,} tokens{derived}; {s.tokens / s.scaling_params:.1f} tokens/scaling param "
                f"({s.scaling_params / 1e6:,.0f}M: matrices + lm_head); recipe {sizing.RECIPE_2026}")
        return dict(params=s.params_total, flops_per_token=s.flops_per_token, sequence_len=s.sequence_len, step_tokens=s.total_batch_size,
                    steps=s.num_iterations, training_tokens=s.tokens, total_flops=s.total_flops, note=note)
    s = sizing.size(m["depth"], vocab_size, **{k: b[k] for k in sizing.SIZE_KEYS})
    return dict(params=s.params, flops_per_token=s.flops_per_token, sequence_len=s.sequence_len, step_tokens=s.step_tokens, steps=s.steps,
                training_tokens=s.training_tokens, total_flops=s.total_flops, note=f"{s.steps:,} steps; {s.tokens_per_param:.1f} tokens/param")


def stage_rows(name, cfg):
    """One dict per stage of model `name` in the validated config `cfg`."""
    m = cfg["models"][name]
    tok = cfg["tokenizers"][m["tokenizer"]]
    data = cfg["datasets"][tok["dataset"]]
    plan = cfg["plan"]
    base = base_size(m, tok["vocab_size"])
    n_params, fpt, seq = base["params"], base["flops_per_token"], base["sequence_len"]
    gpus = plan["gpus"]
    rows = []

    def add(stage, tokens, flops, note="", disk=0):
        seconds = flops / (gpus * plan["gpu_peak_flops"] * plan["mfu"]) if flops else 0.0
        rows.append({
            "stage": stage, "tokens": tokens, "flops": flops, "gpus": gpus if flops else 0, "hours": seconds / 3600,
            "usd": seconds / 3600 * gpus * plan["usd_per_gpu_hour"], "disk_bytes": disk, "note": note,
        })

    shard_bytes = data["shards"] * plan["shard_bytes"] if data["kind"] == "http" else 0
    add("data", 0, 0, f"{data['shards']} shards ({data['kind']})", disk=shard_bytes)
    add("tok_train", 0, 0, f"CPU; {min(tok['max_chars'], 10**12):,} characters at most")
    val_tokens, val_basis = base_validation_tokens(m["base"], base["step_tokens"], base["steps"])
    add("base_train", base["training_tokens"], base["total_flops"] + fpt / 3 * val_tokens,
        f"{base['note']}; + {val_basis} (forward only)",
        disk=n_params * (CHECKPOINT_BYTES_PER_PARAM + STATE_BYTES_PER_PARAM))
    tokens, basis = base_loss_cost(m["base_loss"], seq, gpus)
    add("base_loss", tokens, tokens * fpt / 3, basis)
    tokens, basis = base_eval_cost(m["base_eval"], m["eval_bundle"], plan)
    if tokens is None:
        rows.append({"stage": "base_eval", "note": basis})
    else:
        add("base_eval", tokens, tokens * fpt / 3, basis)
    conv_tokens = plan["conversation_tokens"]
    for stage in ("mid", "sft"):
        s = m[stage]
        if stage == "mid" and not s["enabled"]:
            rows.append({"stage": "mid", "note": "skipped (mid.enabled: false)"})
            continue
        step_size = s["step_tokens"] if stage == "mid" else s["step_conversations"] * conv_tokens
        if s["steps"] > 0:
            t, note = s["steps"] * step_size, f"{s['steps']} steps"
        else:
            n, by_epochs = mixture_examples(s["mixture"])
            t = n * conv_tokens * s.get("epochs", 1)
            note = f"{n:,} weighted examples × {conv_tokens} tokens" + (f"; plus {', '.join(by_epochs)} by epochs (data-dependent)" if by_epochs else "")
        n_val = evaluations(max(1, -(-t // step_size)), s["eval_every"])
        per_val = s["eval_tokens"] if stage == "mid" else s["eval_conversations"] * conv_tokens
        note += f"; + {n_val} validations × {per_val:,} tokens (forward only)"
        add(stage, t, fpt * t + fpt / 3 * n_val * per_val, note, disk=n_params * (CHECKPOINT_BYTES_PER_PARAM + STATE_BYTES_PER_PARAM))
    rl = m["rl"]
    if rl["steps"]:
        sampled = rl["steps"] * rl["step_prompts"] * rl["num_samples"] * rl["max_new_tokens"]
        n_eval = evaluations(rl["steps"], rl["eval_every"]) + 1  # and once before the first step
        held_out = n_eval * rl["eval_prompts"] * rl["pass_k"] * (conv_tokens + rl["max_new_tokens"])
        # sampling is a forward per token (1/3 of training FLOPs), then one training pass over the samples
        add("rl", sampled, sampled * fpt * (1 / 3 + 1) + held_out * fpt / 3,
            f"{rl['steps']} steps × {rl['step_prompts']} prompts × {rl['num_samples']} samples × {rl['max_new_tokens']} tokens; "
            f"+ {n_eval} held-out evaluations × {rl['eval_prompts']} prompts × {rl['pass_k']} samples (forward only)")
    else:
        rows.append({"stage": "rl", "note": "steps from epochs over the training problems (data-dependent)"})
    if m.get("chat_data") is None:
        rows.append({"stage": "chat_eval", "note": "no chat_data: no chat stages"})
    else:
        stages = ["base"] + (["mid"] if m["mid"]["enabled"] else []) + ["sft", "rl"]
        tokens, basis = chat_eval_cost(m["chat_eval"], scored_tasks(cfg["chat_data"][m["chat_data"]], plan), stages, conv_tokens)
        add("chat_eval", tokens, tokens * fpt / 3, basis)
    return {"model": name, "params": n_params, "flops_per_token": fpt, "sequence_len": seq, "rows": rows, "plan": plan}


def human(n, unit=""):
    for suffix, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def render(p):
    plan = p["plan"]
    lines = [
        f"# Plan for `{p['model']}`",
        "",
        f"{human(p['params'])} parameters, {human(p['flops_per_token'])} training FLOPs per token at context {p['sequence_len']}. "
        f"Assumed: {plan['gpus']}× {plan['gpu_type']} at {human(plan['gpu_peak_flops'], 'FLOP/s')} peak, MFU {plan['mfu']:.0%}, "
        f"${plan['usd_per_gpu_hour']}/GPU-hour.",
        "",
        "| stage | tokens | FLOPs | GPUs | wall time | cost | disk | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    total_h = total_usd = 0.0
    for r in p["rows"]:
        if "flops" not in r:
            lines.append(f"| {r['stage']} | – | – | – | – | – | – | {r['note']} |")
            continue
        total_h, total_usd = total_h + r["hours"], total_usd + r["usd"]
        wall = f"{r['hours']:.2f} h" if r["hours"] >= 0.1 else f"{r['hours'] * 60:.1f} min" if r["flops"] else "–"
        tokens = human(r["tokens"]) if r["tokens"] else "–"
        flops = f"{r['flops']:.2e}" if r["flops"] else "–"
        disk = human(r["disk_bytes"], "B") if r["disk_bytes"] else "–"
        lines.append(f"| {r['stage']} | {tokens} | {flops} | {r['gpus'] or 'CPU'} | {wall} | ${r['usd']:.2f} | {disk} | {r['note']} |")
    lines += ["", f"**Total: {total_h:.2f} h on {plan['gpus']} GPUs, ${total_usd:,.2f}** (stages marked data-dependent or not priced are not included).",
              "", "Evaluation and sampling rows are priced at the same MFU as training; sampling (RL, generative chat_eval "
              "tasks) waits on one token at a time, so read their wall time as a lower bound."]
    return "\n".join(lines) + "\n"


SWEEP_STAGES = {"series": ("base_train", "base_eval"), "scaling": ("base_train",)}  # the jobs a sweep's table needs per run


def sweep_plan(kind, name, cfg):
    """One row per run of a sweep: the stages its table needs (SWEEP_STAGES), priced as a model's plan prices them."""
    rows = []
    for r in sweeps.of(cfg, kind, name):
        p = stage_rows(r["run"], cfg)
        priced = [x for x in p["rows"] if x["stage"] in SWEEP_STAGES[kind] and "flops" in x]
        train = next(x for x in priced if x["stage"] == "base_train")
        rows.append({"run": r["run"], "depth": r["depth"], "budget": r["budget"], "params": p["params"], "tokens": train["tokens"],
                     "flops": sum(x["flops"] for x in priced), "hours": sum(x["hours"] for x in priced), "usd": sum(x["usd"] for x in priced)})
    return {"kind": kind, "name": name, "rows": rows, "plan": cfg["plan"]}


def render_sweep(p):
    plan, stages = p["plan"], " + ".join(SWEEP_STAGES[p["kind"]])
    lines = [f"# Plan for the {p['kind']} sweep `{p['name']}`", "",
             f"Each run is one {stages} job; runs are independent and run side by side where the cluster has room. "
             f"Assumed: {plan['gpus']}× {plan['gpu_type']} per run at {human(plan['gpu_peak_flops'], 'FLOP/s')} peak, MFU {plan['mfu']:.0%}, "
             f"${plan['usd_per_gpu_hour']}/GPU-hour.", "",
             "| run | depth | budget | parameters | tokens | FLOPs | wall time | cost |", "|---|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        budget = f"{r['budget']:.2e}" if r["budget"] else "–"
        lines.append(f"| {r['run']} | {r['depth']} | {budget} | {human(r['params'])} | {human(r['tokens'])} | {r['flops']:.2e} | {r['hours']:.2f} h | ${r['usd']:,.2f} |")
    hours, usd = sum(r["hours"] for r in p["rows"]), sum(r["usd"] for r in p["rows"])
    longest = max(r["hours"] for r in p["rows"])
    lines += ["", f"**Total: {hours:.2f} h on {plan['gpus']} GPUs per run ({hours * plan['gpus']:.1f} GPU-hours), ${usd:,.2f}**; "
              f"with every run at once, as long as the longest run: {longest:.2f} h."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model, or a sweep (series or scaling) of the config")
    parser.add_argument("--config", default=str(ROOT / "config/config.yaml"), help="config file to read and validate")
    parser.add_argument("--overlay", default=configcheck.LOCAL_OVERLAY, help="local overlay applied to --config where it exists, as the Snakefile does (docs/configuration.md)")
    parser.add_argument("--config-json", help="an already validated config, as JSON (what the rule passes)")
    parser.add_argument("--out", help="write the markdown here instead of printing it")
    args = parser.parse_args(argv)
    if args.config_json:
        cfg = json.loads(args.config_json)
    else:
        cfg = configcheck.load(configcheck.read_yaml(args.config), ROOT / "workflow/schemas/config.schema.yaml", [args.config], overlay_path=args.overlay)
    kind = next((k for k in sweeps.KINDS if args.model in cfg.get("sweeps", {}).get(k, {})), None)
    if kind:
        text = render_sweep(sweep_plan(kind, args.model, cfg))
    elif args.model in cfg["models"]:
        text = render(stage_rows(args.model, cfg))
    else:
        runs = {r["run"] for r in sweeps.runs(cfg)}
        models = ", ".join(sorted(set(cfg["models"]) - runs))
        named = ", ".join(sorted(n for k in sweeps.KINDS for n in cfg.get("sweeps", {}).get(k, {}))) or "none"
        raise SystemExit(f"model {args.model!r} is not in the config, nor a sweep (models: {models}; sweeps: {named}; a sweep's runs are models too)")
    if args.out:
        write_text_atomic(args.out, text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
