"""Checkpoint directories: `model.pt` (weights), `meta.json` (config, hyperparameters, provenance)
and any extra files (e.g. `train_log.csv`), written to a temporary directory and renamed into
place so a reader never sees half a checkpoint. The directory gets the mode the user's umask
gives, like every other output (a team on a shared filesystem reads it).

`meta["model_config"]` rebuilds the GPT of its recipe (snakechat.model.recipes; a recipe this code
does not know is refused, naming it); `meta["sha256"]` holds the sha256 of model.pt and of
each extra file, recorded as they are written. A checkpoint carries its tokenizer: the files of the
tokenizer directory `meta["tokenizer"]` names when it is saved are copied into `tokenizer/` (with
their sha256), and meta.json then names that folder relative to itself, so a checkpoint copied or
moved anywhere loads from any working directory. Checkpoints written before named a tokenizer
directory relative to where the workflow ran; they load where that directory is still found (from
the working directory or above the checkpoint, as results/ is laid out), else are refused saying
so. Loading checks model.pt against it before reading a byte of it as weights (and then only
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
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "token_bytes.json", "meta.json")  # what Tokenizer.load and load_token_bytes read


def unwrap(model):
    """The plain GPT inside DistributedDataParallel and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class CheckpointError(ValueError):
    pass


def save_checkpoint(directory, model, meta, extra_files=None):
    """Write model weights, `extra_files` ({name: source path}) and meta.json (with their sha256)
    as `directory`, atomically; the tokenizer directory `meta["tokenizer"]` names (if any) is copied
    into it and meta.json names the copy relative to the checkpoint."""
    files = dict(extra_files or {})
    meta = dict(meta)
    if meta.get("tokenizer") is not None:
        source = Path(meta["tokenizer"])
        if not (source / TOKENIZER_FILES[0]).exists():
            raise FileNotFoundError(f"no tokenizer at {source / TOKENIZER_FILES[0]} to save with checkpoint {directory}")
        files.update({f"{TOKENIZER_DIR}/{name}": source / name for name in TOKENIZER_FILES if (source / name).exists()})
        meta.update(tokenizer=TOKENIZER_DIR, tokenizer_source=str(source))
    with atomic_dir(directory) as tmp:
        torch.save(unwrap(model).state_dict(), tmp / MODEL_FILE)
        for name, source in files.items():
            (tmp / name).parent.mkdir(exist_ok=True)
            shutil.copyfile(source, tmp / name)
        sha256 = {name: hash_file(tmp / name) for name in [MODEL_FILE, *files]}
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


def tokenizer_dir(directory, meta):
    """The directory the checkpoint's tokenizer loads from: its own `tokenizer/` (each file verified),
    or, for a checkpoint written before checkpoints carried their tokenizer, the directory its
    meta.json names relative to where the workflow ran, looked for from here and above the checkpoint."""
    directory = Path(directory)
    own = f"{TOKENIZER_DIR}/{TOKENIZER_FILES[0]}"
    if own in (meta.get("sha256") or {}):
        for name in meta["sha256"]:
            if name.startswith(f"{TOKENIZER_DIR}/"):
                verified(directory, name, meta)
        return directory / meta["tokenizer"]
    named = meta.get("tokenizer")
    if named is None:
        raise CheckpointError(f"{directory / META_FILE} names no tokenizer")
    candidates = [Path(named)] + ([] if Path(named).is_absolute() else [up / named for up in directory.resolve().parents])
    for candidate in candidates:
        if (candidate / TOKENIZER_FILES[0]).exists():
            return candidate
    raise CheckpointError(
        f"{directory} was written before checkpoints carried their tokenizer: its {META_FILE} names the tokenizer "
        f"{named!r}, relative to the directory the workflow ran in, and it is neither under {Path.cwd()} nor above "
        f"{directory}; run from that directory, or re-run the stage that wrote the checkpoint")


def load_model(directory, device="cpu"):
    """(model, tokenizer, meta) from a checkpoint directory; meta["tokenizer"] is the directory the
    tokenizer was loaded from (for token_bytes.json, and for the next stage to copy)."""
    from snakechat.model.tokenizer import Tokenizer

    tok_dir = tokenizer_dir(directory, load_meta(directory))
    model, meta = load_gpt(directory, device)
    return model, Tokenizer.load(tok_dir), {**meta, "tokenizer": str(tok_dir)}
