"""An eval bundle in the DCLM layout, read and checked before any model work.

A bundle is a directory with `core.yaml` (its `icl_tasks`: label, icl_task_type, dataset_uri,
num_fewshot, continuation_delimiter), `eval_meta_data.csv` (each task's `Random baseline`, in
percent) and `eval_data/<dataset_uri>` (one JSON item per line). Every error names the file, and
the line or task, that is wrong; a dataset_uri must stay inside the bundle's eval_data.

The stage that installs a bundle records the sha256 of each of its files in `source.json`
(`files`); read with `verify=True` (as base_eval does), every file is checked against it before it
is parsed, so a changed answer (a `gold` edited in place) is refused by name, not scored.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from snakechat.runtime.provenance import hash_file

TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
ITEM_FIELDS = {
    "multiple_choice": ("query", "choices", "gold"),
    "schema": ("context_options", "continuation", "gold"),
    "language_modeling": ("context", "continuation"),
}
DEFAULT_DELIMITER = " "  # llm-foundry's default when a task names none


class BundleError(ValueError):
    """An eval bundle that does not follow the DCLM layout; the message names the file."""


@dataclass
class Task:
    label: str
    kind: str  # one of TASK_TYPES
    shots: int
    delimiter: str
    baseline: float  # random baseline, in percent as in eval_meta_data.csv
    items: list


def read_baselines(path):
    """`Eval Task` -> `Random baseline` (percent) from eval_meta_data.csv."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: missing (the bundle's random baselines)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(f"{path}: not UTF-8 (byte at offset {e.start})") from None
    reader = csv.DictReader(text.splitlines())
    missing = {"Eval Task", "Random baseline"} - set(reader.fieldnames or ())
    if missing:
        raise BundleError(f"{path}: missing column(s) {sorted(missing)}")
    baselines = {}
    for line, row in enumerate(reader, start=2):
        try:
            baselines[row["Eval Task"]] = float(row["Random baseline"])
        except (TypeError, ValueError):
            raise BundleError(f"{path}:{line}: Random baseline {row['Random baseline']!r} is not a number") from None
    return baselines


SOURCE_FILE = "source.json"


def file_hashes(root):
    """{path relative to the bundle: sha256} of every file of a bundle directory but source.json."""
    root = Path(root)
    return {str(p.relative_to(root)): hash_file(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name != SOURCE_FILE}


def write_source(root, **fields):
    """Write the bundle's source.json: `fields` (where it came from) and the hashes of its files."""
    from snakechat.runtime.common import write_json_atomic

    write_json_atomic(Path(root) / SOURCE_FILE, {**fields, "files": file_hashes(root)})


class _Recorded:
    """The hashes a bundle's source.json records; check(path) raises unless the file still has its."""

    def __init__(self, root):
        self.root, self.source = Path(root), Path(root) / SOURCE_FILE
        try:
            self.files = json.loads(self.source.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            raise BundleError(f"{self.source}: no record of the bundle's file hashes (`files`), so it cannot be checked; re-run eval_bundle") from None

    def check(self, path):
        rel = str(Path(path).relative_to(self.root))
        if rel not in self.files:
            raise BundleError(f"{path}: not among the files {self.source} records")
        if hash_file(path) != self.files[rel]:
            raise BundleError(f"{path}: changed since the bundle was installed (its sha256 is not the one {self.source} records)")


def read_items(path, kind):
    """The rows of one task file, checked for the fields its task type needs."""
    fields = ITEM_FIELDS[kind]
    items = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                item = json.loads(line)
            except UnicodeDecodeError:
                raise BundleError(f"{where}: not UTF-8") from None
            except json.JSONDecodeError as e:
                raise BundleError(f"{where}: not JSON ({e.msg})") from None
            if not isinstance(item, dict):
                raise BundleError(f"{where}: an item is a JSON object, not {type(item).__name__}")
            missing = [k for k in fields if k not in item]
            if missing:
                raise BundleError(f"{where}: {kind} item lacks {missing}")
            options = item.get("choices", item.get("context_options"))
            if options is not None:
                if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
                    raise BundleError(f"{where}: needs a list of at least two strings, got {options!r}")
                gold = item["gold"]
                if not isinstance(gold, int) or not 0 <= gold < len(options):
                    raise BundleError(f"{where}: gold {gold!r} is not an index into its {len(options)} options")
            items.append(item)
    if not items:
        raise BundleError(f"{path}: no items")
    return items


def load_bundle(path, verify=False):
    """The tasks of a bundle: `path` is its directory or its core.yaml; with `verify`, every file
    read is first checked against the hashes in source.json."""
    path = Path(path)
    spec_path = path / "core.yaml" if path.is_dir() else path
    root = spec_path.parent
    if not spec_path.exists():
        raise BundleError(f"{spec_path}: missing (an eval bundle needs core.yaml)")
    check = _Recorded(root).check if verify else (lambda p: None)
    check(spec_path)
    try:
        spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise BundleError(f"{spec_path}: not valid YAML ({e})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("icl_tasks"), list) or not spec["icl_tasks"]:
        raise BundleError(f"{spec_path}: needs a non-empty list `icl_tasks`")
    if (root / "eval_meta_data.csv").exists():
        check(root / "eval_meta_data.csv")
    baselines = read_baselines(root / "eval_meta_data.csv")
    tasks = []
    for n, entry in enumerate(spec["icl_tasks"]):
        where = f"{spec_path}: icl_tasks[{n}]"
        if not isinstance(entry, dict):
            raise BundleError(f"{where}: a task is a mapping (label, icl_task_type, ...), not {entry!r}")
        missing = [k for k in ("label", "icl_task_type", "dataset_uri", "num_fewshot") if k not in entry]
        if missing:
            raise BundleError(f"{where}: missing {missing}")
        label, kind = entry["label"], entry["icl_task_type"]
        if kind not in TASK_TYPES:
            raise BundleError(f"{where} ({label}): icl_task_type {kind!r} is not one of {list(TASK_TYPES)}")
        shots = entry["num_fewshot"]
        shots = shots[0] if isinstance(shots, list) and len(shots) == 1 else shots
        if not isinstance(shots, int) or shots < 0:
            raise BundleError(f"{where} ({label}): num_fewshot {entry['num_fewshot']!r} is not one count")
        if label not in baselines:
            raise BundleError(f"{root / 'eval_meta_data.csv'}: no `Random baseline` for task {label!r}")
        data_path = root / "eval_data" / str(entry["dataset_uri"])
        if not data_path.resolve().is_relative_to((root / "eval_data").resolve()):
            raise BundleError(f"{where} ({label}): dataset_uri {entry['dataset_uri']!r} leaves the bundle's eval_data")
        if not data_path.is_file():
            raise BundleError(f"{where} ({label}): dataset_uri {entry['dataset_uri']!r} not found at {data_path}")
        delimiter = entry.get("continuation_delimiter", DEFAULT_DELIMITER)
        check(data_path)
        tasks.append(Task(label, kind, shots, delimiter, baselines[label], read_items(data_path, kind)))
    return tasks
