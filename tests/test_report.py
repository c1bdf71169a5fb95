"""The report card and the plots, from hand-made files in the pipeline's formats."""

import argparse
import itertools
import json
from unittest import mock

import matplotlib.text
import pandas as pd
import pytest

from snakechat import plots, report


@pytest.fixture
def results(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    meta = {
        "model_config": {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_kv_head": 4, "sequence_len": 256, "vocab_size": 4096},
        "derived": {"params": 3_200_000},
        "tokens": 6_400_000, "flops": 1.2e14, "step": 100, "elapsed_s": 120.0, "world_size": 1, "device": "cpu", "precision": "bf16",
    }
    (base / "meta.json").write_text(json.dumps(meta))
    steps = range(1, 11)
    pd.DataFrame({
        "step": steps, "tokens": [s * 1000 for s in steps], "flops": [s * 1e12 for s in steps],
        "loss": [9 - 0.5 * s for s in steps], "lr_mult": 1.0, "tokens_per_s": 900.0, "mfu": None,
        "elapsed_s": [float(s) for s in steps], "val_bpb": [None] * 4 + [2.5] + [None] * 4 + [2.0],
    }).to_csv(base / "train_log.csv", index=False)
    pd.DataFrame({
        "tokenizer": ["tinyworld-4k", "tinyworld-4k", "gpt2", "gpt2"], "text_kind": ["prose", "code"] * 2,
        "bytes": 100, "tokens": [25, 40, 30, 45], "bytes_per_token": [4.0, 2.5, 3.3, 2.2],
        "tokens_per_byte": [0.25, 0.4, 0.3, 0.45], "status": ["ok", "ok", "ok", "ok"],
    }).to_csv(tmp_path / "tok_eval.csv", index=False)
    pd.DataFrame({
        "label": ["facts", "copy", "CORE"], "type": ["multiple_choice", "language_modeling", ""], "shots": [3, 0, None],
        "n": [100, 100, None], "accuracy": [0.55, 0.2, None], "centered": [0.4, 0.2, 0.3], "seconds": [1.0, 2.0, None],
    }).to_csv(tmp_path / "base_eval.csv", index=False)
    (tmp_path / "base_eval.csv.meta.json").write_text(json.dumps({"core": 0.3, "precision": "fp32"}))
    (tmp_path / "base_loss.json").write_text(json.dumps({
        "precision": "bf16", "train_bpb": 1.9, "val_bpb": 2.0, "unigram_val_bpb": 4.1, "samples": [{"prompt": "The capital of", "completion": " Arlo is Venn"}]}))
    pd.DataFrame({
        "task": ["facts-mc", "GSM8K", "ChatCORE"], "kind": ["mc", "gsm8k", "aggregate"], "protocol": ["world", "nanochat", "nanochat+world"],
        "n": [50, 1319, 1369], "test_items": [100, 1319, 1419],
        "accuracy": [0.6, 0.1, 0.35], "baseline": [0.25, 0.0, 0.125], "centered": [0.47, 0.1, 0.28],
    }).to_csv(tmp_path / "sft.csv", index=False)
    pd.DataFrame({"s": [12.5], "h:m:s": ["0:00:12"]}).to_csv(tmp_path / "bench.tsv", sep="\t", index=False)
    return tmp_path


def test_report_card_has_every_section_and_marks_missing_stages(results):
    out = results / "tiny.md"
    report.main([
        "--model", "tiny", "--tok-eval", str(results / "tok_eval.csv"), "--checkpoint", f"base={results / 'base'}",
        "--base-loss", str(results / "base_loss.json"), "--base-eval", str(results / "base_eval.csv"),
        "--chat-eval", f"sft={results / 'sft.csv'}", "--benchmark", f"base_train={results / 'bench.tsv'}",
        "--gpu-hour-usd", "3.0", "--out", str(out),
    ])
    text = out.read_text()
    for section in ("## Stages", "## Environment", "## Model", "## Time and cost", "## Metrics"):
        assert section in text
    assert "- mid: not run" in text and "- rl: not run" in text and "- base: done" in text
    assert "- base: done: 100 steps, 6.40M tokens, 120 s (in bf16)" in text
    assert "- base_loss: done (in bf16)" in text and "- base_eval: done (in fp32)" in text
    assert "- chat_eval: done\n" in text  # its sidecar is missing: no precision to tell
    assert "| trained on (device × world size, precision) | cpu × 1 in bf16 |" in text
    assert "3.20M" in text  # parameters
    assert "| recipe | nanochat-2025-11 |" in text  # a model_config without a recipe is the 2025 model
    assert "| tokens : params | 2.0 |" in text
    assert "| CORE (2 tasks, 100 items each) | – | 0.3000 |" in text
    assert "| chat: facts-mc (accuracy; world, 50 of 100 items) | – | – | – | 0.6000 | – |" in text
    assert "| chat: GSM8K (accuracy; nanochat, all 1,319 items) | – | – | – | 0.1000 | – |" in text
    assert "| ChatCORE (nanochat+world; 2 tasks, 1,369 of 1,419 items) | – | – | – | 0.2800 | – |" in text
    assert "| val bpb | – | 2.0000 |" in text
    assert "| base_train | 12.5 | CPU | $0.00 |" in text


def test_core_label_counts_tasks_and_items():
    df = pd.DataFrame({"label": ["a", "b", "c", "CORE"], "n": [50, 500, 50, None]})
    assert report.core_label(df) == "CORE (3 tasks, 50–500 items each)"


def test_report_card_rl_held_out_pass_at_k_and_stage_order(results):
    rl = results / "rl"
    rl.mkdir()
    evals = [{"step": 0, "pass_at_1": 0.125, "pass_at_4": 0.25, "n": 40}, {"step": 30, "pass_at_1": 0.375, "pass_at_4": 0.625, "n": 40}]
    (rl / "meta.json").write_text(json.dumps({"step": 30, "tokens": 5000, "elapsed_s": 9.0, "device": "cpu", "world_size": 1,
                                              "train": {"pass_k": 4, "tasks": ["word_problems"]}, "evals": evals}))
    pd.DataFrame({"step": [1, 2], "reward": [0.1, 0.3], "pass_at_k": [0.2, 0.4]}).to_csv(rl / "train_log.csv", index=False)
    benchmarks = [f"{job}={results / 'bench.tsv'}" for job in ("chat_rl", "chat_eval:rl", "chat_sft", "mid_train", "chat_eval:mid", "base_train")]
    out = results / "tiny.md"
    report.main(["--model", "tiny", "--checkpoint", f"base={results / 'base'}", f"rl={rl}", "--benchmark", *benchmarks,
                 "--gpu-hour-usd", "3.0", "--out", str(out)])
    text = out.read_text()
    assert "| RL held-out pass@1 (word_problems, 40 problems) | – | – | – | 0.1250 | 0.3750 |" in text
    assert "| RL held-out pass@4 (word_problems, 40 problems) | – | – | – | 0.2500 | 0.6250 |" in text
    time_rows = [line.split("|")[1].strip() for line in text.split("## Time and cost")[1].split("##")[0].splitlines() if line.startswith("| ")]
    assert time_rows[1:-1] == ["base_train", "mid_train", "chat_sft", "chat_rl", "chat_eval:mid", "chat_eval:rl"]


def test_rl_plot_draws_the_held_out_evaluations(results):
    rl = results / "rl"
    rl.mkdir()
    evals = [{"step": 0, "pass_at_1": 0.125, "pass_at_4": 0.25, "n": 40}, {"step": 30, "pass_at_1": 0.375, "pass_at_4": 0.625, "n": 40}]
    (rl / "meta.json").write_text(json.dumps({"evals": evals}))
    pd.DataFrame({"step": [1, 2], "reward": [0.1, 0.3], "pass_at_k": [0.2, 0.4]}).to_csv(rl / "train_log.csv", index=False)
    fig = plots.plot_rl(argparse.Namespace(logs=[f"rl:tiny={rl / 'train_log.csv'}"]))
    held_out = fig.axes[2]
    drawn = {tuple(zip(*line.get_data())) for line in held_out.get_lines()}
    assert ((0, 0.125), (30, 0.375)) in drawn and ((0, 0.25), (30, 0.625)) in drawn
    labels = [text.get_text() for text in held_out.get_legend().get_texts()]
    assert "held-out pass@1" in labels and "held-out pass@4" in labels
    assert overlapping_texts(fig) == []


def test_report_card_rejects_unknown_stage(results):
    with pytest.raises(SystemExit, match="unknown stage"):
        report.main(["--model", "x", "--checkpoint", f"bsae={results / 'base'}", "--gpu-hour-usd", "1", "--out", str(results / "x.md")])


PLOT_INPUTS = [
    ("training", "--logs", "base:tiny={d}/base/train_log.csv"),
    ("throughput", "--logs", "base:tiny={d}/base/train_log.csv"),
    ("tokenizer", "--tok-eval", "tinyworld-4k={d}/tok_eval.csv"),
    ("core", "--base-eval", "tiny={d}/base_eval.csv"),
    ("chat_eval", "--chat-eval", "sft:tiny={d}/sft.csv"),
    ("time", "--benchmarks", "base_train:tiny={d}/bench.tsv"),
]


@pytest.mark.parametrize("kind, flag, item", PLOT_INPUTS)
def test_plots_write_png(results, kind, flag, item):
    out = results / f"{kind}.png"
    plots.main([kind, flag, item.format(d=results), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(results.glob(f".{kind}.png.*"))  # no temporary left behind


@pytest.mark.parametrize("kind, flag, item", PLOT_INPUTS)
def test_plots_have_no_overlapping_text(results, kind, flag, item):
    draw, dest = plots.PLOTS[kind]
    assert overlapping_texts(draw(argparse.Namespace(**{dest: [item.format(d=results)]}))) == []


def chat_checkpoint(results, stage, start, flops_per_step, val_every):
    """A mid/SFT checkpoint directory continuing from `start`, with a training log."""
    d = results / stage
    d.mkdir()
    steps = range(1, 9)
    (d / "meta.json").write_text(json.dumps({"start": str(start), "step": 8, "flops": 8 * flops_per_step}))
    pd.DataFrame({
        "step": steps, "tokens": [s * 100 for s in steps], "flops": [s * flops_per_step for s in steps], "loss": [3 - 0.1 * s for s in steps],
        "lr_mult": 1.0, "tokens_per_s": 500.0, "mfu": None, "elapsed_s": [float(s) for s in steps],
        "val_bpb": [1.5 - 0.05 * s if s % val_every == 0 else None for s in steps],
    }).to_csv(d / "train_log.csv", index=False)
    return d


@pytest.fixture
def chat_logs(results):
    mid = chat_checkpoint(results, "mid", results / "base", 1e11, 4)
    sft = chat_checkpoint(results, "sft", mid, 1e10, 2)
    return [f"{stage}:tiny={d / 'train_log.csv'}" for stage, d in (("base", results / "base"), ("mid", mid), ("sft", sft))]


def overlapping_texts(fig):
    """Pairs of texts whose boxes intersect, among those a render of the figure really draws
    (tick labels outside the view exist but are not drawn)."""
    drawn = []
    original = matplotlib.text.Text.draw

    def recording_draw(text, renderer):
        original(text, renderer)
        if text.get_visible() and text.get_text().strip():
            drawn.append((text.get_text(), text.get_window_extent(renderer)))

    with mock.patch.object(matplotlib.text.Text, "draw", recording_draw):
        fig.canvas.draw()
    assert drawn
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(drawn, 2) if box_a.overlaps(box_b)]


def test_training_plot_has_no_overlapping_text(chat_logs):
    fig = plots.plot_training(argparse.Namespace(logs=chat_logs))
    assert overlapping_texts(fig) == []
    legend = {t.get_text() for t in fig.findobj(matplotlib.text.Text)}
    assert {"base:tiny: pretraining val shards", "mid:tiny: mid mixture's test conversations", "sft:tiny: SFT mixture's test conversations"} <= legend


def test_chat_stages_continue_from_their_start_on_the_flops_axis(results, chat_logs):
    df = plots.training_logs(chat_logs)
    first, last = df.groupby("stage")["flops"].min(), df.groupby("stage")["flops"].max()
    base_flops = 1.2e14  # the base checkpoint's meta.json
    assert first["mid"] == base_flops + 1e11
    assert first["sft"] == base_flops + 8e11 + 1e10
    assert last["base"] < first["mid"] and last["mid"] < first["sft"]


def test_a_missing_start_checkpoint_is_named(results):
    orphan = chat_checkpoint(results, "sft", results / "nowhere", 1e10, 2)
    with pytest.raises(SystemExit, match="nowhere has no meta.json"):
        plots.training_logs([f"sft:tiny={orphan / 'train_log.csv'}"])


def test_report_card_names_a_2026_recipe_and_counts_its_parameters():
    cfg = {"sequence_len": 64, "vocab_size": 512, "n_layer": 4, "n_head": 2, "n_kv_head": 2, "n_embd": 64,
           "window_pattern": "SSSL", "recipe": "nanochat-2026-07"}
    text = report.model_section({"model_config": cfg})
    assert "| recipe | nanochat-2026-07 (windows SSSL) |" in text
    assert "| parameters | 327.76K |" in text  # 327,762: value embeddings and scalars counted (spec §1.2)
