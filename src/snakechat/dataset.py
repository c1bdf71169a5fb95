"""Pretraining shards: generate them from the built-in world, or download them over HTTP.

Either way the result is `shard_00000.parquet`, `shard_00001.parquet`, ... (one string column
`text`, one document per row, row groups of 1024 rows; the last shard is the validation split)
and, beside them, `manifest.json` listing each shard's file, bytes, sha256 and rows (and url).

    python -m snakechat.dataset --manifest results/data/tinyworld/manifest.json \
        --kind synthetic --shards 4 --seed 0 --docs-per-shard 4096
    python -m snakechat.dataset --manifest results/data/fineweb-edu/manifest.json \
        --kind http --shards 241 --url 'https://.../shard_{index:05d}.parquet' [--val-index 6542] \
        [--sha256 '{"shard_00000.parquet": "HEX"}'] [--bytes '{"shard_00000.parquet": N}'] \
        --retries 5 --timeout 60 --backoff 2 --max-retry-wait 120 --max-bytes 4294967296 --workers 4

Needs no inputs (synthetic) or the network (http). The manifest is written last, so it is the
file that says "done"; shards already downloaded are kept beside it and, when the download
re-runs, reused if they still match the record of their download (size and sha256), else fetched
again.
"""

import argparse
import concurrent.futures
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from snakechat.data import download
from snakechat.data.shards import record_verified
from snakechat.runtime.common import atomic_path, write_json_atomic
from snakechat.runtime.provenance import hash_file, record

ROW_GROUP_SIZE = 1024
# Pinned so that the same documents always give the same bytes (parquet stores no timestamps).
PARQUET_OPTIONS = dict(row_group_size=ROW_GROUP_SIZE, compression="zstd", compression_level=3, use_dictionary=False, write_statistics=False)


def shard_name(index):
    return f"shard_{index:05d}.parquet"


def check_shard(path, full=True):
    """Rows in a shard; raises ValueError unless it is a readable parquet file with a string `text` column.

    full=True reads every page (catches corrupt data, not just a corrupt footer).
    """
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except Exception as e:
        raise ValueError(f"not a readable parquet file: {e}") from e
    if "text" not in schema.names:
        raise ValueError(f"no `text` column (columns: {', '.join(schema.names) or 'none'})")
    if not (pa.types.is_string(schema.field("text").type) or pa.types.is_large_string(schema.field("text").type)):
        raise ValueError(f"column `text` has type {schema.field('text').type}, not string")
    if full:
        try:
            for _ in pf.iter_batches(batch_size=ROW_GROUP_SIZE * 8, columns=["text"]):
                pass
        except Exception as e:
            raise ValueError(f"unreadable data: {e}") from e
    return pf.metadata.num_rows


def write_shard(path, texts):
    """Write documents as a shard, atomically, with pinned writer options (same texts, same bytes)."""
    table = pa.table({"text": pa.array(texts, type=pa.string())})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)


def shard_entry(path, **extra):
    path = Path(path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": hash_file(path), "rows": check_shard(path, full=False), **extra}


def generate_synthetic(out_dir, seed, shards, docs_per_shard):
    """Write the built-in world's corpus as shards; returns the manifest's shard list."""
    from snakechat.world import corpus as world_corpus

    entries = []
    for i in range(shards):
        docs = list(world_corpus.corpus_documents(seed, docs_per_shard, offset=i * docs_per_shard))
        path = Path(out_dir) / shard_name(i)
        write_shard(path, docs)
        entries.append(shard_entry(path))
        print(f"{path}: {len(docs)} documents", flush=True)
    return entries


def shard_indices(shards, val_index=None):
    """Server indices of the shards to fetch: training shards 0 … shards-2, then the validation shard,
    `val_index` where the server keeps it apart (ClimbMix: the last of 6,543, 06542), else shards-1."""
    val_index = shards - 1 if val_index is None else val_index
    if val_index < shards - 1:
        raise ValueError(f"val_index {val_index} is one of the training shards 0 … {shards - 2}: it must be at least shards - 1 = {shards - 1}")
    return [*range(shards - 1), val_index]


def fetch_shards(out_dir, url_template, shards, sha256=None, sizes=None, workers=4, val_index=None, **http):
    """Download `shard_indices(shards, val_index)` from `url_template` (e.g. '.../shard_{index:05d}.parquet'),
    each under its server index's name, so the validation shard sorts last.

    A shard already here is reused only if it still matches the record of its download (and the
    configured sha256/size); otherwise it is named and fetched again (`snakechat.data.download`).
    `http`: retries, timeout, backoff, max_retry_wait, max_bytes for `download.fetch`.
    """
    sha256, sizes = sha256 or {}, sizes or {}
    out_dir = Path(out_dir)

    def one(i):
        name, url = shard_name(i), url_template.format(index=i)
        path = out_dir / name
        info = download.fetch(url, path, size=sizes.get(name), sha256=sha256.get(name), verify=check_shard, **http)
        return {"file": name, "bytes": info["bytes"], "sha256": info["sha256"], "rows": check_shard(path, full=False), "url": url}

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, shard_indices(shards, val_index)))


