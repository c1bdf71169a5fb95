"""A checkpoint directory carries its tokenizer (issue 32): copied or moved anywhere, it loads from
any working directory with every file's checksum verified. Checkpoints written before, whose
meta.json names the tokenizer relative to where the workflow ran, load where that is found and are
refused, saying why, where it is not."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snakechat.model.checkpoint import CheckpointError, load_model, save_checkpoint
from tiny_chat_model import random_gpt, tokenizer, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def chat_cli(cwd, *args):
    """One greedy reply of the chat CLI run in `cwd`: (exit status, stdout, stderr)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}"}
    cmd = [sys.executable, "-m", "snakechat.chat_cli", *args, "-p", "how are you today?", "--temperature", "0", "--max-tokens", "12", "--device", "cpu"]
    run = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return run.returncode, run.stdout, run.stderr


def test_a_checkpoint_copied_elsewhere_answers_alike_from_a_third_directory(tmp_path):
    run_dir = tmp_path / "run"
    write_checkpoint(run_dir / "results/sft/m", run_dir / "results/tokenizer/t")
    rc, before, err = chat_cli(run_dir, "--model", "m", "--stage", "sft")
    assert rc == 0 and before.strip(), err
    shutil.copytree(run_dir / "results/sft/m", tmp_path / "elsewhere/results/sft/m")
    shutil.rmtree(run_dir)  # the workflow's tokenizer directory is gone with it
    (tmp_path / "third").mkdir()
    rc, after, err = chat_cli(tmp_path / "third", "--results", "../elsewhere/results", "--model", "m", "--stage", "sft")
    assert rc == 0, err
    assert after == before


def test_the_tokenizer_copy_is_checked_like_the_weights(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", tmp_path / "tok")
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["tokenizer"] == "tokenizer" and meta["tokenizer_source"] == str(tmp_path / "tok")
    assert {"tokenizer/tokenizer.json", "tokenizer/token_bytes.json"} <= set(meta["sha256"])
    shutil.rmtree(tmp_path / "tok")
    _, tok, loaded_meta = load_model(ckpt)
    assert Path(loaded_meta["tokenizer"]) == ckpt / "tokenizer" and tok.vocab_size == tokenizer().vocab_size
    token_bytes = ckpt / "tokenizer/token_bytes.json"
    token_bytes.write_text(token_bytes.read_text().replace("1", "2", 1))
    with pytest.raises(CheckpointError, match="tokenizer/token_bytes.json is corrupt or was changed"):
        load_model(ckpt)


def old_style_checkpoint(root):
    """A checkpoint as written before checkpoints carried their tokenizer: meta.json names
    results/tokenizer/t relative to `root`, where the workflow ran, and nothing is copied."""
    tok = tokenizer()
    tok.save(root / "results/tokenizer/t")
    model = random_gpt(tok.vocab_size)
    ckpt = root / "results/sft/m"
    save_checkpoint(ckpt, model, {"model_config": model.config.to_dict(), "step": 0})
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps({**meta, "tokenizer": "results/tokenizer/t"}))
    return ckpt


def test_an_old_checkpoint_loads_where_its_tokenizer_is_found_and_is_refused_elsewhere(tmp_path, monkeypatch):
    ckpt = old_style_checkpoint(tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    assert Path(load_model("results/sft/m")[2]["tokenizer"]) == Path("results/tokenizer/t")
    monkeypatch.chdir(tmp_path)  # another directory, the results tree intact: found above the checkpoint
    assert load_model(ckpt)[2]["tokenizer"] == str((tmp_path / "run/results/tokenizer/t").resolve())
    shutil.copytree(ckpt, tmp_path / "moved")
    with pytest.raises(CheckpointError, match="written before checkpoints carried their tokenizer.*'results/tokenizer/t'.*re-run the stage"):
        load_model(tmp_path / "moved")
