"""Training machinery: the packing loader, the schedule, resumable state, and real training runs
(interrupted and resumed in fp32 and in bf16, 1 process vs 2 gloo processes, base_loss against the
unigram baseline, the precision `auto` picks with and without native bf16)."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import warnings

import pytest
import torch

from snakechat.train.dataloader import PackedLoader, list_units, pack_rows
from snakechat.train.optim import Schedule, lr_multiplier
from snakechat.model.sizing import grad_accum_steps
from snakechat.train.train_state import StateError, StateStore
from world_dataset import write_world_dataset

# One thread per process: on a shared 2-core machine, OpenMP threads that wait for each other are
# far slower than one thread, and two training processes run at once in the gloo test.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN_ARGS = [
    "--depth", "2", "--aspect-ratio", "32", "--head-dim", "32", "--sequence-len", "64", "--device-batch-rows", "4",
    "--step-tokens", "512", "--steps", "40", "--eval-every", "20", "--eval-tokens", "1024",
    "--log-every", "1", "--save-every", "15", "--compile", "false", "--device", "cpu",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three shards of built-in world documents (the last one validation) and a 512-id tokenizer."""
    root = tmp_path_factory.mktemp("corpus")
    return root, write_world_dataset(root)


def shard_list(root, split):
    files = sorted(root.glob("shard_*.parquet"))
    return files[:-1] if split == "train" else files[-1:]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def base_train(tmp, name, extra=(), launcher=(sys.executable,), wait=True, precision="fp32"):
    corpus_root = tmp["corpus"]
    cmd = [*launcher, "-m", "snakechat.base_train", "--manifest", str(corpus_root / "manifest.json"), "--tokenizer", str(corpus_root / "tok"),
           "--out", str(tmp["runs"] / name / "out"), "--state", str(tmp["runs"] / name / "state"), *TRAIN_ARGS, "--precision", precision, *extra]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def weights(run_dir):
    return torch.load(run_dir / "out" / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """An uninterrupted single-process fp32 run (2 micro-batches per step), shared by several tests;
    full_run makes the bf16 one when a test first asks for it."""
    tmp = {"corpus": corpus[0], "runs": tmp_path_factory.mktemp("runs")}
    full_run(tmp, "fp32")
    return tmp


def full_run(tmp, precision):
    """The uninterrupted run in `precision` (made once per module)."""
    name = f"full-{precision}"
    if not (tmp["runs"] / name / "out").exists():
        (tmp["runs"] / name / "stdout.txt").write_text(base_train(tmp, name, precision=precision))
    return tmp["runs"] / name


# ---- the loader ----

def test_pack_rows_fills_rows_from_document_starts():
    docs = [[0] + [7] * n for n in (3, 9, 2, 5, 14)]
    rows = pack_rows(docs, 8, bos_id=0)
    assert rows.shape[1] == 8 and (rows[:, 0] == 0).all()
    assert rows.numel() >= 32  # the 14-token document is split, its tail starting a new piece


def test_loader_deterministic_resumable_and_world_size_free(corpus, one_thread):
    root, tok = corpus
    paths = shard_list(root, "train")
    make = lambda **kw: PackedLoader(paths, tok, sequence_len=32, device_batch_rows=2, rows_per_step=8, **kw)
    a, b = make(seed=3), make(seed=3)
    batches = [a.next_batch() for _ in range(12)]
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(batches, (b.next_batch() for _ in range(12))))
    assert all((x[:, 0] == tok.bos_id).all() for x, _ in batches)
    assert all(torch.equal(x[:, 1:], y[:, :-1]) for x, y in batches)
    assert not torch.equal(make(seed=4).next_batch()[0], batches[0][0])
    # exact resume from a saved position
    c = make(seed=3)
    for _ in range(5):
        c.next_batch()
    d = make(seed=3)
    d.load_state_dict(c.state_dict())
    assert all(torch.equal(d.next_batch()[0], x) for x, _ in batches[5:])
    # two ranks' micro-batches are the rows one process sees with gradient accumulation
    ranks = [make(seed=3, rank=r, world_size=2) for r in range(2)]
    for step in range(3):
        single = torch.cat([batches[4 * step + m][0] for m in range(4)])
        both = torch.cat([r.next_batch()[0] for r in ranks for _ in range(2)])
        assert torch.equal(single, both)
    with pytest.raises(ValueError, match="rows_per_step"):
        make(seed=3, world_size=1).load_state_dict({**c.state_dict(), "rows_per_step": 16})


def test_units_split_row_groups_when_lanes_outnumber_them(corpus):
    paths = shard_list(corpus[0], "train")
    assert len(list_units(paths)) == 10  # 2 shards × 5 row groups of ≤ 64 documents
    assert len(list_units(paths, min_units=25)) >= 25


# ---- schedule, batch arithmetic, state store ----

