"""What a stage loads is verified: checkpoint weights against the sha256 in their meta.json, meta.json
against its own checksum, the tokenizer against the hash recorded with the weights,
resumable states against the sha256 written beside them. One flipped byte is enough to be caught
(torch.load alone reads such files without complaint), and a corrupt newest state falls back to
the previous verified one. Checkpoint directories get the user's umask, like every output."""

import json
import os
import stat
import warnings

import pytest
import torch

from snakechat.model.checkpoint import CheckpointError, load_gpt, load_model, save_checkpoint, sealed
from snakechat.model.gpt import GPT, GPTConfig
from snakechat.train.optim import Schedule
from snakechat.train.train_state import StateStore
from snakechat.train.trainer import Run, RunSettings, TokenRecipe, Trainer

CONFIG = GPTConfig(sequence_len=16, vocab_size=64, n_layer=1, n_head=2, n_kv_head=2, n_embd=32)


def flip_a_weight_byte(path):
    """Flip one byte inside the data of the largest tensor a torch.save file holds; return what
    torch.load alone then reads (it does not notice)."""
    data = bytearray(path.read_bytes())
    state = torch.load(path, weights_only=True)
    tensors = state["model"] if "model" in state else state
    name, tensor = max(tensors.items(), key=lambda kv: kv[1].numel())
    at = bytes(data).find(tensor.contiguous().numpy().tobytes()[:64])
    assert at > 0, "tensor bytes not found in the file"
    data[at + 17] ^= 0x40
    path.write_bytes(bytes(data))
    reread = torch.load(path, weights_only=True)
    return name, (reread["model"] if "model" in reread else reread)[name]


def test_a_flipped_byte_in_checkpoint_weights_is_refused_naming_the_file(tmp_path):
    torch.manual_seed(0)
    model = GPT(CONFIG)
    (tmp_path / "log.csv").write_text("step\n1\n")
    save_checkpoint(tmp_path / "ckpt", model, {"model_config": CONFIG.to_dict()}, extra_files={"train_log.csv": tmp_path / "log.csv"})
    meta = json.loads((tmp_path / "ckpt/meta.json").read_text())
    assert set(meta["sha256"]) == {"model.pt", "train_log.csv"}
    loaded, _ = load_gpt(tmp_path / "ckpt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))

    name, silently_read = flip_a_weight_byte(tmp_path / "ckpt/model.pt")
    assert not torch.equal(silently_read, model.state_dict()[name])  # torch.load took the corrupt weights as they are
    with pytest.raises(CheckpointError, match="corrupt or was changed") as err:
        load_gpt(tmp_path / "ckpt")
    assert str(tmp_path / "ckpt/model.pt") in str(err.value)

    del meta["sha256"]
    (tmp_path / "ckpt/meta.json").write_text(json.dumps(sealed(meta)))
    with pytest.raises(CheckpointError, match="records no sha256") as err:
        load_gpt(tmp_path / "ckpt")
    assert str(tmp_path / "ckpt/model.pt") in str(err.value) and str(tmp_path / "ckpt/meta.json") in str(err.value)


def test_an_edited_meta_json_or_tokenizer_is_refused_naming_the_file(tmp_path):
    from snakechat.model.tokenizer import Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer.train([f"word{i} and more words {i * 7}" for i in range(300)], vocab_size=300)
    tok.save(tmp_path / "tok")
    config = GPTConfig(sequence_len=16, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=2, n_embd=32)
    save_checkpoint(tmp_path / "ckpt", GPT(config), {"model_config": config.to_dict(), "tokenizer": str(tmp_path / "tok"), "step": 5})
    meta_path = tmp_path / "ckpt/meta.json"
    load_model(tmp_path / "ckpt")
    good = meta_path.read_text()

    meta_path.write_text(good.replace('"step": 5', '"step": 6'))  # still valid JSON
    with pytest.raises(CheckpointError, match=f"{meta_path} was changed after it was written"):
        load_gpt(tmp_path / "ckpt")
    meta = json.loads(good)
    del meta["meta_sha256"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"{meta_path} has no meta_sha256"):
        load_gpt(tmp_path / "ckpt")
    del meta["model_config"]
    meta_path.write_text(json.dumps(sealed(meta)))
    with pytest.raises(CheckpointError, match=f"{meta_path} has no model_config"):
        load_gpt(tmp_path / "ckpt")
    meta_path.write_bytes(good.encode().replace(b'"step"', b'"st\xffep"'))
    with pytest.raises(CheckpointError, match=f"{meta_path} is not UTF-8"):
        load_gpt(tmp_path / "ckpt")
    meta_path.write_text(good)

    other = Tokenizer.train([f"other text {i}" for i in range(300)], vocab_size=300)
    other.save(tmp_path / "tok")  # the workflow's tokenizer retrained in place
    _, loaded, _ = load_model(tmp_path / "ckpt")  # the checkpoint tokenizes with its own copy, the one it was trained with
    assert loaded.encode("word7 and more words") == tok.encode("word7 and more words") != other.encode("word7 and more words")
    other.save(tmp_path / "ckpt" / "tokenizer")  # the copy itself replaced
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'ckpt' / 'tokenizer' / 'token_bytes.json'} is corrupt or was changed|tokenizer.json is corrupt or was changed"):
        load_model(tmp_path / "ckpt")


