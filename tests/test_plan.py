"""The plan's estimate agrees with the known anchor: nanochat's d20 (≈561M params, ≈11B tokens) ≈ 3 h on 8×H100."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snakechat import plan
from snakechat.pipeline import configcheck

ROOT = Path(__file__).resolve().parents[1]


def validated():
    return configcheck.validate(yaml.safe_load((ROOT / "config/config.yaml").read_text()), ROOT / "workflow/schemas/config.schema.yaml")


def test_d20_base_training_matches_the_speedrun_anchor():
    cfg = validated()
    cfg["plan"].update(gpu_peak_flops=989e12, gpus=8, mfu=0.48)
    p = plan.stage_rows("d20", cfg)
    assert abs(p["params"] - 561e6) / 561e6 < 0.01
    base = next(r for r in p["rows"] if r["stage"] == "base_train")
    assert 10.5e9 < base["tokens"] < 11.5e9
    assert 2.5 < base["hours"] < 3.5


def test_cost_scales_with_price_and_mfu():
    cfg = validated()
    first = next(r for r in plan.stage_rows("d20", cfg)["rows"] if r["stage"] == "base_train")
    cfg["plan"]["mfu"] /= 2
    cfg["plan"]["usd_per_gpu_hour"] *= 3
    second = next(r for r in plan.stage_rows("d20", cfg)["rows"] if r["stage"] == "base_train")
    assert abs(second["hours"] / first["hours"] - 2) < 1e-9
    assert abs(second["usd"] / first["usd"] - 6) < 1e-9


def test_cli_prints_every_stage_and_rejects_unknown_model():
    out = subprocess.run([sys.executable, "-m", "snakechat.plan", "tiny"], capture_output=True, text=True, check=True).stdout
    for stage in ("data", "tok_train", "base_train", "base_loss", "base_eval", "mid", "sft", "rl", "chat_eval"):
        assert re.search(rf"^\| {stage} \|", out, re.M), stage
    bad = subprocess.run([sys.executable, "-m", "snakechat.plan", "d99"], capture_output=True, text=True)
    assert bad.returncode != 0 and "model 'd99' is not in the config" in bad.stderr


def row(p, stage):
    return next(r for r in p["rows"] if r["stage"] == stage)


def test_base_loss_and_base_eval_rows_follow_their_settings():
    cfg = validated()
    d20 = cfg["models"]["d20"]
    d20["base_loss"].update(split_tokens=1_000_000, prompts=[], device_batch_rows=32)
    d20["base"]["eval_tokens"] = 123  # the training's validation is not base_loss's
    p = plan.stage_rows("d20", cfg)
    per_pass = 32 * cfg["plan"]["gpus"] * 2048  # rows of one pass × sequence length
    loss = row(p, "base_loss")
    assert loss["tokens"] == 2 * (1_000_000 // per_pass) * per_pass  # train and val, whole passes
    assert loss["flops"] == loss["tokens"] * p["flops_per_token"] / 3  # forward only

    core = row(p, "base_eval")  # max_per_task 0: every item of the 22-task bundle
    assert core["tokens"] == 91_037 * cfg["plan"]["core_tokens_per_item"]
    assert core["flops"] == core["tokens"] * p["flops_per_token"] / 3 and core["hours"] > 0
    assert "22 tasks, 91,037 items (all)" in core["note"]
    d20["base_eval"]["max_per_task"] = 50
    assert row(plan.stage_rows("d20", cfg), "base_eval")["tokens"] == 22 * 50 * cfg["plan"]["core_tokens_per_item"]
    del cfg["plan"]["bundle_items"]["core"]
    assert "not priced" in row(plan.stage_rows("d20", cfg), "base_eval")["note"]


def test_chat_eval_prices_every_stage_and_scored_task():
    cfg = validated()
    cfg["models"]["d20"]["chat_eval"].update(max_per_task=100, num_samples=2, max_new_tokens=512)
    chat = row(plan.stage_rows("d20", cfg), "chat_eval")
    prompt = cfg["plan"]["conversation_tokens"]
    mc, generative = ["arc_challenge", "arc_easy", "mmlu"], ["gsm8k", "humaneval", "spelling"]
    assert chat["tokens"] == 4 * (len(mc) * 100 * prompt + len(generative) * 100 * 2 * (prompt + 512))
    assert "4 stages (base, mid, sft, rl)" in chat["note"]
    cfg["models"]["d20"]["mid"]["enabled"] = False
    assert row(plan.stage_rows("d20", cfg), "chat_eval")["tokens"] == chat["tokens"] * 3 // 4


def test_the_d20_total_includes_evaluation():
    p = plan.stage_rows("d20", validated())
    priced = {r["stage"] for r in p["rows"] if r.get("flops")}
    assert {"base_train", "base_loss", "base_eval", "mid", "sft", "chat_eval"} <= priced
    text = plan.render(p)
    total = float(re.search(r"\*\*Total: ([0-9.]+) h", text).group(1))
    assert total > row(p, "base_train")["hours"] + row(p, "base_eval")["hours"]


def test_a_2026_recipe_is_priced_with_its_windowed_flops():
    cfg = validated()
    old = next(r for r in plan.stage_rows("d20", cfg)["rows"] if r["stage"] == "base_train")
    cfg["models"]["d20"]["recipe"] = "nanochat-2026-07"
    new = plan.stage_rows("d20", cfg)
    base = next(r for r in new["rows"] if r["stage"] == "base_train")
    assert new["params"] > 561e6 * 1.5  # ten value-embedding tables of 65536 × 1280
    assert base["flops"] != old["flops"]


def test_gpt2_is_priced_by_the_2026_sizing():
    """gpt2 (recipe nanochat-2026-07, d24, ratio 8): the spec's speedrun row (§4.8) - 5,568 steps of 2^20
    tokens, 5,838,471,168 tokens at 4,775,225,616 window-aware FLOPs per token - and the 1,384,122,122
    parameters of the 2026 model (value embeddings included); d20 keeps the 2025 sizing."""
    cfg = validated()
    p = plan.stage_rows("gpt2", cfg)
    assert (p["params"], p["flops_per_token"]) == (1_384_122_122, 4_775_225_616)
    base = row(p, "base_train")
    assert base["tokens"] == 5_838_471_168 == 5568 * 2**20
    validation = 23 * 41_943_040  # evaluations at steps 250, 500, ..., 5500 and the last; 80 × 2^19 tokens each
    assert base["flops"] == 4_775_225_616 * (5_838_471_168 + validation / 3)
    assert "5,568 steps × 1,048,576 tokens (D^0.383 law); 8.0 tokens/scaling param" in base["note"]
    assert row(p, "mid")["note"] == "skipped (mid.enabled: false)"
    d20 = row(plan.stage_rows("d20", cfg), "base_train")
    assert d20["tokens"] == 21_400 * 2**19 and "21,400 steps; 20.0 tokens/param" in d20["note"]
    # an explicit step size overrides the law, as --total-batch-size does
    cfg["models"]["gpt2"]["base"]["step_tokens"] = 2**19
    assert "11,136 steps × 524,288 tokens;" in row(plan.stage_rows("gpt2", cfg), "base_train")["note"]


def test_cli_prices_gpt2_and_d20_keeps_its_figures():
    out = subprocess.run([sys.executable, "-m", "snakechat.plan", "gpt2"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^\| base_train \| 5\.84G \| 2\.94e\+19 \| 8 \| 2\.29 h \| \$55\.08 \|", out, re.M), out
    d20 = plan.render(plan.stage_rows("d20", validated()))
    assert re.search(r"^\| base_train \| 11\.22G \| 4\.02e\+19 \| 8 \| 3\.14 h \| \$75\.32 \|", d20, re.M), d20


def test_a_config_file_that_is_not_plain_yaml_is_named(tmp_path):
    bad = tmp_path / "my.yaml"
    bad.write_bytes((Path(plan.ROOT) / "config/config.yaml").read_bytes() + b"\nplan: {gpu_hour_usd: 2\xff}\n")
    with pytest.raises(configcheck.ConfigError, match=f"invalid config {bad}:\\d+: not UTF-8 text"):
        plan.main(["tiny", "--config", str(bad), "--overlay", str(tmp_path / "none.yaml")])


def test_a_sweep_is_priced_run_by_run():
    cfg = validated()
    p = plan.sweep_plan("scaling", "d-scaling", cfg)
    assert [r["run"] for r in p["rows"]][:2] == ["d-scaling-1e18-d6", "d-scaling-1e18-d8"]
    for r in p["rows"]:
        alone = row(plan.stage_rows(r["run"], cfg), "base_train")
        assert r["hours"] == alone["hours"] and r["usd"] == alone["usd"]
        # the budget, plus the validation forwards the plan adds (a third of a training token's FLOPs each)
        assert r["budget"] <= r["flops"] < 1.05 * r["budget"]
    series = plan.sweep_plan("series", "d-series", cfg)
    d20 = plan.stage_rows("d20", cfg)
    assert series["rows"][-1]["hours"] == row(d20, "base_train")["hours"] + row(d20, "base_eval")["hours"]
    text = plan.render_sweep(p)
    total = sum(r["usd"] for r in p["rows"])
    assert f"${total:,.2f}" in text and text.count("| d-scaling-") == 16
