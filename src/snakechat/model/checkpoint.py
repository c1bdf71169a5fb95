"""Checkpoint directories: `model.pt` (weights), `meta.json` (config, hyperparameters, provenance)
and any extra files (e.g. `train_log.csv`), written to a temporary directory and renamed into
place so a reader never sees half a checkpoint. The directory gets the mode the user's umask
gives, like every other output (a team on a shared filesystem reads it).

`meta["model_config"]` rebuilds the GPT; `meta["tokenizer"]` is the tokenizer directory;
`meta["sha256"]` holds the sha256 of model.pt and of each extra file, recorded as they are
written. Loading checks model.pt against it before reading a byte of it as weights (and then only
as weights: `torch.load(weights_only=True)` runs no code from the file), so a corrupt or replaced
file is refused with an error naming it; a checkpoint without a recorded sha256 is refused too.

meta.json seals itself: `meta["meta_sha256"]` is the sha256 of the rest of it (canonical JSON), so
an edit that keeps valid JSON (a changed model_config, a swapped tokenizer path) is refused by
name. `meta["tokenizer_sha256"]` is the hash of the tokenizer's own files (`tokenizer_hash`) as
they were when the checkpoint was written: a tokenizer edited or retrained since is refused
before it tokenizes anything for weights trained with the old one.
"""

import hashlib
import json
import shutil
from pathlib import Path

import torch

from snakechat.runtime.common import atomic_dir
from snakechat.model.gpt import GPT, GPTConfig
from snakechat.runtime.provenance import hash_file

MODEL_FILE = "model.pt"
META_FILE = "meta.json"


def unwrap(model):
    """The plain GPT inside DistributedDataParallel and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class CheckpointError(ValueError):
    pass


# what Tokenizer.load reads (tok_eval's files beside them do not count)
TOKENIZER_FILES = ("tokenizer.json", "token_bytes.json", "meta.json")


def tokenizer_hash(directory):
    """sha256 over the tokenizer files of `directory` (names and contents)."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(directory) / name
        if path.is_file():
            h.update(name.encode() + b"\0" + hash_file(path).encode())
    return h.hexdigest()


def _meta_digest(meta):
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def sealed(meta):
    """`meta` as JSON-able data with its own checksum (meta_sha256) added."""
    meta = json.loads(json.dumps(meta, default=str))
    return {**meta, "meta_sha256": _meta_digest(meta)}


def save_checkpoint(directory, model, meta, extra_files=None):
    """Write model weights, `extra_files` ({name: source path}) and meta.json (with their sha256,
    the tokenizer's hash and its own) as `directory`, atomically."""
    if meta.get("tokenizer") is not None:
        meta = {**meta, "tokenizer_sha256": tokenizer_hash(meta["tokenizer"])}
    with atomic_dir(directory) as tmp:
        torch.save(unwrap(model).state_dict(), tmp / MODEL_FILE)
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        sha256 = {name: hash_file(tmp / name) for name in [MODEL_FILE, *(extra_files or {})]}
        (tmp / META_FILE).write_text(json.dumps(sealed({**meta, "sha256": sha256}), indent=2, sort_keys=True) + "\n")


def load_meta(directory, sealed_only=False):
    """meta.json of a checkpoint directory, its checksum checked where it has one (and required
    with `sealed_only`, as loading weights does); errors name the file."""
    path = Path(directory) / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {directory}: {path} is missing")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"checkpoint meta {path} is not UTF-8 text (byte at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint meta {path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint meta {path} is a JSON {type(meta).__name__}, not an object")
    if "meta_sha256" in meta:
        if meta["meta_sha256"] != _meta_digest(meta):
            raise CheckpointError(f"checkpoint meta {path} was changed after it was written (its content no longer matches its meta_sha256)")
    elif sealed_only:
        raise CheckpointError(f"checkpoint meta {path} has no meta_sha256, so it cannot be checked; re-run the stage that wrote {directory}")
    return meta


def verified_tokenizer(directory, meta):
    """The tokenizer directory a checkpoint names, once its files hash to what was recorded with the weights."""
    meta_path = Path(directory) / META_FILE
    if meta.get("tokenizer") is None:
        raise CheckpointError(f"checkpoint meta {meta_path} names no tokenizer")
    tok_dir = Path(meta["tokenizer"])
    if "tokenizer_sha256" not in meta:
        raise CheckpointError(f"checkpoint meta {meta_path} records no tokenizer_sha256, so {tok_dir} cannot be checked; re-run the stage that wrote {directory}")
    if tokenizer_hash(tok_dir) != meta["tokenizer_sha256"]:
        raise CheckpointError(f"tokenizer {tok_dir} is not the one {directory} was trained with: its files changed since "
                              f"({meta_path} recorded tokenizer_sha256 {meta['tokenizer_sha256']})")
    return tok_dir


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
    meta = load_meta(directory, sealed_only=True)
    meta_path = Path(directory) / META_FILE
    if not isinstance(meta.get("model_config"), dict):
        raise CheckpointError(f"checkpoint meta {meta_path} has no model_config (the GPT's shape), so the weights cannot be built")
    try:
        config = GPTConfig(**meta["model_config"])
    except TypeError as e:
        raise CheckpointError(f"checkpoint meta {meta_path}: model_config is not a GPT's: {e}") from None
    path = verified(directory, MODEL_FILE, meta)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint weights {path}: {e}") from e
    model = GPT(config).to(device)
    model.load_state_dict(state)
    return model, {k: v for k, v in meta.items() if k not in ("sha256", "meta_sha256")}


def load_model(directory, device="cpu"):
    """(model, tokenizer, meta) from a checkpoint directory."""
    from snakechat.model.tokenizer import Tokenizer

    model, meta = load_gpt(directory, device)
    return model, Tokenizer.load(verified_tokenizer(directory, meta)), meta