def test_schedule_and_accumulation():
    cfg = Schedule(steps=10, warmup_frac=0.2, warmdown_frac=0.5, final_lr_frac=0.1)
    mults = [lr_multiplier(s, cfg) for s in range(10)]
    assert mults[:2] == [0.5, 1.0] and mults[2:5] == [1.0] * 3
    assert mults[5] == 1.0 and mults[-1] == pytest.approx(0.2 + 0.8 * 0.1)
    assert all(x >= y for x, y in zip(mults[4:], mults[5:]))
    step_tokens, device_batch_rows, sequence_len = 2048, 4, 64
    assert grad_accum_steps(step_tokens, device_batch_rows, sequence_len, 1) == 8 and grad_accum_steps(step_tokens, device_batch_rows, sequence_len, 4) == 2
    with pytest.raises(ValueError, match="multiple"):
        grad_accum_steps(step_tokens, device_batch_rows, sequence_len, 3)


def test_state_store_skips_corrupt_and_refuses_to_restart(tmp_path):
    store = StateStore(tmp_path)
    assert store.load_latest() is None
    for step in (5, 10, 15):
        store.save({"step": step, "model": {"w": torch.ones(2) * step}})
    assert [p.name for p in store.paths()] == ["state_00000010.pt", "state_00000015.pt"]
    newest = store.paths()[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        path, state = store.load_latest()
    assert state["step"] == 10
    store.paths()[0].write_bytes(b"garbage")
    with pytest.raises(StateError, match="refusing to start over"):
        store.load_latest()


# ---- real training runs ----

def test_training_learns_and_writes_checkpoint(runs):
    out = full_run(runs, "fp32") / "out"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["precision"] == "fp32" and meta["train"]["precision"] == "fp32"
    assert meta["step"] == 40 and meta["derived"]["n_embd"] == 64 and meta["derived"]["grad_accum_steps"] == 2
    assert meta["model_config"]["n_layer"] == 2 and meta["tokenizer"] == "tokenizer" and meta["tokenizer_source"].endswith("tok")
    log = read_log(out / "train_log.csv")
    assert [int(r["step"]) for r in log] == list(range(1, 41))
    losses = [float(r["loss"]) for r in log]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:3]) / 3
    assert [r["step"] for r in log if r["val_bpb"]] == ["20", "40"]
    lines = [line for line in (out.parent / "stdout.txt").read_text().splitlines() if line.startswith("step ")]
    etas = [re.search(r"\| \d+s elapsed \| ETA (\S+)$", line)[1] for line in lines]  # the progress line, for a watched log
    assert len(etas) == 40 and etas[-1] == "0s" and all(re.fullmatch(r"(\d+m)?\d+s", eta) for eta in etas), lines


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sigterm_then_resume_gives_identical_weights_and_refuses_other_settings(runs, precision):
    """Bitwise resume within one precision (bf16 included: emulated, slowly, on a CPU without it);
    a state is not resumed in the other precision."""
    full = full_run(runs, precision)
    name = f"interrupted-{precision}"
    proc = base_train(runs, name, wait=False, precision=precision)
    for line in proc.stdout:
        if line.startswith("step") and "/40" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out = proc.stdout.read()
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopping after step" in out
    state_dir = runs["runs"] / name / "state"
    assert list(state_dir.glob("state_*.pt")) and not (runs["runs"] / name / "out").exists()
    other = "bf16" if precision == "fp32" else "fp32"
    for extra, named in ((["--matrix-lr", "0.03"], "matrix_lr"), (["--precision", other], "precision"), (["--recipe", "nanochat-2026-07"], "nanochat-2026-07")):
        refused = base_train(runs, name, extra=extra, wait=False, precision=precision)
        out, _ = refused.communicate(timeout=120)
        assert refused.returncode != 0 and "made with other settings" in out and named in out, out
    resumed = base_train(runs, name, precision=precision)
    assert "resuming from" in resumed
    expected, again = weights(full), weights(runs["runs"] / name)
    assert all(torch.equal(expected[k], again[k]) for k in expected)
    assert all(v.dtype == torch.float32 for v in again.values())  # float32 master weights in bf16 too
    a = read_log(full / "out" / "train_log.csv")
    b = read_log(runs["runs"] / name / "out" / "train_log.csv")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert json.loads((runs["runs"] / name / "out" / "meta.json").read_text())["precision"] == precision
    assert not list(state_dir.glob("state_*.pt"))  # cleared once the checkpoint is written


