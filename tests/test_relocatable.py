"""A checkpoint directory carries its tokenizer (issue 32): copied or moved anywhere, it loads from
any working directory with every file's checksum verified. Checkpoints written before, whose
meta.json names the tokenizer relative to where the workflow ran, are refused saying why."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snakechat.model.checkpoint import CheckpointError, load_model, save_checkpoint, sealed
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


def test_a_checkpoint_without_its_own_tokenizer_is_refused_saying_what_to_do(tmp_path):
    """One written before checkpoints carried their tokenizer (meta.json naming the workflow's
    tokenizer directory, nothing copied) is refused, naming the checkpoint and the fix."""
    tok = tokenizer()
    tok.save(tmp_path / "results/tokenizer/t")
    model = random_gpt(tok.vocab_size)
    ckpt = tmp_path / "results/sft/m"
    save_checkpoint(ckpt, model, {"model_config": model.config.to_dict(), "step": 0})
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps(sealed({**meta, "tokenizer": "results/tokenizer/t"})))
    with pytest.raises(CheckpointError, match=f"{ckpt} carries no tokenizer of its own.*re-run the stage"):
        load_model(ckpt)