def _json_map(text, flag, convert):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"{flag}: not JSON ({e}): {text!r}") from e
    if not isinstance(value, dict):
        raise SystemExit(f"{flag}: expected a JSON object of shard file -> value, got {text!r}")
    return {k: convert(v) for k, v in value.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="manifest.json to write; shards go beside it")
    parser.add_argument("--kind", choices=["synthetic", "http"], required=True)
    parser.add_argument("--shards", type=int, required=True, help="number of shards (at least 2: the last is validation)")
    syn = parser.add_argument_group("synthetic: the built-in world")
    syn.add_argument("--seed", type=int, default=0, help="the world's seed")
    syn.add_argument("--docs-per-shard", type=int, default=4096)
    web = parser.add_argument_group("http: download shards")
    web.add_argument("--url", help="template with {index}, e.g. .../shard_{index:05d}.parquet")
    web.add_argument("--sha256", default="{}", help='JSON object: shard file -> expected sha256')
    web.add_argument("--bytes", default="{}", help='JSON object: shard file -> expected size')
    web.add_argument("--val-index", type=int, help="server index of the validation shard (default: shards - 1, right after the training shards)")
    download.add_http_arguments(web)
    args = parser.parse_args(argv)
    if args.shards < 2:
        parser.error("--shards must be at least 2 (the last shard is the validation split)")
    if args.kind == "http" and args.url is None:
        parser.error("--kind http needs --url")
    if args.kind == "http":
        try:
            args.url.format(index=0)
        except (KeyError, IndexError, ValueError) as e:
            parser.error(f"--url {args.url!r} must be a template whose only field is {{index}} (e.g. shard_{{index:05d}}.parquet): {e!r}")
        try:
            shard_indices(args.shards, args.val_index)
        except ValueError as e:
            parser.error(f"--val-index: {e}")

    out_dir = Path(args.manifest).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.kind == "synthetic":
        settings = {"kind": "synthetic", "shards": args.shards, "seed": args.seed, "docs_per_shard": args.docs_per_shard}
        entries = generate_synthetic(out_dir, args.seed, args.shards, args.docs_per_shard)
    else:
        sha256, sizes = _json_map(args.sha256, "--sha256", str), _json_map(args.bytes, "--bytes", int)
        settings = {k: getattr(args, k) for k in ("kind", "shards", "url", "workers", *download.HTTP_SETTINGS)} | {"sha256": sha256, "bytes": sizes}
        if args.val_index is not None:
            settings["val_index"] = args.val_index
        entries = fetch_shards(out_dir, args.url, args.shards, sha256, sizes, args.workers, args.val_index, **download.http_settings(args))
    twins = [e["file"] for e in entries if sum(f["sha256"] == e["sha256"] for f in entries) > 1]
    if twins:
        raise SystemExit(f"{out_dir}: shards {', '.join(twins)} have the same content; a dataset whose shards repeat "
                         f"(a mirror serving one file twice) would train on its validation shard or weigh documents twice")
    record_verified(out_dir, {e["file"]: e["sha256"] for e in entries})  # readers then stat instead of hashing
    manifest = {
        "kind": args.kind,
        "shards": entries,
        "splits": {"train": [e["file"] for e in entries[:-1]], "val": [entries[-1]["file"]]},
        "rows": sum(e["rows"] for e in entries),
        "bytes": sum(e["bytes"] for e in entries),
        "provenance": record("snakechat.dataset", settings),
    }
    write_json_atomic(args.manifest, manifest)
    print(f"wrote {args.manifest}: {len(entries)} shards, {manifest['rows']} documents, {manifest['bytes']} bytes", flush=True)


if __name__ == "__main__":
    main()