def test_two_gloo_processes_match_one_with_accumulation(runs):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    base_train(runs, "gloo", launcher=torchrun)
    one = read_log(full_run(runs, "fp32") / "out" / "train_log.csv")
    two = read_log(runs["runs"] / "gloo" / "out" / "train_log.csv")
    for a, b in zip(one, two):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4, abs=1e-5)
        if a["val_bpb"]:
            assert float(a["val_bpb"]) == pytest.approx(float(b["val_bpb"]), rel=1e-4)
    meta = json.loads((runs["runs"] / "gloo" / "out" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["derived"]["grad_accum_steps"] == 1


def test_base_loss_beats_unigram(runs):
    out = runs["runs"] / "loss.json"
    cmd = [sys.executable, "-m", "snakechat.base_loss", "--checkpoint", str(full_run(runs, "fp32") / "out"), "--manifest", str(runs["corpus"] / "manifest.json"),
           "--out", str(out), "--device-batch-rows", "4", "--split-tokens", "2048", "--max-new-tokens", "8", "--prompts", '["The age of", "What is 2"]', "--device", "cpu"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert {"train_bpb", "val_bpb", "unigram_val_bpb", "samples", "provenance"} <= set(result)
    assert result["val_bpb"] < 0.8 * result["unigram_val_bpb"]
    assert [s["prompt"] for s in result["samples"]] == ["The age of", "What is 2"]
    assert all(s["completion"] for s in result["samples"])


def test_a_2026_recipe_trains_records_its_recipe_and_loads_in_later_stages(runs):
    """base_train --recipe nanochat-2026-07 builds the 2026 model, meta.json's model_config names it,
    and base_loss (checkpoint loading, bits per byte, engine samples) rebuilds it from there."""
    name = "recipe-2026"
    base_train(runs, name, extra=["--recipe", "nanochat-2026-07", "--steps", "12", "--eval-every", "0", "--save-every", "0"])
    out = runs["runs"] / name / "out"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model_config"]["recipe"] == "nanochat-2026-07" and meta["model_config"]["window_pattern"] == "SSSL"
    assert "value_embeds.1.weight" in weights(runs["runs"] / name) and "blocks.1.attn.ve_gate.weight" in weights(runs["runs"] / name)
    losses = [float(r["loss"]) for r in read_log(out / "train_log.csv")]
    assert losses[-1] < losses[0]
    full_meta = json.loads((full_run(runs, "fp32") / "out" / "meta.json").read_text())
    assert "recipe" not in full_meta["model_config"]  # the default recipe's meta.json is as it was
    loss_json = runs["runs"] / "loss-2026.json"
    cmd = [sys.executable, "-m", "snakechat.base_loss", "--checkpoint", str(out), "--manifest", str(runs["corpus"] / "manifest.json"),
           "--out", str(loss_json), "--device-batch-rows", "4", "--split-tokens", "512", "--max-new-tokens", "4", "--prompts", '["The age of"]', "--device", "cpu"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(loss_json.read_text())["samples"][0]["completion"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_muon_orthogonalises_in_the_runs_precision(precision):
    """The step's update is torch's bf16 Newton–Schulz one under bf16 and the float32 one under fp32;
    torch's function is back in place after the step."""
    from snakechat.train.optim import Muon, newton_schulz_float32

    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(8, 16))
    weight.grad = torch.randn(8, 16)
    start = weight.detach().clone()
    muon = Muon([weight], precision, lr=0.1, weight_decay=0.0, momentum=0.0, nesterov=False, adjust_lr_fn="original")
    orthogonalise = Muon.torch_newton_schulz if precision == "bf16" else newton_schulz_float32
    assert muon.newton_schulz() is orthogonalise
    group = muon.param_groups[0]
    settings = (group["ns_coefficients"], group["ns_steps"], group["eps"])
    expected = orthogonalise(weight.grad, *settings).float()
    other = newton_schulz_float32 if precision == "bf16" else Muon.torch_newton_schulz
    assert not torch.allclose(expected, other(weight.grad, *settings).float(), atol=1e-4)
    muon.step()
    assert torch.allclose(start - weight.detach(), 0.1 * expected, atol=1e-6)
    assert torch.optim._muon._zeropower_via_newtonschulz is Muon.torch_newton_schulz


@pytest.mark.parametrize("native", [False, True])
def test_auto_precision_follows_the_cpus_bf16_support(corpus, tmp_path, monkeypatch, one_thread, native):
    """--precision auto trains in fp32 (Muon included) on a CPU that would emulate bf16, and in bf16
    where it multiplies bf16 natively: detection is faked both ways, so both paths run on any CPU."""
    from snakechat import base_train
    from snakechat.train import optim
    from snakechat.model import precision

    monkeypatch.setattr(precision, "cpu_has_bf16_matmul", lambda: native)
    float32_steps = []
    real = optim.newton_schulz_float32
    monkeypatch.setattr(optim, "newton_schulz_float32", lambda *a: float32_steps.append(1) or real(*a))
    root = corpus[0]
    args = [a for a in TRAIN_ARGS]
    args[args.index("--steps") + 1], args[args.index("--eval-every") + 1] = "2", "0"
    base_train.main(["--manifest", str(root / "manifest.json"), "--tokenizer", str(root / "tok"), "--out", str(tmp_path / "out"),
                     "--state", str(tmp_path / "state"), *args, "--precision", "auto"])
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["precision"] == ("bf16" if native else "fp32") and meta["train"]["precision"] == "auto"
    assert bool(float32_steps) != native
