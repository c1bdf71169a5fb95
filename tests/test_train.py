"""Training machinery: the packing loader, the schedule, resumable state, and real training runs
(interrupted and resumed, 1 process vs 2 gloo processes, base_loss against the unigram baseline)."""

import csv
import json
import os
import signal
import subprocess
import sys
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from snakechat import world_corpus
from snakechat.dataloader import PackedLoader, list_units, pack_rows
from snakechat.tokenizer import Tokenizer
from snakechat.optim import Schedule, lr_multiplier
from snakechat.sizing import grad_accum_steps
from snakechat.train_state import StateError, StateStore

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
    docs = list(world_corpus.corpus_documents(0, 900))
    shards = []
    for i in range(3):
        name = f"shard_{i:05d}.parquet"
        pq.write_table(pa.table({"text": docs[i * 300:(i + 1) * 300]}), root / name, row_group_size=64)
        shards.append({"file": name})
    (root / "manifest.json").write_text(json.dumps({"shards": shards}))
    tok = Tokenizer.train(docs[:600], 512)
    tok.save(root / "tok")
    return root, tok


def shard_list(root, split):
    files = sorted(root.glob("shard_*.parquet"))
    return files[:-1] if split == "train" else files[-1:]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def base_train(tmp, name, extra=(), launcher=(sys.executable,), wait=True):
    corpus_root = tmp["corpus"]
    cmd = [*launcher, "-m", "snakechat.base_train", "--manifest", str(corpus_root / "manifest.json"), "--tokenizer", str(corpus_root / "tok"),
           "--out", str(tmp["runs"] / name / "out"), "--state", str(tmp["runs"] / name / "state"), *TRAIN_ARGS, *extra]
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
    """An uninterrupted single-process run (2 micro-batches per step), shared by several tests."""
    tmp = {"corpus": corpus[0], "runs": tmp_path_factory.mktemp("runs")}
    base_train(tmp, "full")
    return tmp


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
    out = runs["runs"] / "full" / "out"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["step"] == 40 and meta["derived"]["n_embd"] == 64 and meta["derived"]["grad_accum_steps"] == 2
    assert meta["model_config"]["n_layer"] == 2 and meta["tokenizer"].endswith("tok")
    log = read_log(out / "train_log.csv")
    assert [int(r["step"]) for r in log] == list(range(1, 41))
    losses = [float(r["loss"]) for r in log]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:3]) / 3
    assert [r["step"] for r in log if r["val_bpb"]] == ["20", "40"]


def test_sigterm_then_resume_gives_identical_weights_and_refuses_other_settings(runs):
    proc = base_train(runs, "interrupted", wait=False)
    for line in proc.stdout:
        if line.startswith("step") and "/40" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out = proc.stdout.read()
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopping after step" in out
    state_dir = runs["runs"] / "interrupted" / "state"
    assert list(state_dir.glob("state_*.pt")) and not (runs["runs"] / "interrupted" / "out").exists()
    refused = base_train(runs, "interrupted", extra=["--matrix-lr", "0.03"], wait=False)
    out, _ = refused.communicate(timeout=120)
    assert refused.returncode != 0 and "made with other settings" in out and "matrix_lr" in out
    resumed = base_train(runs, "interrupted")
    assert "resuming from" in resumed
    full, again = weights(runs["runs"] / "full"), weights(runs["runs"] / "interrupted")
    assert all(torch.equal(full[k], again[k]) for k in full)
    a = read_log(runs["runs"] / "full" / "out" / "train_log.csv")
    b = read_log(runs["runs"] / "interrupted" / "out" / "train_log.csv")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert not list(state_dir.glob("state_*.pt"))  # cleared once the checkpoint is written


def test_two_gloo_processes_match_one_with_accumulation(runs):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    base_train(runs, "gloo", launcher=torchrun)
    one = read_log(runs["runs"] / "full" / "out" / "train_log.csv")
    two = read_log(runs["runs"] / "gloo" / "out" / "train_log.csv")
    for a, b in zip(one, two):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4, abs=1e-5)
        if a["val_bpb"]:
            assert float(a["val_bpb"]) == pytest.approx(float(b["val_bpb"]), rel=1e-4)
    meta = json.loads((runs["runs"] / "gloo" / "out" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["derived"]["grad_accum_steps"] == 1


def test_base_loss_beats_unigram(runs):
    out = runs["runs"] / "loss.json"
    cmd = [sys.executable, "-m", "snakechat.base_loss", "--checkpoint", str(runs["runs"] / "full" / "out"), "--manifest", str(runs["corpus"] / "manifest.json"),
           "--out", str(out), "--device-batch-rows", "4", "--split-tokens", "2048", "--max-new-tokens", "8", "--prompts", '["The age of", "What is 2"]', "--device", "cpu"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert {"train_bpb", "val_bpb", "unigram_val_bpb", "samples", "provenance"} <= set(result)
    assert result["val_bpb"] < 0.8 * result["unigram_val_bpb"]
    assert [s["prompt"] for s in result["samples"]] == ["The age of", "What is 2"]
    assert all(s["completion"] for s in result["samples"])


@pytest.mark.parametrize("bf16_matmul", [False, True])
def test_muon_on_cpu_orthogonalises_in_float32_unless_bf16_is_native(monkeypatch, bf16_matmul):
    """The step's update is the float32 Newton–Schulz one on a CPU that emulates bf16, torch's bf16 one
    where the CPU multiplies bf16 natively; torch's function is back in place after the step."""
    from snakechat import optim
    from snakechat.optim import Muon, newton_schulz_float32

    monkeypatch.setattr(optim, "cpu_has_bf16_matmul", lambda: bf16_matmul)
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(8, 16))
    weight.grad = torch.randn(8, 16)
    start = weight.detach().clone()
    muon = Muon([weight], lr=0.1, weight_decay=0.0, momentum=0.0, nesterov=False, adjust_lr_fn="original")
    orthogonalise = Muon.torch_newton_schulz if bf16_matmul else newton_schulz_float32
    assert muon.newton_schulz() is orthogonalise
    group = muon.param_groups[0]
    settings = (group["ns_coefficients"], group["ns_steps"], group["eps"])
    expected = orthogonalise(weight.grad, *settings).float()
    other = newton_schulz_float32 if bf16_matmul else Muon.torch_newton_schulz
    assert not torch.allclose(expected, other(weight.grad, *settings).float(), atol=1e-4)
    muon.step()
    assert torch.allclose(start - weight.detach(), 0.1 * expected, atol=1e-6)
    assert torch.optim._muon._zeropower_via_newtonschulz is Muon.torch_newton_schulz