def test_a_flipped_byte_in_the_newest_state_falls_back_to_the_previous_one(tmp_path):
    store = StateStore(tmp_path)
    for step in (5, 10):
        torch.manual_seed(step)
        store.save({"step": step, "model": GPT(CONFIG).state_dict()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state_00000005.pt", "state_00000005.pt.sha256", "state_00000010.pt", "state_00000010.pt.sha256"]
    newest = store.paths()[-1]
    flip_a_weight_byte(newest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path, state = store.load_latest()
    assert state["step"] == 5 and path.name == "state_00000005.pt"
    assert any(str(newest) in str(w.message) and "sha256" in str(w.message) for w in caught)

    store.paths()[0].with_name("state_00000005.pt.sha256").unlink()  # a state whose sha256 was never written
    with warnings.catch_warnings(record=True) as caught, pytest.raises(Exception, match="refusing to start over"):
        warnings.simplefilter("always")
        store.load_latest()
    assert any("state_00000005.pt" in str(w.message) and "missing" in str(w.message) for w in caught)


class RandomTokens:
    """A loader whose micro-batch k is a pure function of k (its position is one number)."""

    def __init__(self):
        self.k = 0

    def next_batch(self):
        g = torch.Generator().manual_seed(self.k)
        self.k += 1
        tokens = torch.randint(0, CONFIG.vocab_size, (2, CONFIG.sequence_len + 1), generator=g)
        return tokens[:, :-1], tokens[:, 1:]

    def state_dict(self):
        return {"k": self.k}

    def load_state_dict(self, state):
        self.k = state["k"]


class Killed(Exception):
    pass


class DiesAtStep(TokenRecipe):
    """The recipe of a process killed while planning step `at` (states up to step `at` are on disk)."""

    def __init__(self, at):
        super().__init__(RandomTokens(), micro_steps=2, step_tokens=64, flops_per_token=1)
        self.at = at

    def step(self, step):
        if step == self.at:
            raise Killed
        return super().step(step)


def train(tmp_path, name, recipe):
    torch.manual_seed(0)
    model = GPT(CONFIG)
    run = Run("test", "snakechat.train.trainer", RunSettings(out=str(tmp_path / name / "out"), state=str(tmp_path / name / "state")), inputs=[])
    Trainer(model, recipe, Schedule(steps=6, save_every=1, seed=0), run, "cpu").train()
    return load_gpt(tmp_path / name / "out")


def test_training_resumes_from_the_previous_state_when_the_newest_is_corrupt(tmp_path):
    clean, _ = train(tmp_path, "clean", TokenRecipe(RandomTokens(), micro_steps=2, step_tokens=64, flops_per_token=1))
    with pytest.raises(Killed):
        train(tmp_path, "resumed", DiesAtStep(4))
    state_dir = tmp_path / "resumed" / "state"
    assert [p.name for p in StateStore(state_dir).paths()] == ["state_00000003.pt", "state_00000004.pt"]
    flip_a_weight_byte(state_dir / "state_00000004.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed, meta = train(tmp_path, "resumed", TokenRecipe(RandomTokens(), micro_steps=2, step_tokens=64, flops_per_token=1))
    assert any("state_00000004.pt" in str(w.message) for w in caught)
    assert meta["resumed_from"].endswith("state_00000003.pt") and meta["step"] == 6
    assert all(torch.equal(a, b) for a, b in zip(clean.state_dict().values(), resumed.state_dict().values()))
    assert not state_dir.exists()


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_checkpoint_directories_follow_the_umask(tmp_path, mask):
    before = os.umask(mask)
    try:
        save_checkpoint(tmp_path / "ckpt", GPT(CONFIG), {"model_config": CONFIG.to_dict()})
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o777 & ~mask
    for f in ("model.pt", "meta.json"):
        assert stat.S_IMODE((tmp_path / "ckpt" / f).stat().st_mode) == 0o666 & ~mask


def test_a_failed_training_job_keeps_the_previous_checkpoint(tmp_path):
    """Snakemake deletes a rule's outputs before it runs the job; a training job that then fails
    (its resume refused, its inputs unreadable) must not cost the checkpoint that was there."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    (work / "config/config.yaml").write_text((root / "config/config.yaml").read_text())
    # a manifest the dry run's check passes (no shard to stat) but base_train cannot train from
    for path, text in [("results/data/tinyworld/manifest.json", '{"shards": [], "splits": {"train": [], "val": []}}'), ("results/tokenizer/tinyworld-4k/tokenizer.json", "{}"),
                       ("results/tokenizer/tinyworld-4k/token_bytes.json", "[]"), ("results/base/tiny/model.pt", "the previous weights"),
                       ("results/base/tiny/meta.json", "{}")]:
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "-d", str(work), "-c1",
                          "results/base/tiny", "--forcerun", "base_train", "--allowed-rules", "base_train"],
                         capture_output=True, text=True, env=env)
    assert run.returncode != 0
    assert "not a dataset manifest" in (work / "logs/base_train/tiny.log").read_text()  # the job ran, and failed
    assert (work / "results/base/tiny/model.pt").read_text() == "the previous weights", run.stderr[-2000:]
