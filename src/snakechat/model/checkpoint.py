"""Checkpoint directories: `model.pt` (weights), `meta.json` (config, hyperparameters, provenance)
and any extra files (e.g. `train_log.csv`), written to a temporary directory and renamed into
place so a reader never sees half a checkpoint. The directory gets the mode the user's umask
gives, like every other output (a team on a shared filesystem reads it).

`meta["model_config"]` rebuilds the GPT of its recipe (snakechat.model.recipes; a recipe this code
does not know is refused, naming it); `meta["tokenizer"]` is the tokenizer directory;
`meta["sha256"]` holds the sha256 of model.pt and of each extra file, recorded as they are
written. Loading checks model.pt against it before reading a byte of it as weights (and then only
as weights: `torch.load(weights_only=True)` runs no code from the file), so a corrupt or replaced
file is refused with an error naming it; a checkpoint without a recorded sha256 is refused too.
"""

import json
import shutil
from pathlib import Path

import torch

from snakechat.runtime.common import atomic_dir
from snakechat.model import recipes
from snakechat.runtime.provenance import hash_file

MODEL_FILE = "model.pt"
META_FILE = "meta.json"


def unwrap(model):
    """The plain GPT inside DistributedDataParallel and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class CheckpointError(ValueError):
    pass


def save_checkpoint(directory, model, meta, extra_files=None):
    """Write model weights, `extra_files` ({name: source path}) and meta.json (with their sha256)
    as `directory`, atomically."""
    with atomic_dir(directory) as tmp:
        torch.save(unwrap(model).state_dict(), tmp / MODEL_FILE)
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        sha256 = {name: hash_file(tmp / name) for name in [MODEL_FILE, *(extra_files or {})]}
        (tmp / META_FILE).write_text(json.dumps({**meta, "sha256": sha256}, indent=2, sort_keys=True, default=str) + "\n")


def load_meta(directory):
    path = Path(directory) / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {directory}: {path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint meta {path} is not valid JSON: {e}") from e


def verified(directory, name, meta):
    """The path of checkpoint file `name`, once its sha256 is the one meta.json recorded."""
    path, meta_path = Path(directory) / name, Path(directory) / META_FILE
    expected = (meta.get("sha256") or {}).get(name)
    if expected is None:
        raise CheckpointError(f"{meta_path} records no sha256 for {name}, so {path} cannot be checked; "
                              f"re-run the stage that wrote {directory} (it was written before checksums were recorded)")
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing")
    actual = hash_file(path)
    if actual != expected:
        raise CheckpointError(f"checkpoint file {path} is corrupt or was changed: its sha256 is {actual}, {meta_path} recorded {expected}")
    return path


def load_gpt(directory, device="cpu"):
    """(model, meta) from a checkpoint directory, weights (verified) in float32 on `device`; meta
    as it was saved (without the checksums save_checkpoint added)."""
    meta = load_meta(directory)
    if "model_config" in meta:
        recipes.recipe_of(meta["model_config"], f"{Path(directory) / META_FILE} model_config")
    path = verified(directory, MODEL_FILE, meta)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint weights {path}: {e}") from e
    model = recipes.model_from_dict(meta["model_config"], f"{Path(directory) / META_FILE} model_config").to(device)
    model.load_state_dict(state)
    return model, {k: v for k, v in meta.items() if k != "sha256"}


def load_model(directory, device="cpu"):
    """(model, tokenizer, meta) from a checkpoint directory."""
    from snakechat.model.tokenizer import Tokenizer

    model, meta = load_gpt(directory, device)
    return model, Tokenizer.load(meta["tokenizer"]), meta
