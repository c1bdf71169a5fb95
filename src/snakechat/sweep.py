"""A sweep's table: one row per run from its base checkpoint (and CORE), and for a scaling sweep the
isoFLOP fit (snakechat.evaluate.scaling).

    python -m snakechat.sweep series --runs '{"tiny-series-d1": {"depth": 1, "checkpoint": "results/base/tiny-series-d1",
        "base_eval": "results/base_eval/tiny-series-d1.csv"}, ...}' --out results/series/tiny-series.csv
    python -m snakechat.sweep scaling --runs '{"tiny-scaling-1e12-d1": {"depth": 1, "budget": 1e12,
        "checkpoint": "results/base/tiny-scaling-1e12-d1"}, ...}' --out results/scaling/tiny-scaling.csv

What each row says comes from the checkpoint's meta.json as base_train wrote it: parameters, tokens
and FLOPs the run really trained for (the trainer's own count, not the plan's), seconds of training,
and the validation bits per byte at the last step; CORE from the run's base_eval CSV. A series is
one row per depth. A scaling CSV has a `kind` column: `run` rows (with `budget_steps_off`, how many
steps' FLOPs the run is from its budget), one `optimum` row per budget (the parabola's vertex,
N_opt, D_opt, tokens per parameter, or a note where the budget has no optimum inside its depths),
and `law` rows (n_opt ∝ C^a, d_opt ∝ C^b, ratio ∝ C^(b-a), with standard errors where computable,
over the budgets whose optimum lies within their depths; the note names those left out).
"""

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from snakechat.evaluate import scaling
from snakechat.runtime.common import atomic_path


def run_row(name, spec):
    """The row of one run from its checkpoint's meta.json (and CORE from its base_eval CSV)."""
    meta_path = Path(spec["checkpoint"]) / "meta.json"
    if not meta_path.exists():
        raise SystemExit(f"run {name}: no meta.json in {spec['checkpoint']} (is it a base_train checkpoint?)")
    meta = json.loads(meta_path.read_text())
    derived = meta.get("derived", {})
    row = {"run": name, "depth": spec["depth"], "params": derived["params"], "tokens": meta["tokens"], "flops": meta["flops"],
           "tokens_per_param": meta["tokens"] / derived["params"], "steps": meta["step"], "train_s": meta["elapsed_s"], "val_bpb": meta.get("val_bpb")}
    if spec.get("budget") is not None:
        step_flops = derived["flops_per_token"] * derived["step_tokens"]
        row.update(budget=spec["budget"], budget_steps_off=(meta["flops"] - spec["budget"]) / step_flops)
    if spec.get("base_eval"):
        core = pd.read_csv(spec["base_eval"]).set_index("label")
        if "CORE" not in core.index:
            raise SystemExit(f"run {name}: {spec['base_eval']} has no CORE row")
        row["core"] = float(core.loc["CORE", "centered"])
    row["checkpoint"] = spec["checkpoint"]
    return row


def series_table(runs):
    return pd.DataFrame([run_row(name, spec) for name, spec in runs.items()]).sort_values("depth", kind="stable")


def fit_rows(fitted):
    """The optimum and law rows of a fit, as rows of the scaling CSV."""
    rows = []
    for o in fitted["optima"]:
        if "error" in o:
            rows.append({"kind": "optimum", "budget": o["budget"], "note": o["error"]})
            continue
        rows.append({"kind": "optimum", "budget": o["budget"], "params": o["n_opt"], "tokens": o["d_opt"], "tokens_per_param": o["ratio"],
                     "val_bpb": o["loss_opt"], "log10_params_err": o["log10_n_opt_err"],
                     "note": "" if o["inside"] else "vertex outside the budget's depths (extrapolated)"})
    names = {"n_opt": "params_opt ∝ C^a", "d_opt": "tokens_opt ∝ C^b", "ratio": "tokens_per_param_opt ∝ C^(b-a)"}
    left_out = [f"{o['budget']:.3g}" for o in fitted["optima"] if "error" in o or not o["inside"]]
    note = f"left out (no optimum within their depths): budgets {', '.join(left_out)}" if left_out else ""
    for key, (exponent, err, log_k) in fitted["laws"].items():
        rows.append({"kind": "law", "run": names[key], "exponent": exponent, "exponent_err": err, "log10_coefficient": log_k, "note": note})
    if not fitted["laws"]:
        rows.append({"kind": "law", "note": f"no power law: fewer than 2 budgets have an optimum within their depths; {note}"})
    return rows


def scaling_table(runs):
    rows = [{"kind": "run", **run_row(name, spec)} for name, spec in runs.items()]
    missing = [r["run"] for r in rows if r["val_bpb"] is None or math.isnan(r["val_bpb"])]
    if missing:
        raise SystemExit(f"runs without a final validation bpb: {', '.join(missing)}")
    fitted = scaling.fit([{"budget": r["budget"], "params": r["params"], "tokens": r["tokens"], "loss": r["val_bpb"]} for r in rows], strict=False)
    df = pd.DataFrame(rows + fit_rows(fitted)).astype({"depth": "Int64", "steps": "Int64"})
    order = ["kind", "run", "budget", "depth", "params", "tokens", "tokens_per_param", "flops", "budget_steps_off", "steps", "train_s", "val_bpb",
             "log10_params_err", "exponent", "exponent_err", "log10_coefficient", "note", "checkpoint"]
    return df[[c for c in order if c in df.columns]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["series", "scaling"])
    parser.add_argument("--runs", required=True, help="JSON: run -> {depth, checkpoint, base_eval (series), budget (scaling)}")
    parser.add_argument("--out", required=True, help="the CSV to write")
    args = parser.parse_args(argv)
    runs = json.loads(args.runs)
    if not runs:
        raise SystemExit("--runs names no run")
    df = series_table(runs) if args.kind == "series" else scaling_table(runs)
    with atomic_path(args.out) as tmp:
        df.to_csv(tmp, index=False)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
