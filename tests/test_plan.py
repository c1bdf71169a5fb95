"""The plan's estimate agrees with the known anchor: nanochat's d20 (≈561M params, ≈11B tokens) ≈ 3 h on 8×H100."""

import re
import subprocess
import sys
from pathlib import Path

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
