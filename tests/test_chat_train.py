"""Chat training stages: batches, mid-training, SFT, RL, resume, and what a config change re-runs."""

import torch

from snakechat.train import chat_batches
from snakechat.train.chat_batches import IGNORE


def test_pad_rows_targets_only_assistant_tokens_and_never_padding():
    rows = [
        ([1, 10, 11, 12, 13], [0, 0, 1, 1, 0]),
        ([1, 20, 21], [0, 1, 1]),
    ]
    x, y = chat_batches.pad_rows(rows, pad_id=99)
    assert x.tolist() == [[1, 10, 11, 12], [1, 20, 99, 99]]
    # target t is ids[t+1] when mask[t+1] is 1
    assert y.tolist() == [[IGNORE, 11, 12, IGNORE], [20, 21, IGNORE, IGNORE]]


class FakeTok:
    """Enough of a tokenizer for batching tests: only the padding id is read."""

    bos_id = 0


def fake_render(monkeypatch):
    """render() stand-in: ids [bos, user chars..., reply chars...], mask 1 on the reply."""
    import snakechat.train.chat_batches as cb

    def render(tok, conv, max_tokens):
        user, reply = conv["messages"][0]["content"], conv["messages"][1]["content"]
        ids = [0] + [ord(c) for c in user] + [ord(c) for c in reply]
        mask = [0] * (1 + len(user)) + [1] * len(reply)
        ids, mask = ids[:max_tokens], mask[:max_tokens]
        return (ids, mask) if any(mask[1:]) else None

    monkeypatch.setattr(cb, "render", render)


def conv(user, reply):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def test_conversation_loader_covers_each_conversation_once_per_pass_and_reshuffles(monkeypatch):
    fake_render(monkeypatch)
    convs = [conv("q", chr(100 + i)) for i in range(10)]
    loader = chat_batches.ConversationLoader(FakeTok(), convs, device_batch_rows=3, step_conversations=3, sequence_len=16, seed=5)
    assert loader.steps_per_pass() == 3
    first = [int(v) for _ in range(3) for v in loader.next_batch()[1][:, 1]]
    second = [int(v) for _ in range(3) for v in loader.next_batch()[1][:, 1]]
    assert len(set(first)) == 9 and len(set(second)) == 9 and first != second
    again = chat_batches.ConversationLoader(FakeTok(), convs, device_batch_rows=3, step_conversations=3, sequence_len=16, seed=5)
    again.load_state_dict(loader.state_dict())
    assert torch.equal(again.next_batch()[0], loader.next_batch()[0])  # the position restores exactly


def test_conversation_loader_rows_do_not_depend_on_the_number_of_processes(monkeypatch):
    fake_render(monkeypatch)
    convs = [conv("q" * (i % 4), chr(100 + i)) for i in range(24)]
    one = chat_batches.ConversationLoader(FakeTok(), convs, device_batch_rows=2, step_conversations=8, sequence_len=16, seed=1)
    two = [chat_batches.ConversationLoader(FakeTok(), convs, device_batch_rows=2, step_conversations=8, sequence_len=16, seed=1, rank=r, world_size=2) for r in range(2)]
    for _step in range(4):
        rows_one = sorted(tuple(r[r >= 0].tolist()) for _ in range(4) for r in one.next_batch()[1])
        rows_two = sorted(tuple(r[r >= 0].tolist()) for loader in two for _ in range(2) for r in loader.next_batch()[1])
        assert rows_one == rows_two


def test_conversation_loader_drops_rows_cut_before_the_reply(monkeypatch):
    fake_render(monkeypatch)
    convs = [conv("a long question", "x"), conv("q", "y")]
    loader = chat_batches.ConversationLoader(FakeTok(), convs, device_batch_rows=2, step_conversations=2, sequence_len=6, seed=0)
    x, y = loader.next_batch()
    assert x.shape[0] == 1 and y[y >= 0].tolist() == [ord("y")]


def test_packed_loader_is_contiguous_shifted_and_wraps():
    rendered = [(list(range(i * 10, i * 10 + 7)), [0] * 7) for i in range(5)]  # 35 tokens
    loader = chat_batches.PackedChatLoader(rendered, device_batch_rows=2, sequence_len=4)
    flat = loader.tokens.tolist()
    x, y = loader.next_batch()
    assert x.flatten().tolist() == flat[:8] and y.flatten().tolist() == flat[1:9]
    assert loader.micro_batches_per_pass() == 4
    x4, _ = loader.micro_batch(4)  # past the end: wraps round
    assert x4.flatten().tolist() == [flat[(32 + i) % 35] for i in range(8)]


def test_group_advantages_by_hand():
    from snakechat.train.rl_math import group_advantages

    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    adv = group_advantages(rewards)
    assert adv.tolist() == [[0.5, -0.5, -0.5, 0.5], [-0.25, -0.25, -0.25, 0.75], [0.0, 0.0, 0.0, 0.0]]


