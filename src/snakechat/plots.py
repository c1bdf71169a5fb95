"""Plots for the report, one subcommand per figure, each drawn with seaborn from the logged CSVs.

    python -m snakechat.plots training --logs base:tiny=results/base/tiny/train_log.csv ... --out results/plots/training.png
    python -m snakechat.plots throughput --logs ... --out results/plots/throughput.png
    python -m snakechat.plots tokenizer --tok-eval tinyworld-4k=results/tokenizer/tinyworld-4k/tok_eval.csv --out ...
    python -m snakechat.plots core --base-eval tiny=results/base_eval/tiny.csv --out results/plots/core.png
    python -m snakechat.plots chat_eval --chat-eval sft:tiny=results/chat_eval/tiny/sft.csv ... --out ...
    python -m snakechat.plots rl --logs rl:tiny=results/rl/tiny/train_log.csv --out results/plots/rl.png
    python -m snakechat.plots time --benchmarks base_train:tiny=results/benchmarks/base_train/tiny.tsv ... --out ...
    python -m snakechat.plots series --csv results/series/tiny-series.csv --out results/plots/series/tiny-series.png
    python -m snakechat.plots scaling --csv results/scaling/tiny-scaling.csv --out results/plots/scaling/tiny-scaling.png

Inputs are given as LABEL=PATH (LABEL is `stage:model` or a name), so a rule lists exactly the files
a figure depends on and the figure is rebuilt when they change and not otherwise.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from snakechat.evaluate import scaling  # noqa: E402
from snakechat.runtime.common import atomic_path  # noqa: E402


def parse_labelled(items):
    """['a:b=path', ...] -> [(label, path)]; a missing '=' is an error naming the item."""
    out = []
    for item in items or []:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"expected LABEL=PATH, got {item!r}")
        out.append((label, path))
    return out


def read_labelled(items, reader=pd.read_csv):
    frames = []
    for label, path in parse_labelled(items):
        df = reader(path)
        stage, _, model = label.partition(":")
        df["run"], df["stage"], df["model"] = label, stage, model or stage
        frames.append(df)
    if not frames:
        raise SystemExit("no input files given")
    return pd.concat(frames, ignore_index=True)


def save(fig, out):
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


# what each stage's val_bpb measures: the numbers of different stages are not on the same data
VAL_DATA = {
    "base": "pretraining val shards",
    "mid": "mid mixture's test conversations",
    "sft": "SFT mixture's test conversations",
}


def read_meta(ckpt_dir):
    path = Path(ckpt_dir) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else None


def start_flops(ckpt_dir):
    """FLOPs spent before this checkpoint's stage began: those of every checkpoint it continues from,
    followed through meta.json's `start` (mid from base, SFT from mid or base)."""
    total, meta, seen = 0, read_meta(ckpt_dir), set()
    while meta and meta.get("start"):
        start = Path(meta["start"]).resolve()
        if start in seen:
            raise SystemExit(f"{ckpt_dir}: the start checkpoints form a cycle at {start}")
        seen.add(start)
        meta = read_meta(start)
        if meta is None:
            raise SystemExit(f"{ckpt_dir}: its start checkpoint {start} has no meta.json, so its FLOPs are unknown")
        total += meta.get("flops") or 0
    return total


def training_logs(items):
    """The training logs of LABEL=train_log.csv items, `flops` counted from the start of base training."""
    df = read_labelled(items)
    offsets = {label: start_flops(Path(path).parent) for label, path in parse_labelled(items)}
    df["flops"] = df["flops"] + df["run"].map(offsets)
    return df


def plot_training(args):
    """Training loss and validation bpb against step and against FLOPs, every run on one figure.
    On the FLOPs axis chat stages continue where their start checkpoint ended; each validation
    curve is labelled with the data it measures, since stages validate on different text."""
    df = training_logs(args.logs)
    val = df.dropna(subset=["val_bpb"]).copy()
    val["measured on"] = val["run"] + ": " + val["stage"].map(VAL_DATA).fillna("its own validation data")
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), layout="constrained")
    sns.lineplot(data=df, x="step", y="loss", hue="run", ax=axes[0, 0])
    sns.lineplot(data=df, x="flops", y="loss", hue="run", ax=axes[0, 1])
    if len(val):
        sns.lineplot(data=val, x="step", y="val_bpb", hue="measured on", marker="o", ax=axes[1, 0])
        sns.lineplot(data=val, x="flops", y="val_bpb", hue="measured on", marker="o", ax=axes[1, 1])
    for ax in axes[:, 1]:
        ax.set_xlabel("FLOPs since base training began")
        ax.xaxis.set_major_formatter(EngFormatter())
    axes[0, 0].set_title("training loss by step")
    axes[0, 1].set_title("training loss by FLOPs")
    axes[1, 0].set_title("validation bits per byte by step")
    axes[1, 1].set_title("validation bits per byte by FLOPs")
    # one legend per row, above and below the panels rather than over the curves
    legends = (("outside upper center", "run"), ("outside lower center", "validation bits per byte: each stage on its own data"))
    for row, (loc, title) in enumerate(legends):
        handles, labels = axes[row, 0].get_legend_handles_labels()
        for ax in axes[row]:
            if ax.get_legend():
                ax.get_legend().remove()
        if handles:
            fig.legend(handles, labels, loc=loc, title=title, ncol=min(3, len(labels)))
    return fig


