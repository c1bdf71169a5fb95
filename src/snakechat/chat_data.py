"""Chat data: tasks written by the built-in world, or the Hugging Face hub's parquet exports downloaded.

The result is `results/chat_data/{name}/tasks.json` ({"tasks": {task: {"kind", "splits":
{split: "<task>/<split>.jsonl"}, "random_baseline"}}}) with one jsonl of unified records (see
`snakechat.evaluate.tasks`) per task and split beside it. tasks.json is written last, after every file
has been checked, so it is the file that says "done".

    python -m snakechat.chat_data --out results/chat_data/tinyworld/tasks.json --kind synthetic --seed 0
    python -m snakechat.chat_data --out results/chat_data/nanochat/tasks.json --kind http \
        --tasks '{"gsm8k": {"format": "gsm8k", "splits": {"train": ["https://.../main/train/0000.parquet"]}}}' \
        [--world-tasks '["identity", "spelling"]' --world-seed 0] [--sha256 '{"<url>": "HEX"}'] \
        --retries 5 --timeout 60 --backoff 2 --max-retry-wait 120 --max-bytes 4294967296 --workers 4

Needs no inputs (synthetic) or the network (http). Downloaded files are kept under `raw/` beside
tasks.json; a re-run after a failure reuses those that still match the record of their download
(size and sha256) and fetches the others, naming each file it rejects.
"""

import argparse
import concurrent.futures
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from snakechat.data import download
from snakechat.evaluate import tasks
from snakechat.runtime.common import atomic_path
from snakechat.runtime.provenance import record


def check_chat_dir(chat_dir, entries=None):
    """{task: {split: records}} counts of a chat data directory (its tasks.json, or the given
    entries for one); raises ValueError naming the file at fault."""
    chat_dir = Path(chat_dir)
    counts = {}
    for task, entry in (entries if entries is not None else tasks.load_tasks(chat_dir)).items():
        kind = entry.get("kind")
        if kind not in tasks.KINDS:
            raise ValueError(f"{chat_dir / 'tasks.json'}: task {task!r} has kind {kind!r}, not one of {tasks.KINDS}")
        if not 0 <= entry.get("random_baseline", -1) <= 1:
            raise ValueError(f"{chat_dir / 'tasks.json'}: task {task!r} needs a random_baseline in [0, 1]")
        counts[task] = {}
        for split, rel in entry["splits"].items():
            path = chat_dir / rel
            if not path.is_file():
                raise ValueError(f"{chat_dir / 'tasks.json'}: task {task!r} split {split!r} names {rel}, which does not exist")
            n = 0
            for n, r in enumerate(tasks.iter_jsonl(path), 1):
                tasks.check_record(r, kind, f"{path} row {n - 1}")
            counts[task][split] = n
    return counts


def raw_path(chat_dir, task, split, index, url):
    """Where the index-th file of a task split is kept; the URL's file name keeps its extension."""
    name = Path(unquote(urlsplit(url).path)).name
    return Path(chat_dir) / "raw" / task / split / f"{index:03d}-{name}"


def fetch_files(chat_dir, spec, sha256=None, workers=4, **http):
    """Download every file of every task split (reusing files that still match the record of their
    download); returns [(task, split, path, info)] in spec order. `http`: `download.fetch`'s settings."""
    sha256 = sha256 or {}
    jobs = [(task, split, i, url) for task, t in spec.items() for split, urls in t["splits"].items() for i, url in enumerate(urls)]

    def one(job):
        task, split, i, url = job
        fmt = spec[task]["format"]
        path = raw_path(chat_dir, task, split, i, url)

        def verify(p):
            # the reader picks the format by file name; the part file has a .part suffix
            probe = p.with_name(path.name)
            p.rename(probe)
            try:
                for _ in tasks.read(probe, fmt):
                    pass
            finally:
                probe.rename(p)

        info = download.fetch(url, path, sha256=sha256.get(url), verify=verify, **http)
        return task, split, path, info

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


def convert(chat_dir, spec, fetched):
    """Write each task split as unified jsonl; returns the tasks.json entries."""
    chat_dir = Path(chat_dir)
    entries = {}
    for task, t in spec.items():
        fmt = t["format"]
        kind = tasks.FORMAT_KINDS[fmt]
        splits, baselines = {}, {}
        for split in t["splits"]:
            rel = f"{task}/{split}.jsonl"
            n, chance = 0, 0.0
            with atomic_path(chat_dir / rel) as tmp, open(tmp, "w", encoding="utf-8") as f:
                for path in [p for tk, sp, p, _ in fetched if (tk, sp) == (task, split)]:
                    for r in tasks.read(path, fmt):  # streamed: SmolTalk does not fit in memory twice
                        f.write(json.dumps(r, ensure_ascii=False) + "\n")
                        n += 1
                        chance += tasks.random_baseline([r], kind)
            splits[split] = rel
            baselines[split] = chance / max(n, 1)
            print(f"{chat_dir / rel}: {n} {kind} records", flush=True)
        baseline = baselines.get("test", next(iter(baselines.values())))
        entries[task] = {"kind": kind, "splits": splits, "random_baseline": baseline, "format": fmt}
    return entries


