"""The nanochat-2026-07 recipe through the real stages: base_train with MuonAdamW and the §4.7
schedules, then SFT warm-started from the base run's optimizer state (no mid), then RL; a base run
interrupted by a real SIGTERM resumes to the same bits, and 2 gloo processes equal 1."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from snakechat.train import schedules2026
from snakechat.train.muon_adamw import MuonAdamW
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)
from world_dataset import write_world_dataset

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
RECIPE = "nanochat-2026-07"
STEPS = 24
# the recipe's base_train values, as the config's gpt2 model sets them (§4.4-4.7)
RECIPE_FLAGS = ["--matrix-lr", "0.02", "--embedding-lr", "0.3", "--unembedding-lr", "0.008", "--weight-decay", "0.28",
                "--warmdown-frac", "0.65", "--final-lr-frac", "0.05", "--grad-clip", "0"]
MIXTURE = {"world_chat": {"weight": 200}, "arithmetic_tool": {"weight": 100}, "world_mc": {"weight": 100}, "word_problems": {"weight": 100}}


def base_args(root, name, save_every=0):
    return ["--manifest", str(root / "manifest.json"), "--tokenizer", str(root / "tok"), "--out", str(root / name), "--state", str(root / f"state_{name}"),
            "--recipe", RECIPE, "--depth", "2", "--aspect-ratio", "32", "--head-dim", "32", "--sequence-len", "64", "--device-batch-rows", "4",
            "--step-tokens", "512", "--steps", str(STEPS), "--eval-every", "12", "--eval-tokens", "1024", "--log-every", "1",
            "--save-every", str(save_every), "--compile", "false", "--device", "cpu", "--precision", "fp32", *RECIPE_FLAGS]


def sft_args(root, start, name, steps=12):
    return ["--start", str(start), "--chat-data", str(root / "chat"), "--out", str(root / name), "--state", str(root / f"state_{name}"),
            "--mixture", json.dumps(MIXTURE), "--steps", str(steps), "--device-batch-rows", "4", "--step-conversations", "8",
            "--sequence-len", "64", "--lr-mult", "0.8", "--eval-every", "6", "--eval-conversations", "16", "--save-every", "0", "--device", "cpu",
            "--precision", "fp32", "--warmdown-frac", "0.5", "--grad-clip", "0"]


def read_log(checkpoint):
    with open(checkpoint / "train_log.csv", newline="") as f:
        return list(csv.DictReader(f))


def mean_loss(rows):
    return sum(float(r["loss"]) for r in rows) / len(rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """World shards + tokenizer, chat data, and one uninterrupted 2026 base run."""
    from snakechat import base_train
    from snakechat.world import chat as world_chat

    root = tmp_path_factory.mktemp("world2026")
    write_world_dataset(root)
    world_chat.write_chat_data(root / "chat", 0)
    base_train.main(base_args(root, "base"))
    return root


def test_base_trains_with_muon_adamw_and_the_2026_schedules(world):
    from snakechat.model.checkpoint import load_model

    model, _, meta = load_model(world / "base")
    assert type(model).__name__ == "GPT2026" and meta["model_config"]["recipe"] == RECIPE
    rows = read_log(world / "base")
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert [float(r["lr_mult"]) for r in rows] == [round(schedules2026.lr_multiplier(s, STEPS), 6) for s in range(STEPS)]
    # the recipe scales the lrs by √(batch / 2^19): 1/32 at 512 tokens a step, inside the 40-step warm-up
    assert mean_loss(rows[-3:]) < mean_loss(rows[:3]) - 0.1
    assert float(rows[-1]["val_bpb"]) < float(rows[11]["val_bpb"])
    assert meta["schedule"]["grad_clip"] == 0.0 and meta["schedule"]["warmup_steps"] == 40
    assert meta["base_lrs"] == {"matrix_lr": 0.02, "embedding_lr": 0.3, "unembedding_lr": 0.008, "scalar_lr": 0.5}
    # the final optimizer state is kept: one MuonAdamW, each AdamW parameter stepped STEPS times,
    # Muon's weight decay at the cosine's last value
    (state,) = torch.load(world / "base" / "optimizer.pt", weights_only=True)
    assert {s["step"] for s in state["state"].values() if "step" in s} == {STEPS}
    muon = [g for g in state["param_groups"] if g["kind"] == "muon"]
    wd0 = meta["derived"]["weight_decay_scaled"]
    assert muon and all(g["weight_decay"] == schedules2026.muon_weight_decay(STEPS - 1, STEPS, wd0) for g in muon)
    assert all(g["momentum"] == schedules2026.muon_momentum(STEPS - 1, STEPS) for g in muon)


def test_base_resumes_after_sigterm_bit_for_bit(world):
    from snakechat import base_train

    args = base_args(world, "resumed", save_every=1)
    state = world / "state_resumed"
    proc = subprocess.Popen([sys.executable, "-m", "snakechat.base_train", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (state / "state_00000003.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    base_train.main(args)
    resumed_from = json.loads((world / "resumed" / "meta.json").read_text())["resumed_from"]
    assert 3 <= int(resumed_from[-11:-3]) < STEPS, resumed_from  # state_{step:08d}.pt
    a, b = (torch.load(world / name / "model.pt", weights_only=True) for name in ("base", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in read_log(world / "base")] == [r["loss"] for r in read_log(world / "resumed")]
    assert (world / "base" / "optimizer.pt").read_bytes() == (world / "resumed" / "optimizer.pt").read_bytes()


def test_two_gloo_processes_equal_one_bit_for_bit(world):
    """DDP averages the gradients, then every rank runs the same MuonAdamW step: 2 processes of one
    micro-batch each give the weights of 1 process accumulating 2 (halving is exact in floats)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run([*torchrun, "-m", "snakechat.base_train", *base_args(world, "gloo")], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = (torch.load(world / name / "model.pt", weights_only=True) for name in ("base", "gloo"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((world / "gloo" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["derived"]["world_size"] == 2 and meta["derived"]["grad_accum_steps"] == 1


def test_warm_start_keeps_the_base_state_and_resets_the_lrs(world):
    """§6.5: moments, buffers, steps and the base run's Muon weight decay carry over; each lr is the
    fresh setup's (unscaled base lrs) × init_lr_frac and becomes initial_lr."""
    from snakechat.model.checkpoint import load_model
    from snakechat.train.optim import build_optimizers

    model, _, meta = load_model(world / "base")
    (saved,) = torch.load(world / "base" / "optimizer.pt", weights_only=True)
    schedule = schedules2026.SFTSchedule2026(steps=10, **meta["base_lrs"])
    (optimizer,) = build_optimizers(model, schedule)
    assert isinstance(optimizer, MuonAdamW)
    fresh = [g["lr"] for g in optimizer.param_groups]
    schedules2026.warm_start(optimizer, saved, 0.8)
    for group, lr, base_group in zip(optimizer.param_groups, fresh, saved["param_groups"]):
        assert group["lr"] == group["initial_lr"] == lr * 0.8
        assert group["weight_decay"] == base_group["weight_decay"]
    head = optimizer.param_groups[0]["params"][0]
    assert optimizer.state[head]["step"] == STEPS
    assert torch.equal(optimizer.state[head]["exp_avg"], saved["state"][0]["exp_avg"])
    assert optimizer.param_groups[0]["lr"] == 0.008 * (64 / 768) ** -0.5 * 0.8  # lm_head: unembedding_lr · dm · 0.8


def test_sft_from_base_then_rl(world):
    from snakechat import chat_rl, chat_sft

    chat_sft.main(sft_args(world, world / "base", "sft"))
    rows = read_log(world / "sft")
    assert mean_loss(rows[-3:]) < mean_loss(rows[:3])
    # progress-based: 1 through half the conversations, then linear to 0 at the end
    assert [float(r["lr_mult"]) for r in rows] == [round(schedules2026.sft_lr_multiplier((s + 1) / 12), 6) for s in range(12)]
    assert float(rows[5]["lr_mult"]) == 1.0 and float(rows[-1]["lr_mult"]) == 0.0
    meta = json.loads((world / "sft" / "meta.json").read_text())
    assert meta["start"] == str(world / "base") and meta["schedule"]["grad_clip"] == 0.0
    assert not (world / "sft" / "optimizer.pt").exists()
    chat_rl.main(["--start", str(world / "sft"), "--chat-data", str(world / "chat"), "--out", str(world / "rl"), "--state", str(world / "state_rl"),
                  "--tasks", '["word_problems"]', "--steps", "2", "--step-prompts", "2", "--num-samples", "4", "--device-batch-rows", "8",
                  "--max-new-tokens", "16", "--pass-k", "2", "--eval-prompts", "4", "--save-every", "0", "--device", "cpu", "--precision", "fp32"])
    rl_rows = read_log(world / "rl")
    assert [int(r["step"]) for r in rl_rows] == [1, 2] and all(0.0 <= float(r["reward"]) <= 1.0 for r in rl_rows)


def test_sft_refuses_a_2026_base_without_optimizer_state(world, tmp_path):
    import shutil

    from snakechat import chat_sft

    start = tmp_path / "base"
    shutil.copytree(world / "base", start)
    (start / "optimizer.pt").unlink()
    with pytest.raises(SystemExit, match="optimizer.pt is missing"):
        chat_sft.main(sft_args(world, start, "refused"))
