"""Reading a dataset that snakechat.dataset wrote: which shards make a split (from the manifest
beside them), checked against the manifest, and their documents. The last shard is the validation split.

Every shard of a split is checked before it is used: its size at once, its sha256 once per file
state. A shard's hash is recorded beside the manifest (`.verified.json`: file -> sha256 with the
inode, size and mtime it was computed for) by the stage that wrote it and by each read that had to
hash it; a file whose inode, size and mtime still match its record is not read again, so each
process pays a stat per shard, not a pass over the data. A shard edited, truncated, duplicated
over another or swapped with another (train and validation too) fails the check, naming the file.
"""

import json
import os
import tempfile
from pathlib import Path

from snakechat.runtime.provenance import hash_file

READ_ROWS = 1024  # documents per read (one row group of a written shard)
STAMPS = ".verified.json"  # beside the manifest


class ShardError(ValueError):
    """A shard that is missing, unreadable or not the one the manifest records; the message names it."""


def _stamp(path):
    st = os.stat(path)
    return {"ino": st.st_ino, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_stamps(directory):
    try:
        stamps = json.loads((Path(directory) / STAMPS).read_text())
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def record_verified(directory, files):
    """Record the sha256 of `files` ({name: sha256}, just computed) for their present state; a
    directory that cannot be written to is left as it is (each process then hashes again)."""
    directory = Path(directory)
    stamps = _read_stamps(directory)
    stamps.update({name: {**_stamp(directory / name), "sha256": digest} for name, digest in files.items()})
    try:
        fd, tmp = tempfile.mkstemp(prefix=STAMPS, dir=directory)
        with os.fdopen(fd, "w") as f:
            json.dump(stamps, f)
        os.replace(tmp, directory / STAMPS)
    except OSError:
        pass


def verify_shards(manifest_path, entries):
    """Raise ShardError unless every manifest entry's file has the recorded size and sha256."""
    directory = Path(manifest_path).parent
    stamps, hashed = _read_stamps(directory), {}
    for entry in entries:
        path = directory / entry["file"]
        try:
            now = _stamp(path)
        except OSError as e:
            raise ShardError(f"{path}: shard listed in {manifest_path} cannot be read: {e.strerror}") from None
        if now["bytes"] != entry["bytes"]:
            raise ShardError(f"{path}: {now['bytes']} bytes, but {manifest_path} records {entry['bytes']} "
                             f"(a shard edited, truncated or swapped with another)")
        stamp = stamps.get(entry["file"])
        if isinstance(stamp, dict) and stamp == {**now, "sha256": entry["sha256"]}:
            continue
        digest = hash_file(path)
        if digest != entry["sha256"]:
            raise ShardError(f"{path}: sha256 {digest} is not the {entry['sha256']} that {manifest_path} records "
                             f"(a shard edited, duplicated or swapped with another, train and validation too)")
        hashed[entry["file"]] = digest
    if hashed:
        record_verified(directory, hashed)


def shard_paths(manifest_path, split):
    """The shard files of a split, verified: "train" = all but the last shard, "val" = the last one."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    manifest_path = Path(manifest_path)
    try:
        entries = json.loads(manifest_path.read_text())["shards"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{manifest_path}: not a readable dataset manifest: {type(e).__name__}: {e}") from None
    if not entries or not all(isinstance(e, dict) and {"file", "bytes", "sha256"} <= set(e) for e in entries):
        raise ShardError(f"{manifest_path}: not a dataset manifest: every shard needs file, bytes and sha256")
    digests = [e["sha256"] for e in entries]
    if len(set(digests)) != len(digests):
        twins = sorted({e["file"] for e in entries if digests.count(e["sha256"]) > 1})
        raise ShardError(f"{manifest_path}: shards {', '.join(twins)} have the same content (a duplicated shard; "
                         f"validation would be trained on if it is one of them)")
    chosen = entries[:-1] if split == "train" else entries[-1:]
    verify_shards(manifest_path, chosen)
    return [manifest_path.parent / e["file"] for e in chosen]


def missing_or_resized(manifest_path):
    """What a stat shows wrong with the shards a manifest lists (missing, or not the recorded size),
    one line each: cheap enough for the workflow to ask while it plans, so a dry run names them."""
    manifest_path = Path(manifest_path)
    try:
        entries = json.loads(manifest_path.read_text())["shards"]
        recorded = [(manifest_path.parent / e["file"], e["bytes"]) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"{manifest_path}: not a readable dataset manifest ({type(e).__name__}: {e})"]
    problems = []
    for path, size in recorded:
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != size:
            problems.append(f"{path}: {path.stat().st_size} bytes, the manifest records {size}")
    return problems


def iter_texts(paths):
    """Yield the documents of the given shards, in order, one string per row."""
    import pyarrow.parquet as pq  # here: the workflow imports this module while it plans

    for path in paths:
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=["text"])
            for batch in batches:
                yield from batch.column(0).to_pylist()
        except (OSError, ValueError) as e:  # pyarrow's errors subclass these and name no file
            raise ShardError(f"{path}: cannot read the shard: {type(e).__name__}: {e}") from e
