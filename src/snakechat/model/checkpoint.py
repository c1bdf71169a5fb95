"""Checkpoint directories: `model.pt` (weights), `meta.json` (config, hyperparameters, provenance)
and any extra files (e.g. `train_log.csv`), written to a temporary directory and renamed into
place so a reader never sees half a checkpoint. The directory gets the mode the user's umask
gives, like every other output (a team on a shared filesystem reads it).

`meta["model_config"]` rebuilds the GPT of its recipe (snakechat.model.recipes; a recipe this code
does not know is refused, naming it); `meta["sha256"]` holds the sha256 of model.pt and of
each extra file, recorded as they are written. A checkpoint carries its tokenizer: the files of the
tokenizer directory `meta["tokenizer"]` names when it is saved are copied into `tokenizer/` (with
their sha256), and meta.json then names that folder relative to itself, so a checkpoint copied or
moved anywhere loads from any working directory, and an edit of the workflow's tokenizer since
cannot reach weights trained with the old one. Loading checks model.pt against it before reading a byte of it as weights (and then only
as weights: `torch.load(weights_only=True)` runs no code from the file), so a corrupt or replaced
file is refused with an error naming it; a checkpoint without a recorded sha256 is refused too.

meta.json seals itself: `meta["meta_sha256"]` is the sha256 of the rest of it (canonical JSON), so
an edit that keeps valid JSON (a changed model_config, a swapped tokenizer path) is refused by
name. Checkpoints written before either (no tokenizer of their own, or no meta_sha256) are
refused with the advice to re-run the stage that wrote them.
"""

import hashlib
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


# what Tokenizer.load reads (tok_eval's files beside them do not count)
TOKENIZER_FILES = ("tokenizer.json", "token_bytes.json", "meta.json")


def _meta_digest(meta):
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def sealed(meta):
    """`meta` as JSON-able data with its own checksum (meta_sha256) added."""
    meta = json.loads(json.dumps(meta, default=str))
    return {**meta, "meta_sha256": _meta_digest(meta)}


def save_checkpoint(directory, model, meta, extra_files=None):
    """Write model weights, `extra_files` ({name: source path}) and meta.json (with their sha256 and
    its own) as `directory`, atomically; the tokenizer directory `meta["tokenizer"]` names (if any) is
    copied into it and meta.json names the copy relative to the checkpoint."""
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
    recipes.recipe_of(meta["model_config"], f"{meta_path} model_config")  # a recipe this code does not know, by name
    try:
        config = recipes.config_from_dict(meta["model_config"], f"{meta_path} model_config")
    except ValueError as e:
        raise CheckpointError(f"checkpoint meta {meta_path}: model_config is not a GPT's: {e}") from None
    path = verified(directory, MODEL_FILE, meta)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint weights {path}: {e}") from e
    model = recipes.build(config).to(device)
    model.load_state_dict(state)
    return model, {k: v for k, v in meta.items() if k not in ("sha256", "meta_sha256")}


def tokenizer_dir(directory, meta):
    """The checkpoint's own tokenizer folder, once each of its files hashes to what meta.json recorded."""
    directory = Path(directory)
    own = [name for name in meta.get("sha256") or {} if name.startswith(f"{TOKENIZER_DIR}/")]
    if f"{TOKENIZER_DIR}/{TOKENIZER_FILES[0]}" not in own:
        raise CheckpointError(f"{directory} carries no tokenizer of its own (it was written before checkpoints did): "
                              f"re-run the stage that wrote it")
    for name in own:
        verified(directory, name, meta)
    return directory / TOKENIZER_DIR


def load_model(directory, device="cpu"):
    """(model, tokenizer, meta) from a checkpoint directory; meta["tokenizer"] is the directory the
    tokenizer was loaded from (for token_bytes.json, and for the next stage to copy)."""
    from snakechat.model.tokenizer import Tokenizer

    tok_dir = tokenizer_dir(directory, load_meta(directory, sealed_only=True))
    model, meta = load_gpt(directory, device)
    return model, Tokenizer.load(tok_dir), {**meta, "tokenizer": str(tok_dir)}
