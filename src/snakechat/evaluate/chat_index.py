"""tasks.json, the index of a chat data directory: written with the sha256 of every split file,
read back with each file checked against it, so that an edited record (a changed answer) or a
swapped split is refused naming the file instead of being trained or scored on."""

import json
from pathlib import Path

from snakechat.runtime.common import write_json_atomic
from snakechat.runtime.provenance import hash_file


def write_tasks(chat_dir, entries, **extra):
    """Write tasks.json ({"tasks": entries, **extra}) with the sha256 of every split file recorded
    in its entry, so that a reader refuses a file changed since (an edited answer, a swapped split)."""
    chat_dir = Path(chat_dir)
    entries = {task: {**e, "sha256": {split: hash_file(chat_dir / rel) for split, rel in e["splits"].items()}} for task, e in entries.items()}
    write_json_atomic(chat_dir / "tasks.json", {"tasks": entries, **extra})
    return entries


def load_tasks(chat_dir):
    """tasks.json of a chat data directory: {task: {"kind", "splits": {split: path}, "random_baseline", "sha256"}}."""
    path = Path(chat_dir) / "tasks.json"
    try:
        return json.loads(path.read_bytes().decode("utf-8"))["tasks"]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte at offset {e.start})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a chat data index ({type(e).__name__}: {e})") from None


def split_path(chat_dir, task, entry, split):
    """The file of a task's split, once its sha256 is the one tasks.json recorded."""
    index, path = Path(chat_dir) / "tasks.json", Path(chat_dir) / entry["splits"][split]
    expected = (entry.get("sha256") or {}).get(split)
    if expected is None:
        raise ValueError(f"{index}: task {task!r} records no sha256 for its {split!r} split, so {path} cannot be checked; re-run chat_data")
    if not path.is_file():
        raise ValueError(f"{path}: missing (task {task!r}, split {split!r} of {index})")
    if hash_file(path) != expected:
        raise ValueError(f"{path}: changed since {index} was written (its sha256 is not the recorded {expected}): "
                         f"an edited record or a swapped split is not trained or scored on")
    return path
