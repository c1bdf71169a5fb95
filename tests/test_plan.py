"""The plan's estimate agrees with the known anchor: nanochat's d20 (≈561M params, ≈11B tokens) ≈ 3 h on 8×H100."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

from snakechat import configcheck, plan

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
    for stage in ("data", "tok_train", "base_train", "base_loss", "mid", "sft", "rl"):
        assert re.search(rf"^\| {stage} \|", out, re.M), stage
    bad = subprocess.run([sys.executable, "-m", "snakechat.plan", "d99"], capture_output=True, text=True)
    assert bad.returncode != 0 and "model 'd99' is not in the config" in bad.stderr
