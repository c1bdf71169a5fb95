"""The data rules under Snakemake: a failed download re-runs without fetching the shards it already
verified, except one that no longer matches the record of its download."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from http_server import http_server  # noqa: F401  (fixture)

from snakechat import dataset

ROOT = Path(__file__).resolve().parents[1]


def snakemake(workdir, target):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "-c1", target],
        capture_output=True, text=True, env=env,
    )


def test_download_rule_resumes_after_a_failure(http_server, tmp_path):
    for i in range(3):
        dataset.write_shard(http_server.root / dataset.shard_name(i), [f"shard {i} doc {j}" for j in range(50)])
    (http_server.root / "shard_00002.parquet").rename(http_server.root / "later")
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["datasets"]["web"] = {"kind": "http", "url": http_server.url("shard_{index:05d}.parquet"), "shards": 3, "retries": 0, "backoff": 0}
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    (work / "config/config.yaml").write_text(yaml.safe_dump(config))
    out = work / "results/data/web"

    first = snakemake(work, "results/data/web/manifest.json")
    assert first.returncode != 0
    assert "shard_00002.parquet: HTTP 404" in (work / "logs/dataset/web.log").read_text()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["shard_00000.parquet", "shard_00001.parquet"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".shard_00000.parquet.download.json", ".shard_00001.parquet.download.json"]

    data = bytearray((out / "shard_00001.parquet").read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte of a kept shard goes bad in between
    (out / "shard_00001.parquet").write_bytes(data)
    (http_server.root / "later").rename(http_server.root / "shard_00002.parquet")
    http_server.requests.clear()
    second = snakemake(work, "results/data/web/manifest.json")
    assert second.returncode == 0, second.stderr[-2000:]
    assert sorted(r[0] for r in http_server.requests) == ["shard_00001.parquet", "shard_00002.parquet"]
    assert "results/data/web/shard_00001.parquet: cached file rejected: sha256" in (work / "logs/dataset/web.log").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [50, 50, 50]


def test_a_dry_run_names_a_shard_gone_or_cut(tmp_path):
    from shipped_workflow import dry_run, workflow_copy

    work = workflow_copy(tmp_path)
    manifest = work / "results/data/tinyworld/manifest.json"
    manifest.parent.mkdir(parents=True)
    for i in range(3):
        dataset.write_shard(manifest.parent / dataset.shard_name(i), [f"shard {i} doc {j}" for j in range(20)])
    entries = [dataset.shard_entry(manifest.parent / dataset.shard_name(i)) for i in range(3)]
    manifest.write_text(json.dumps({"shards": entries}))
    (manifest.parent / "shard_00001.parquet").unlink()
    code, out = dry_run(work, "results/tokenizer/tinyworld-4k/tokenizer.json")
    assert code != 0 and "dataset 'tinyworld': results/data/tinyworld/shard_00001.parquet: missing" in out, out[-3000:]
    assert "Delete results/data/tinyworld/manifest.json and the dataset rule writes or fetches the shards again" in out
