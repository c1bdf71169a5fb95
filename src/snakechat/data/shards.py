"""Reading a dataset that snakechat.dataset wrote: which shards make a split (from the manifest
beside them), and their documents. The last shard is the validation split."""

import json
from pathlib import Path

import pyarrow.parquet as pq

READ_ROWS = 1024  # documents per read (one row group of a written shard)


def shard_paths(manifest_path, split):
    """The shard files of a split: "train" = all but the last shard, "val" = the last one."""
    manifest_path = Path(manifest_path)
    files = [manifest_path.parent / s["file"] for s in json.loads(manifest_path.read_text())["shards"]]
    if split == "train":
        return files[:-1]
    if split == "val":
        return files[-1:]
    raise ValueError(f"split must be 'train' or 'val', not {split!r}")


def iter_texts(paths):
    """Yield the documents of the given shards, in order, one string per row."""
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=["text"]):
            yield from batch.column(0).to_pylist()
