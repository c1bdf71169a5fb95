"""Datasets on disk as snakechat.dataset lays them out (parquet shards and their manifest.json, the
last shard validation), for the tests that tokenize or train: any texts, or the built-in world's
corpus with a tokenizer trained on it."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq

from snakechat.world import corpus as world_corpus
from snakechat.model.tokenizer import Tokenizer


def write_dataset(root, shards, row_group_size=1024):
    """One shard_NNNNN.parquet per list of texts in `shards`, and the manifest; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, texts in enumerate(shards):
        name = f"shard_{i:05d}.parquet"
        pq.write_table(pa.table({"text": texts}), root / name, row_group_size=row_group_size)
        entries.append({"file": name, "rows": len(texts), "bytes": (root / name).stat().st_size,
                        "sha256": hashlib.sha256((root / name).read_bytes()).hexdigest()})
    (root / "manifest.json").write_text(json.dumps({"shards": entries}))
    return root / "manifest.json"


def write_world_dataset(root):
    """900 world documents (seed 0) in three shards of 300 with row groups of 64, and a 512-id
    tokenizer trained on the first 600 saved as root/tok; returns the tokenizer."""
    docs = list(world_corpus.corpus_documents(0, 900))
    write_dataset(root, [docs[i * 300:(i + 1) * 300] for i in range(3)], row_group_size=64)
    tok = Tokenizer.train(docs[:600], 512)
    tok.save(root / "tok")
    return tok