def test_pass_at_k_by_hand():
    from snakechat.train.rl_math import pass_at_k

    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert abs(pass_at_k(4, 1, 1) - 0.25) < 1e-12
    assert abs(pass_at_k(4, 1, 2) - 0.5) < 1e-12  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert abs(pass_at_k(5, 2, 3) - 0.9) < 1e-12  # 1 - C(3,3)/C(5,3) = 1 - 1/10


def test_sample_rows_train_only_on_sampled_tokens():
    from snakechat.train.rl_math import sample_rows

    # prompt of 3 tokens; second sample has a forced tool output (mask 0) in the middle
    seqs = [[1, 2, 3, 40, 41], [1, 2, 3, 50, 51, 52, 53]]
    masks = [[0, 0, 0, 1, 1], [0, 0, 0, 1, 0, 0, 1]]
    x, y = sample_rows(seqs, masks, pad_id=0)
    assert x.tolist() == [[1, 2, 3, 40, 0, 0], [1, 2, 3, 50, 51, 52]]
    assert y.tolist() == [[IGNORE, IGNORE, 40, 41, IGNORE, IGNORE], [IGNORE, IGNORE, 50, IGNORE, IGNORE, 53]]


# ---------------------------------------------------------------------------------------------
# The stages, run for a few steps on a small model from the built-in world

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # for the stages and Snakemake run as subprocesses
MIXTURE = {"world_chat": {"weight": 200}, "arithmetic_tool": {"weight": 100}, "identity": {"weight": 60}, "world_mc": {"weight": 100}, "word_problems": {"weight": 100}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Chat data of the built-in world, a tokenizer trained on its corpus and a small base checkpoint."""
    from snakechat.world import chat as world_chat
    from snakechat.world import corpus as world_corpus
    from snakechat.model.checkpoint import save_checkpoint
    from snakechat.model.gpt import GPT, GPTConfig
    from snakechat.model.tokenizer import Tokenizer
    from snakechat.model.sizing import adamw_lr_scale

    root = tmp_path_factory.mktemp("chat_world")
    world_chat.write_chat_data(root / "chat", 0)
    tok = Tokenizer.train(list(world_corpus.corpus_documents(0, 1000)), 512)
    tok.save(root / "tok")
    torch.manual_seed(0)
    model = GPT(GPTConfig(sequence_len=128, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_kv_head=2, n_embd=64))
    scale = adamw_lr_scale(64)
    meta = {"model_config": model.config.to_dict(), "tokenizer": str(root / "tok"), "step": 0,
            "derived": {"matrix_lr": 0.02, "embedding_lr": 0.2 * scale, "unembedding_lr": 0.004 * scale}}
    save_checkpoint(root / "base", model, meta)
    return root


def read_log(checkpoint):
    with open(Path(checkpoint) / "train_log.csv", newline="") as f:
        return list(csv.DictReader(f))


def mean_loss(rows):
    return sum(float(r["loss"]) for r in rows) / len(rows)


def mid_args(world, out, state, steps=16):
    return ["--start", str(world / "base"), "--chat-data", str(world / "chat"), "--out", str(out), "--state", str(state),
            "--mixture", json.dumps(MIXTURE), "--steps", str(steps), "--device-batch-rows", "4", "--step-tokens", "512",
            "--sequence-len", "64", "--eval-every", "8", "--eval-tokens", "2048", "--save-every", "0", "--device", "cpu"]


def sft_args(start, world, out, state, steps=12, lr_mult="1.0"):
    """SFT for `steps` optimizer steps: a horizon (--steps) of one more, as nanochat b399e43 counts it."""
    return ["--start", str(start), "--chat-data", str(world / "chat"), "--out", str(out), "--state", str(state),
            "--mixture", json.dumps(MIXTURE), "--steps", str(steps + 1), "--device-batch-rows", "4", "--step-conversations", "8",
            "--sequence-len", "128", "--lr-mult", lr_mult, "--eval-every", "6", "--eval-conversations", "16", "--save-every", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def mid(world):
    from snakechat import mid_train

    mid_train.main(mid_args(world, world / "mid", world / "state_mid"))
    return world / "mid"


@pytest.fixture(scope="module")
def sft(world, mid):
    from snakechat import chat_sft

    chat_sft.main(sft_args(mid, world, world / "sft", world / "state_sft"))
    return world / "sft"


def check_checkpoint(directory, stage, steps):
    from snakechat.model.checkpoint import load_model

    model, tok, meta = load_model(directory)
    assert meta["stage"] == stage and meta["step"] == steps
    for key in ("model_config", "derived", "train", "tokenizer", "step", "tokens", "flops", "elapsed_s", "world_size", "device", "provenance", "base_lrs"):
        assert key in meta, key
    rows = read_log(directory)
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    return model, tok, meta, rows


def test_mid_training_lowers_the_loss_and_writes_a_checkpoint(world, mid):
    _, _, meta, rows = check_checkpoint(mid, "mid", 16)
    assert mean_loss(rows[-3:]) < mean_loss(rows[:3]) - 0.5
    assert meta["val_bpb"] is not None and rows[7]["val_bpb"] and rows[15]["val_bpb"]
    assert float(rows[15]["val_bpb"]) < float(rows[7]["val_bpb"])
    assert meta["train"]["mixture"] == MIXTURE and meta["start"] == str(world / "base")
    assert not (world / "state_mid").exists()  # a finished run leaves no state behind


def test_sft_lowers_the_assistant_loss_and_writes_a_checkpoint(world, sft):
    _, _, meta, rows = check_checkpoint(sft, "sft", 12)
    assert mean_loss(rows[-3:]) < mean_loss(rows[:3])
    assert float(rows[11]["val_bpb"]) < float(rows[5]["val_bpb"])
    assert meta["base_lrs"]["matrix_lr"] == 0.02  # carried forward from the base checkpoint


def interrupt(module, args, state_dir):
    """Run a training module with `args` in a subprocess and send it a real SIGTERM once it has saved
    its second state in `state_dir`; it must stop as an interrupted run does."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (state_dir / "state_00000002.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out


def test_sft_resumes_after_sigterm_with_the_weights_of_an_uninterrupted_run(world, mid, tmp_path):
    """Interrupt SFT (a real SIGTERM, handled by the shared loop), re-run it, compare with one clean run."""
    from snakechat import chat_sft
    from snakechat.model.checkpoint import load_gpt

    steps = 24  # long enough that the signal lands mid-run on a quiet machine
    chat_sft.main(sft_args(mid, world, tmp_path / "clean", tmp_path / "state_clean", steps=steps))
    args = sft_args(mid, world, tmp_path / "resumed", tmp_path / "state", steps=steps)
    args[args.index("--save-every") + 1] = "1"
    interrupt("snakechat.chat_sft", args, tmp_path / "state")
    assert not (tmp_path / "resumed").exists()
    chat_sft.main(args)
    rows = read_log(tmp_path / "resumed")
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    clean, _ = load_gpt(tmp_path / "clean")
    resumed, meta = load_gpt(tmp_path / "resumed")
    assert meta["resumed_from"]
    for (name, a), b in zip(clean.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_rl_trains_from_sft_and_logs_reward_and_pass_at_k(world, sft):
    from snakechat import chat_rl

    chat_rl.main(["--start", str(sft), "--chat-data", str(world / "chat"), "--out", str(world / "rl"), "--state", str(world / "state_rl"),
                  "--tasks", '["word_problems"]', "--steps", "2", "--step-prompts", "2", "--num-samples", "4", "--device-batch-rows", "8",
                  "--max-new-tokens", "24", "--pass-k", "2", "--eval-prompts", "4", "--save-every", "0", "--device", "cpu"])
    _, _, meta, rows = check_checkpoint(world / "rl", "rl", 2)
    for row in rows:
        assert 0.0 <= float(row["reward"]) <= 1.0 and 0.0 <= float(row["pass_at_k"]) <= 1.0
    assert [e["step"] for e in meta["evals"]] == [0, 2] and meta["evals"][0]["n"] == 4


def rl_args(world, sft, out, state, steps, save_every):
    return ["--start", str(sft), "--chat-data", str(world / "chat"), "--out", str(out), "--state", str(state),
            "--tasks", '["word_problems"]', "--steps", str(steps), "--step-prompts", "2", "--num-samples", "4", "--device-batch-rows", "8",
            "--max-new-tokens", "24", "--pass-k", "2", "--eval-every", "4", "--eval-prompts", "4", "--save-every", str(save_every), "--device", "cpu"]


def test_rl_resumes_after_sigterm_with_the_weights_of_an_uninterrupted_run_bit_for_bit(world, sft, tmp_path):
    """RL's position is its step: a run interrupted by a real SIGTERM and re-run samples the same
    problems with the same seeds and ends with exactly the weights and evaluations of a clean run."""
    from snakechat.model.checkpoint import load_gpt

    steps = 8
    run = lambda args: subprocess.run([sys.executable, "-m", "snakechat.chat_rl", *args], env=ONE_THREAD, capture_output=True, text=True, timeout=300)  # noqa: E731
    clean = run(rl_args(world, sft, tmp_path / "clean", tmp_path / "state_clean", steps, 0))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    args = rl_args(world, sft, tmp_path / "resumed", tmp_path / "state", steps, 1)
    interrupt("snakechat.chat_rl", args, tmp_path / "state")
    resumed = run(args)
    assert resumed.returncode == 0 and "resuming from" in resumed.stdout, resumed.stdout + resumed.stderr
    assert [int(r["step"]) for r in read_log(tmp_path / "resumed")] == list(range(1, steps + 1))
    assert [r["reward"] for r in read_log(tmp_path / "resumed")] == [r["reward"] for r in read_log(tmp_path / "clean")]
    (a, meta_a), (b, meta_b) = load_gpt(tmp_path / "clean"), load_gpt(tmp_path / "resumed")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert meta_b["resumed_from"] and meta_a["evals"] == meta_b["evals"] and [e["step"] for e in meta_a["evals"]] == [0, 4, 8]


def test_one_policy_gradient_step_raises_the_rewarded_sample(world):
    """Two samples of one prompt, one rewarded: a step must make the rewarded one likelier and the other less likely."""
    from snakechat.model.checkpoint import load_gpt
    from snakechat.train.rl_math import group_advantages, policy_gradient_loss, sample_rows
    from snakechat.train.optim import Schedule, build_optimizers

    model, _ = load_gpt(world / "base")
    prompt = [5, 6, 7, 8]
    good, bad = prompt + [20, 21, 22], prompt + [30, 31, 32]
    masks = [[0] * 4 + [1] * 3] * 2
    x, y = sample_rows([good, bad], masks, pad_id=0)

    def logprobs():
        with torch.no_grad():
            return (-model(x, targets=y, loss_reduction="none")).sum(dim=1)

    before = logprobs()
    adv = group_advantages(torch.tensor([[1.0, 0.0]])).flatten()
    opts = build_optimizers(model, Schedule(steps=1, matrix_lr=0.02, embedding_lr=0.05, unembedding_lr=0.01))
    policy_gradient_loss(model, x, y, adv, passes=1).backward()
    for opt in opts:
        opt.step()
    after = logprobs()
    assert after[0] > before[0] and after[1] < before[1]


# ---------------------------------------------------------------------------------------------
# The rules: a changed SFT setting re-runs SFT and what depends on it, nothing upstream


def snakemake(workdir, configfile, *args):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile),
           "--allowed-rules", "mid_train", "chat_sft", "chat_rl", "-c1", *args, "results/rl/tiny"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ONE_THREAD)