def plot_throughput(args):
    """Tokens/s and MFU over wall time."""
    df = read_labelled(args.logs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    sns.lineplot(data=df, x="elapsed_s", y="tokens_per_s", hue="run", ax=axes[0])
    axes[0].set_title("tokens per second")
    if df["mfu"].notna().any():
        sns.lineplot(data=df.dropna(subset=["mfu"]), x="elapsed_s", y="mfu", hue="run", ax=axes[1])
        axes[1].set_title("model FLOPs utilisation (%)")
    else:
        axes[1].text(0.5, 0.5, "MFU unknown on this device (no peak FLOP/s)", ha="center", va="center")
        axes[1].set_axis_off()
    return fig


def plot_tokenizer(args):
    """Bytes per token by text kind, the trained tokenizers against their references."""
    df = read_labelled(args.tok_eval)
    df = df[df["status"].fillna("ok") == "ok"]
    fig, ax = plt.subplots(figsize=(10, 4), layout="constrained")
    sns.barplot(data=df, x="text_kind", y="bytes_per_token", hue="tokenizer", ax=ax)
    ax.set_title("tokenizer compression (bytes per token, higher is better)")
    return fig


def plot_core(args):
    """Centered accuracy per CORE task, CORE itself last."""
    df = read_labelled(args.base_eval)
    fig, ax = plt.subplots(figsize=(10, max(3, 0.35 * df["label"].nunique())), layout="constrained")
    sns.barplot(data=df, y="label", x="centered", hue="model", ax=ax, orient="h")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_title("CORE: centered accuracy per task (0 = random baseline)")
    return fig


def plot_chat_eval(args):
    """Accuracy per chat task across stages."""
    df = read_labelled(args.chat_eval)
    df = df[df["task"] != "ChatCORE"]
    fig, ax = plt.subplots(figsize=(10, max(3, 0.5 * df["task"].nunique())), layout="constrained")
    sns.barplot(data=df, y="task", x="accuracy", hue="run", ax=ax, orient="h")
    ax.set_title("chat evaluation: accuracy per task and stage")
    return fig


def held_out_evals(log_path):
    """The held-out evaluations an RL checkpoint records in the meta.json beside its train_log.csv,
    one row per step and metric (pass@1, pass@k)."""
    evals = json.loads((Path(log_path).parent / "meta.json").read_text()).get("evals", [])
    rows = [{"step": e["step"], "metric": "held-out " + k.replace("pass_at_", "pass@"), "value": v}
            for e in evals for k, v in e.items() if k.startswith("pass_at_")]
    return pd.DataFrame(rows, columns=["step", "metric", "value"])


def plot_rl(args):
    """Mean reward and pass@k of the sampled training problems over RL steps, and pass@1 and pass@k
    on the held-out problems at each evaluation."""
    df = read_labelled(args.logs)
    held_out = read_labelled(args.logs, reader=held_out_evals)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    sns.lineplot(data=df, x="step", y="reward", hue="run", ax=axes[0])
    axes[0].set_title("RL mean reward (training samples)")
    sns.lineplot(data=df, x="step", y="pass_at_k", hue="run", ax=axes[1])
    axes[1].set_title("RL pass@k (training samples)")
    if not held_out.empty:
        sns.lineplot(data=held_out, x="step", y="value", hue="run", style="metric", markers=True, ax=axes[2])
    axes[2].set(title="RL held-out pass@1 and pass@k", ylabel="fraction of problems")
    return fig


def plot_time(args):
    """Where the time went: wall seconds per job, from Snakemake's benchmark files."""
    df = read_labelled(args.benchmarks, reader=lambda p: pd.read_csv(p, sep="\t"))
    fig, ax = plt.subplots(figsize=(10, max(3, 0.4 * len(df))), layout="constrained")
    sns.barplot(data=df, y="run", x="s", ax=ax, orient="h", color="tab:blue")
    ax.set_xlabel("wall seconds")
    ax.set_title("time per job")
    return fig


def no_minor_labels(axes):
    """Log axes over less than a decade label their minor ticks, which then run into each other."""
    for ax in axes:
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())


