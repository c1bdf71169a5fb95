"""The report card of one model: environment, the model, time and cost per stage, every metric across stages.

    python -m snakechat.report --model tiny \\
        --tok-eval results/tokenizer/tinyworld-4k/tok_eval.csv \\
        --checkpoint base=results/base/tiny --checkpoint sft=results/sft/tiny ... \\
        --base-loss results/base_loss/tiny.json --base-eval results/base_eval/tiny.csv \\
        --chat-eval sft=results/chat_eval/tiny/sft.csv ... \\
        --benchmark base_train=results/benchmarks/base_train/tiny.tsv ... \\
        --gpu-hour-usd 3.0 --out results/report/tiny.md

Every input is optional: a stage whose files are not given gets a line saying it has not been run,
so the card can be made at any point of a model's life.
"""

import argparse
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import torch

from snakechat.model import recipes, sizing
from snakechat.runtime.common import write_text_atomic
from snakechat.runtime.provenance import git_state
from snakechat.runtime.settings import finite_float

STAGES = ["base", "mid", "sft", "rl"]
TRAINING_JOBS = {"base_train": "base", "mid_train": "mid", "chat_sft": "sft", "chat_rl": "rl"}
# the pipeline's order, whatever order the jobs are given in; chat_eval:<stage> follows STAGES
JOB_ORDER = ["dataset", "tok_train", "tok_eval", "eval_bundle", "chat_data", "base_train", "base_loss", "base_eval",
             "mid_train", "chat_sft", "chat_rl", "chat_eval"]
PACKAGES = ["snakechat", "torch", "snakemake", "snakemake-executor-plugin-slurm", "tokenizers", "pyarrow", "pandas", "seaborn"]


def labelled(items):
    out = {}
    for item in items or []:
        label, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"expected LABEL=PATH, got {item!r}")
        out[label] = Path(path)
    return out


