"""Checkpoint directories: `model.pt` (weights), `meta.json` (config, hyperparameters, provenance)
and any extra files (e.g. `train_log.csv`), written to a temporary directory and renamed into
place so a reader never sees half a checkpoint.

`meta["model_config"]` rebuilds the GPT; `meta["tokenizer"]` is the tokenizer directory.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from snakechat.gpt import GPT, GPTConfig

MODEL_FILE = "model.pt"
META_FILE = "meta.json"


def unwrap(model):
    """The plain GPT inside DistributedDataParallel and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(directory, model, meta, extra_files=None):
    """Write model weights, meta.json and `extra_files` ({name: source path}) as `directory`, atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        torch.save(unwrap(model).state_dict(), tmp / MODEL_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_meta(directory):
    path = Path(directory) / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {directory}: {path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint meta {path} is not valid JSON: {e}") from e


def load_gpt(directory, device="cpu"):
    """(model, meta) from a checkpoint directory, weights in float32 on `device`."""
    meta = load_meta(directory)
    path = Path(directory) / MODEL_FILE
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint weights {path}: {e}") from e
    model = GPT(GPTConfig(**meta["model_config"])).to(device)
    model.load_state_dict(state)
    return model, meta


def load_model(directory, device="cpu"):
    """(model, tokenizer, meta) from a checkpoint directory."""
    from snakechat.tokenizer import Tokenizer

    model, meta = load_gpt(directory, device)
    return model, Tokenizer.load(meta["tokenizer"]), meta