def plot_series(args):
    """A series: each depth's validation bpb during training against FLOPs (from its train_log.csv
    beside the checkpoint the CSV names), and its final CORE against its training FLOPs."""
    runs = pd.read_csv(args.csv)
    runs["depth"] = "d" + runs["depth"].astype(str)
    logs = pd.concat([pd.read_csv(Path(r.checkpoint) / "train_log.csv").assign(depth=r.depth) for r in runs.itertuples()], ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    sns.lineplot(data=logs.dropna(subset=["val_bpb"]), x="flops", y="val_bpb", hue="depth", marker="o", ax=axes[0])
    axes[0].set(xscale="log", xlabel="training FLOPs", ylabel="validation bits per byte", title="validation bpb during training")
    if "core" in runs and runs["core"].notna().any():
        sns.lineplot(data=runs, x="flops", y="core", color="0.6", ax=axes[1], legend=False)
        sns.scatterplot(data=runs, x="flops", y="core", hue="depth", s=80, ax=axes[1], legend=False)
    axes[1].set(xscale="log", xlabel="training FLOPs", ylabel="CORE (centered)", title="CORE at the end of training")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].get_legend().remove()
    fig.legend(handles, labels, loc="outside upper center", title="depth", ncol=min(8, len(labels)))
    no_minor_labels(axes)
    return fig


def plot_scaling(args):
    """A scaling sweep: the isoFLOP curves with their parabolas and vertices, and the optimal
    parameters and tokens against the budget with the fitted power laws."""
    df = pd.read_csv(args.csv)
    runs = df[df["kind"] == "run"].copy()
    optima = df[(df["kind"] == "optimum") & df["params"].notna() & df["note"].fillna("").eq("")]  # within their sizes
    laws = df[df["kind"] == "law"].set_index("run")
    runs = runs.sort_values(["budget", "params"])
    runs["budget"] = runs["budget"].map(lambda c: f"{c:.3g} FLOPs")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), layout="constrained")
    sns.scatterplot(data=runs, x="params", y="val_bpb", hue="budget", s=60, ax=axes[0])
    palette = dict(zip(runs["budget"].unique(), sns.color_palette(n_colors=runs["budget"].nunique())))
    for budget, group in runs.groupby("budget", sort=False):
        try:
            opt = scaling.isoflop_optimum(group["params"], group["val_bpb"])
        except scaling.FitError:
            continue
        x = np.linspace(np.log10(group["params"].min()) - 0.1, np.log10(group["params"].max()) + 0.1, 100)
        axes[0].plot(10**x, np.polyval(opt["parabola"], x), color=palette[budget], lw=1)
        if opt["inside"]:  # a vertex outside the budget's sizes is an extrapolation: not drawn as an optimum
            axes[0].plot(10 ** opt["log10_n_opt"], opt["loss_opt"], marker="*", ms=14, color=palette[budget], ls="none")
    axes[0].set(xscale="log", xlabel="parameters", ylabel="final validation bits per byte", title="isoFLOP curves (★ optimum within the sizes)")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].get_legend().remove()
    fig.legend(handles, labels, loc="outside upper center", title="budget", ncol=min(6, len(labels)))
    for ax, column, law, name in ((axes[1], "params", "params_opt ∝ C^a", "parameters"), (axes[2], "tokens", "tokens_opt ∝ C^b", "training tokens")):
        if optima.empty:  # no budget's optimum lies within its sizes: nothing to fit or draw on log axes
            ax.text(0.5, 0.5, "no budget's optimum lies\nwithin the sizes it tried:\nno power law to fit", ha="center", va="center", transform=ax.transAxes)
            ax.set(xticks=[], yticks=[], title=f"optimal {name} against compute")
            continue
        ax.plot(optima["budget"], optima[column], "o", color="tab:blue", label="isoFLOP optimum (within the sizes)")
        if law in laws.index:
            exponent, err, log_k = laws.loc[law, ["exponent", "exponent_err", "log10_coefficient"]]
            c = np.geomspace(optima["budget"].min(), optima["budget"].max(), 50)
            ax.plot(c, 10**log_k * c**exponent, color="tab:orange", label=f"fit: exponent {exponent:.3f}" + ("" if np.isnan(err) else f" ± {err:.3f}"))
        if column == "tokens" and len(optima):
            ratio = float(np.exp(np.log(optima["tokens_per_param"]).mean()))
            ax.plot([], [], " ", label=f"tokens/param at the optima: {ratio:.3g}")
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs (budget)", ylabel=f"loss-optimal {name}", title=f"optimal {name} against compute")
        ax.legend(loc="best", fontsize="small")
    no_minor_labels(axes)
    return fig


PLOTS = {
    "training": (plot_training, "logs"),
    "throughput": (plot_throughput, "logs"),
    "tokenizer": (plot_tokenizer, "tok_eval"),
    "core": (plot_core, "base_eval"),
    "chat_eval": (plot_chat_eval, "chat_eval"),
    "rl": (plot_rl, "logs"),
    "time": (plot_time, "benchmarks"),
    "series": (plot_series, "csv"),
    "scaling": (plot_scaling, "csv"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="plot", required=True)
    for name, (_, inputs) in PLOTS.items():
        p = sub.add_parser(name)
        if inputs == "csv":
            p.add_argument("--csv", required=True, help="the sweep's CSV (snakechat.sweep)")
        else:
            p.add_argument(f"--{inputs.replace('_', '-')}", dest=inputs, nargs="+", required=True, metavar="LABEL=PATH")
        p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    sns.set_theme(style="whitegrid")
    save(PLOTS[args.plot][0](args), args.out)


if __name__ == "__main__":
    main()