def table(rows, headers):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x, digits=4):
    if x is None or (isinstance(x, float) and pd.isna(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, int) and abs(x) >= 10_000:
        return f"{x:,}"
    return str(x)


def human(n):
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def environment_section(metas):
    commit, dirty = git_state()
    versions = []
    for p in PACKAGES:
        try:
            versions.append(f"{p} {version(p)}")
        except PackageNotFoundError:
            pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    trained_on = sorted({f"{m.get('device', '?')} × {m.get('world_size', 1)}" + (f" in {m['precision']}" if m.get("precision") else "") for m in metas.values()})
    rows = [
        ("git commit", f"{commit or 'not a git checkout'}{' (dirty)' if dirty else ''}"),
        ("host", platform.node()),
        ("platform", platform.platform()),
        ("CPU", f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"),
        ("GPU", gpu),
        ("trained on (device × world size, precision)", ", ".join(trained_on) or "–"),
        ("packages", ", ".join(versions)),
    ]
    return "## Environment\n\n" + table(rows, ["", ""])


def model_section(meta):
    if meta is None:
        return "## Model\n\nThe base model has not been trained yet."
    cfg = meta.get("model_config", {})
    params = sizing.parameters(meta)
    tokens = meta.get("tokens")
    recipe = cfg.get("recipe", recipes.DEFAULT)
    rows = [
        ("recipe", recipe + (f" (windows {cfg.get('window_pattern')})" if recipe == recipes.NANOCHAT_2026 else "")),
        ("parameters", human(params) if params else "–"),
        ("depth", cfg.get("n_layer")),
        ("width", cfg.get("n_embd")),
        ("heads (kv heads)", f"{cfg.get('n_head')} ({cfg.get('n_kv_head')})"),
        ("context", cfg.get("sequence_len")),
        ("vocabulary", cfg.get("vocab_size")),
        ("tokens trained", human(tokens) if tokens else "–"),
        ("tokens : params", f"{tokens / params:.1f}" if tokens and params else "–"),
        ("training FLOPs", f"{meta['flops']:.3e}" if meta.get("flops") else "–"),
    ]
    return "## Model\n\n" + table(rows, ["", ""])


def job_order(job):
    """Sort key putting jobs in pipeline order (mid before SFT before RL); unknown jobs last."""
    name, _, stage = job.partition(":")
    return (JOB_ORDER.index(name) if name in JOB_ORDER else len(JOB_ORDER), STAGES.index(stage) if stage in STAGES else len(STAGES))


def time_section(benchmarks, metas, gpu_hour_usd):
    rows, total_s, total_usd = [], 0.0, 0.0
    for job, path in sorted(benchmarks.items(), key=lambda item: job_order(item[0])):
        s = float(pd.read_csv(path, sep="\t")["s"].iloc[0])
        meta = metas.get(TRAINING_JOBS.get(job), {})
        gpus = meta.get("world_size", 1) if str(meta.get("device", "")).startswith("cuda") else 0
        usd = s / 3600 * gpus * gpu_hour_usd
        total_s, total_usd = total_s + s, total_usd + usd
        rows.append((job, f"{s:.1f}", gpus or "CPU", f"${usd:.2f}"))
    rows.append(("**total**", f"{total_s:.1f}", "", f"${total_usd:.2f}"))
    return f"## Time and cost\n\nAt ${gpu_hour_usd}/GPU-hour; CPU jobs are counted as free.\n\n" + table(rows, ["job", "wall s", "GPUs", "cost"])


def metrics_section(tok_eval, base_loss, base_eval, chat_evals, metas):
    """One table, one row per metric, one column per stage it was measured at."""
    cols = ["tokenizer", "base", "mid", "sft", "rl"]
    rows = {}

    def put(metric, stage, value):
        rows.setdefault(metric, {})[stage] = value

    if tok_eval is not None:
        df = pd.read_csv(tok_eval)
        own = df[(df["status"].fillna("ok") == "ok") & (df["tokenizer"] == df["tokenizer"].iloc[0])]
        for _, r in own.iterrows():
            put(f"bytes/token: {r['text_kind']}", "tokenizer", r["bytes_per_token"])
    if base_loss is not None:
        bl = json.loads(base_loss.read_text())
        for key in ("train_bpb", "val_bpb", "unigram_val_bpb"):
            if key in bl:
                put(key.replace("_", " "), "base", bl[key])
    if base_eval is not None:
        df = pd.read_csv(base_eval)
        for _, r in df.iterrows():
            put(core_label(df) if r["label"] == "CORE" else f"CORE task: {r['label']} (centered)", "base", r["centered"])
    for stage, path in chat_evals.items():
        df = pd.read_csv(path)
        for _, r in df.iterrows():
            metric, value = chat_metric(r, len(df) - 1)
            put(metric, stage, value)
    for metric, stage, value in rl_held_out(metas.get("rl", {})):
        put(metric, stage, value)
    rl_log = metas.get("rl", {}).get("_log")
    if rl_log is not None and "reward" in rl_log:
        put("RL mean reward (last step)", "rl", rl_log["reward"].dropna().iloc[-1] if rl_log["reward"].notna().any() else None)
    body = [(m, *[fmt(v.get(c)) for c in cols]) for m, v in rows.items()]
    return "## Metrics\n\n" + (table(body, ["metric", *cols]) if body else "No metrics yet.")


def core_label(df):
    """"CORE (N tasks, M items each)": a mean over fewer tasks or items is not the published CORE."""
    tasks = df[df["label"] != "CORE"]
    counts = sorted({int(n) for n in tasks["n"].dropna()})
    items = "?" if not counts else f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}"
    return f"CORE ({len(tasks)} tasks, {items} items each)"


def rl_held_out(meta):
    """(metric, stage, value) rows of RL's held-out pass@1 and pass@k: the first evaluation (step 0)
    measures the SFT model RL starts from, the last one the RL model."""
    evals, settings = meta.get("evals") or [], meta.get("train", {})
    if not evals:
        return []
    k = settings.get("pass_k")
    what = f"{', '.join(settings.get('tasks', [])) or 'held-out problems'}, {evals[-1]['n']:,} problems"
    rows = []
    for key, name in {"pass_at_1": "pass@1", f"pass_at_{k}": f"pass@{k}"}.items():
        metric = f"RL held-out {name} ({what})"
        if evals[0].get("step") == 0 and key in evals[0]:
            rows.append((metric, "sft", evals[0][key]))
        if key in evals[-1]:
            rows.append((metric, "rl", evals[-1][key]))
    return rows


def chat_metric(row, n_tasks):
    """(label, value) of a chat_eval row; the label says which protocol and how many items, since
    only "nanochat" numbers on whole test sets compare with nanochat's published ones."""
    n, of = int(row["n"]), int(row["test_items"])
    items = f"all {n:,} items" if n == of else f"{n:,} of {of:,} items"
    if row["task"] == "ChatCORE":
        return f"ChatCORE ({row['protocol']}; {n_tasks} tasks, {items})", row["centered"]
    return f"chat: {row['task']} (accuracy; {row['protocol']}, {items})", row["accuracy"]


def recorded_precision(path):
    """The precision an evaluation's JSON output or sidecar records, or None (older or unreadable files)."""
    try:
        return json.loads(Path(path).read_text()).get("precision")
    except (OSError, ValueError, AttributeError):
        return None


def eval_precisions(base_loss, base_eval, chat_evals):
    """{evaluation: the precision it ran in}, as base_loss's JSON and the sidecars of base_eval and chat_eval record it."""
    found = {"base_loss": base_loss and recorded_precision(base_loss), "base_eval": base_eval and recorded_precision(f"{base_eval}.meta.json")}
    chat = sorted({recorded_precision(f"{path}.meta.json") for path in chat_evals.values()} - {None})
    found["chat_eval"] = "/".join(chat) or None
    return {k: v for k, v in found.items() if v}


def stages_section(metas, given, precisions):
    lines = []
    for stage in ["tokenizer", *STAGES, "base_loss", "base_eval", "chat_eval"]:
        if stage in given:
            extra = ""
            if stage in metas:
                m = metas[stage]
                extra = f": {m.get('step', '?')} steps, {human(m['tokens']) if m.get('tokens') else '?'} tokens, {m.get('elapsed_s', 0):.0f} s"
                precisions = {**precisions, stage: m.get("precision")}
            lines.append(f"- {stage}: done{extra}" + (f" (in {precisions[stage]})" if precisions.get(stage) else ""))
        else:
            lines.append(f"- {stage}: not run")
    return "## Stages\n\n" + "\n".join(lines)


def load_meta(ckpt_dir):
    meta = json.loads((ckpt_dir / "meta.json").read_text())
    log = ckpt_dir / "train_log.csv"
    if log.exists():
        meta["_log"] = pd.read_csv(log)
    return meta


def build(args):
    checkpoints = labelled(args.checkpoint)
    unknown = set(checkpoints) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stage(s) {sorted(unknown)} in --checkpoint; expected one of {STAGES}")
    metas = {stage: load_meta(path) for stage, path in checkpoints.items()}
    chat_evals = labelled(args.chat_eval)
    given = set(checkpoints) | ({"tokenizer"} if args.tok_eval else set())
    given |= {name for name, val in (("base_loss", args.base_loss), ("base_eval", args.base_eval)) if val}
    given |= {"chat_eval"} if chat_evals else set()
    parts = [
        f"# snakechat report card: `{args.model}`",
        stages_section(metas, given, eval_precisions(args.base_loss, args.base_eval, chat_evals)),
        environment_section(metas),
        model_section(metas.get("base")),
        time_section(labelled(args.benchmark), metas, args.gpu_hour_usd),
        metrics_section(
            Path(args.tok_eval) if args.tok_eval else None,
            Path(args.base_loss) if args.base_loss else None,
            Path(args.base_eval) if args.base_eval else None,
            chat_evals,
            metas,
        ),
    ]
    if args.base_loss:
        samples = json.loads(Path(args.base_loss).read_text()).get("samples", [])
        if samples:
            parts.append("## Base model samples (greedy)\n\n" + "\n".join(f"- `{s['prompt']}` → `{s['completion'].strip()}`" for s in samples))
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tok-eval")
    parser.add_argument("--checkpoint", nargs="*", metavar="STAGE=DIR")
    parser.add_argument("--base-loss")
    parser.add_argument("--base-eval")
    parser.add_argument("--chat-eval", nargs="*", metavar="STAGE=CSV")
    parser.add_argument("--benchmark", nargs="*", metavar="JOB=TSV")
    parser.add_argument("--gpu-hour-usd", type=finite_float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    write_text_atomic(args.out, build(args))


if __name__ == "__main__":
    main()