def copy_world_tasks(chat_dir, seed, names):
    """Tasks of the built-in world (e.g. identity, spelling) to sit beside downloaded ones."""
    from snakechat.world import chat as world_chat

    chat_dir = Path(chat_dir)
    with tempfile.TemporaryDirectory(prefix=".world.", dir=chat_dir) as tmp:
        world_chat.write_chat_data(tmp, seed)
        available = tasks.load_tasks(tmp)
        unknown = sorted(set(names) - set(available))
        if unknown:
            raise SystemExit(f"--world-tasks: the built-in world has no task {', '.join(map(repr, unknown))} (it has: {', '.join(sorted(available))})")
        entries = {}
        for name in names:
            entry = available[name]
            for rel in entry["splits"].values():
                (chat_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(Path(tmp) / rel, chat_dir / rel)
            entries[name] = {**entry, "format": "world"}
            print(f"{chat_dir / name}: copied from the built-in world (seed {seed})", flush=True)
    return entries


def check_spec(spec):
    """Raise SystemExit naming the task when the --tasks JSON is malformed."""
    if not isinstance(spec, dict) or not spec:
        raise SystemExit("--tasks: expected a non-empty JSON object of task -> {format, splits}")
    for task, t in spec.items():
        if not isinstance(t, dict) or t.get("format") not in tasks.FORMAT_KINDS:
            raise SystemExit(f"--tasks: task {task!r} needs a format, one of {', '.join(sorted(tasks.FORMAT_KINDS))}")
        splits = t.get("splits")
        if not isinstance(splits, dict) or not splits or not all(isinstance(u, list) and u and all(isinstance(x, str) for x in u) for u in splits.values()):
            raise SystemExit(f"--tasks: task {task!r} needs splits: {{split: [url, ...]}}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="tasks.json to write; the task files go beside it")
    parser.add_argument("--kind", choices=["synthetic", "http"], required=True)
    parser.add_argument("--seed", type=int, default=0, help="synthetic: the world's seed")
    parser.add_argument("--tasks", help="http: JSON object task -> {format, splits: {split: [url, ...]}}")
    parser.add_argument("--world-tasks", default="[]", help="http: JSON list of built-in world tasks to add (e.g. identity, spelling)")
    parser.add_argument("--world-seed", type=int, default=0, help="http: the world's seed for --world-tasks")
    parser.add_argument("--sha256", default="{}", help="http: JSON object url -> expected sha256")
    download.add_http_arguments(parser)
    args = parser.parse_args(argv)
    if args.kind == "http" and args.tasks is None:
        parser.error("--kind http needs --tasks")
    out = Path(args.out)
    if out.name != "tasks.json":
        parser.error(f"--out must name tasks.json, not {out.name!r}")
    chat_dir = out.parent
    chat_dir.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)

    if args.kind == "synthetic":
        from snakechat.world import chat as world_chat

        settings = {"kind": "synthetic", "seed": args.seed}
        world_chat.write_chat_data(chat_dir, args.seed)
        entries = tasks.load_tasks(chat_dir)
        out.unlink()  # written again below, with provenance, once every file is checked
        sources = []
    else:
        try:
            spec, sha256, world_tasks = json.loads(args.tasks), json.loads(args.sha256), json.loads(args.world_tasks)
        except json.JSONDecodeError as e:
            raise SystemExit(f"--tasks/--sha256/--world-tasks: not JSON: {e}") from e
        check_spec(spec)
        clash = sorted(set(spec) & set(world_tasks))
        if clash:
            raise SystemExit(f"tasks {clash} are both downloaded and taken from the built-in world")
        settings = {"kind": "http", "tasks": spec, "world_tasks": world_tasks, "world_seed": args.world_seed, "sha256": sha256,
                    "workers": args.workers, **download.http_settings(args)}
        fetched = fetch_files(chat_dir, spec, sha256, args.workers, **download.http_settings(args))
        sources = [{"task": t, "split": s, "file": str(p.relative_to(chat_dir)), **info} for t, s, p, info in fetched]
        entries = convert(chat_dir, spec, fetched)
        if world_tasks:
            entries |= copy_world_tasks(chat_dir, args.world_seed, world_tasks)

    counts = check_chat_dir(chat_dir, entries)
    for task, entry in entries.items():
        entry["rows"] = counts[task]
    tasks.write_tasks(chat_dir, entries, sources=sources, provenance=record("snakechat.chat_data", settings))
    print(f"wrote {out}: " + ", ".join(f"{t} {c}" for t, c in counts.items()), flush=True)


if __name__ == "__main__":
    main()