def planned_rules(dry_run_output):
    """Rule names of the jobs a dry run lists (the rows of its job-stats table)."""
    rules, table = set(), False
    for line in dry_run_output.splitlines():
        words = line.split()
        if words[:2] == ["job", "count"]:
            table = True
        elif table and len(words) == 2 and words[1].isdigit() and words[0] != "total":
            rules.add(words[0])
        elif table and words and words[0] == "total":
            break
    return rules


@pytest.mark.slow
def test_changing_an_sft_setting_reruns_sft_and_rl_but_not_mid(world, tmp_path):
    import shutil

    import yaml

    work = tmp_path / "work"
    shutil.copytree(world / "base", work / "results/base/tiny")
    shutil.copytree(world / "chat", work / "results/chat_data/tinyworld")
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    tiny = config["models"]["tiny"]
    tiny["chat_data"] = "tinyworld"
    tiny["mid"] = {"mixture": MIXTURE, "steps": 2, "device_batch_rows": 4, "step_tokens": 256, "sequence_len": 64, "eval_every": 0, "eval_tokens": 256}
    tiny["sft"] = {"mixture": MIXTURE, "steps": 2, "device_batch_rows": 4, "step_conversations": 4, "sequence_len": 64, "eval_conversations": 4}
    tiny["rl"] = {"tasks": ["word_problems"], "steps": 1, "step_prompts": 1, "num_samples": 2, "max_new_tokens": 8, "pass_k": 1, "eval_prompts": 1}
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(config))
    run = snakemake(work, first)
    assert run.returncode == 0, run.stderr[-3000:]
    assert all((work / f"results/{stage}/tiny/meta.json").exists() for stage in ("mid", "sft", "rl"))
    again = snakemake(work, first, "-n")
    assert again.returncode == 0 and planned_rules(again.stdout + again.stderr) == set(), again.stdout + again.stderr

    tiny["sft"]["lr_mult"] = 0.5
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(config))
    dry = snakemake(work, second, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert planned_rules(dry.stdout + dry.stderr) == {"chat_sft", "chat_rl"}, dry.stdout + dry.stderr

    tiny["mid"]["enabled"] = False  # SFT now starts from the base checkpoint
    third = tmp_path / "third.yaml"
    third.write_text(yaml.safe_dump(config))
    dry = snakemake(work, third, "-n", "-p")
    assert planned_rules(dry.stdout + dry.stderr) == {"chat_sft", "chat_rl"}, dry.stdout + dry.stderr
    assert "--start results/base/tiny" in dry.stdout + dry.stderr
