"""Pretraining shards: the http source against a real local server, the synthetic source, and the readers."""

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from http_server import http_server  # noqa: F401  (fixture)

from snakechat import dataset
from snakechat.data import shards
from snakechat.data.download import DownloadError

DOCS = [[f"shard {s} document {i}: " + "words " * (i % 7) for i in range(1500 + 100 * s)] for s in range(3)]


def serve_shards(server):
    for s, docs in enumerate(DOCS):
        dataset.write_shard(server.root / dataset.shard_name(s), docs)
    return server.url("shard_{index:05d}.parquet")


def run_http(manifest, url, *extra):
    dataset.main(["--kind", "http", "--manifest", str(manifest), "--url", url, "--shards", str(len(DOCS)), "--retries", "2", "--timeout", "5", "--backoff", "0", "--workers", "2", *extra])
    return json.loads(manifest.read_text())


def test_http_shards_download_into_manifest_and_read_back(http_server, tmp_path):
    url = serve_shards(http_server)
    manifest_path = tmp_path / "data" / "manifest.json"
    manifest = run_http(manifest_path, url)
    assert [s["file"] for s in manifest["shards"]] == ["shard_00000.parquet", "shard_00001.parquet", "shard_00002.parquet"]
    for s, entry in enumerate(manifest["shards"]):
        served = (http_server.root / entry["file"]).read_bytes()
        assert entry["url"] == url.format(index=s)
        assert entry["bytes"] == len(served) and entry["sha256"] == hashlib.sha256(served).hexdigest()
        assert entry["rows"] == len(DOCS[s])
    train, val = shards.shard_paths(manifest_path, "train"), shards.shard_paths(manifest_path, "val")
    assert [p.name for p in train] == ["shard_00000.parquet", "shard_00001.parquet"]
    assert [p.name for p in val] == ["shard_00002.parquet"]
    assert list(shards.iter_texts(train)) == DOCS[0] + DOCS[1]
    assert list(shards.iter_texts(val)) == DOCS[2]
    assert sorted(p.name for p in manifest_path.parent.iterdir() if not p.name.endswith(".download.json") and p.name != shards.STAMPS) == ["manifest.json", *[e["file"] for e in manifest["shards"]]]


def test_dropped_connections_are_resumed(http_server, tmp_path):
    url = serve_shards(http_server)
    http_server.mode = "drop"
    manifest = run_http(tmp_path / "manifest.json", url)
    assert [s["rows"] for s in manifest["shards"]] == [len(d) for d in DOCS]
    ranged = [r for r in http_server.requests if r[1]]
    assert len(ranged) == len(DOCS)


def test_corrupt_shard_names_the_url_and_leaves_nothing_behind(http_server, tmp_path):
    url = serve_shards(http_server)
    http_server.mode = "corrupt"
    out = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"http://127\.0\.0\.1:\d+/shard_0000[0-2]\.parquet: downloaded file is corrupt"):
        run_http(out / "manifest.json", url)
    assert list(out.iterdir()) == []


def test_rerun_after_failure_keeps_verified_shards(http_server, tmp_path):
    url = serve_shards(http_server)
    (http_server.root / "shard_00002.parquet").rename(http_server.root / "later.parquet")
    out = tmp_path / "data"
    with pytest.raises(DownloadError, match="shard_00002.parquet: HTTP 404"):
        run_http(out / "manifest.json", url)
    assert sorted(p.name for p in out.iterdir()) == [".shard_00000.parquet.download.json", ".shard_00001.parquet.download.json", "shard_00000.parquet", "shard_00001.parquet"]
    (http_server.root / "later.parquet").rename(http_server.root / "shard_00002.parquet")
    http_server.requests.clear()
    run_http(out / "manifest.json", url)
    assert [r[0] for r in http_server.requests] == ["shard_00002.parquet"]


def test_configured_sha256_that_does_not_match_is_an_error(http_server, tmp_path):
    url = serve_shards(http_server)
    with pytest.raises(DownloadError, match="shard_00001.parquet: sha256 mismatch"):
        run_http(tmp_path / "manifest.json", url, "--sha256", json.dumps({"shard_00001.parquet": "ab" * 32}))


def test_file_without_text_column_is_rejected(http_server, tmp_path):
    pq.write_table(pa.table({"content": ["a", "b"]}), http_server.root / "shard_00000.parquet")
    with pytest.raises(DownloadError, match="no `text` column"):
        dataset.fetch_shards(tmp_path / "data", http_server.url("shard_{index:05d}.parquet"), 1, backoff=0)
    assert list((tmp_path / "data").iterdir()) == []


def test_write_shard_is_byte_identical_and_uses_1024_row_groups(tmp_path):
    docs = [f"doc {i}" for i in range(2500)]
    dataset.write_shard(tmp_path / "a.parquet", docs)
    dataset.write_shard(tmp_path / "b.parquet", docs)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1024, 1024, 452]
    assert pq.read_schema(tmp_path / "a.parquet").names == ["text"]


def test_shard_paths_rejects_unknown_split(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": [{"file": "a"}, {"file": "b"}]}))
    with pytest.raises(ValueError, match="'test'"):
        shards.shard_paths(tmp_path / "manifest.json", "test")


def test_synthetic_shards_are_byte_identical_for_a_seed(tmp_path):
    def build(name, seed):
        dataset.main(["--kind", "synthetic", "--manifest", str(tmp_path / name / "manifest.json"), "--seed", str(seed), "--shards", "2", "--docs-per-shard", "1100"])
        return json.loads((tmp_path / name / "manifest.json").read_text())

    a, b, c = build("a", 0), build("b", 0), build("c", 1)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert a["shards"][0]["sha256"] != c["shards"][0]["sha256"]
    assert [s["rows"] for s in a["shards"]] == [1100, 1100]
    meta = pq.ParquetFile(tmp_path / "a" / "shard_00000.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1024, 76]
    train = list(shards.iter_texts(shards.shard_paths(tmp_path / "a" / "manifest.json", "train")))
    val = list(shards.iter_texts(shards.shard_paths(tmp_path / "a" / "manifest.json", "val")))
    assert len(train) == len(val) == 1100 and all(isinstance(t, str) and t for t in train + val)
    assert train != val  # the validation shard holds other documents, not a copy


def test_bad_url_template_is_refused_before_any_download(tmp_path, capsys):
    with pytest.raises(SystemExit):
        dataset.main(["--kind", "http", "--manifest", str(tmp_path / "manifest.json"), "--shards", "2", "--url", "http://127.0.0.1:1/{idx}.parquet"])
    assert "must be a template whose only field is {index}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_cached_shard_with_one_byte_flipped_is_named_and_fetched_again(http_server, tmp_path, capsys):
    url = serve_shards(http_server)
    out = tmp_path / "data"
    run_http(out / "manifest.json", url)
    (out / "manifest.json").unlink()  # as Snakemake does before it runs the job again
    shard = out / "shard_00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(data)
    http_server.requests.clear()
    capsys.readouterr()
    manifest = run_http(out / "manifest.json", url)
    log = capsys.readouterr().out
    assert f"{shard}: cached file rejected: sha256 " in log
    assert [r[0] for r in http_server.requests] == ["shard_00001.parquet"]  # only the bad one
    served = (http_server.root / "shard_00001.parquet").read_bytes()
    assert shard.read_bytes() == served and manifest["shards"][1]["sha256"] == hashlib.sha256(served).hexdigest()
    assert f"{out / 'shard_00000.parquet'}: already here" in log


def test_a_shard_nobody_recorded_is_not_trusted(http_server, tmp_path, capsys):
    """A file at a shard's name that this download did not verify (copied in, or left by an older run) is fetched."""
    url = serve_shards(http_server)
    out = tmp_path / "data"
    out.mkdir()
    dataset.write_shard(out / "shard_00000.parquet", ["not the served documents"])
    run_http(out / "manifest.json", url)
    assert "shard_00000.parquet: cached file rejected: no record of its download" in capsys.readouterr().out
    assert pq.read_table(out / "shard_00000.parquet").column("text").to_pylist() == DOCS[0]


def shipped_entry(section, name):
    from snakechat.pipeline import configcheck
    root = Path(__file__).resolve().parents[1]
    cfg = configcheck.validate(yaml.safe_load((root / "config/config.yaml").read_text()), root / "workflow/schemas/config.schema.yaml")
    return cfg[section][name]


def test_climbmix_entry_downloads_its_train_shards_and_the_separate_val_shard(http_server, tmp_path):
    """The shipped `climbmix` entry against a local server laid out as the Hub repo
    (datasets/karpathy/climbmix-400b-shuffle/resolve/main/shard_XXXXX.parquet), cut to 2 training shards:
    shards 0 and 1 train, 06542 (the server's last) validates, each kept under its server name."""
    entry = shipped_entry("datasets", "climbmix")
    assert (entry["shards"], entry["val_index"]) == (171, 6542)
    prefix = "https://huggingface.co/"
    assert entry["url"].startswith(prefix)
    layout = http_server.root / entry["url"].removeprefix(prefix)
    layout.parent.mkdir(parents=True)
    served = {0: DOCS[0], 1: DOCS[1], 2: ["not fetched: shard 2 would be training data"], 6542: DOCS[2]}
    for index, docs in served.items():
        dataset.write_shard(Path(str(layout).format(index=index)), docs)
    flags = {**entry, "url": http_server.url(entry["url"].removeprefix(prefix)), "shards": 3, "retries": 1, "backoff": 0, "workers": 2}
    manifest_path = tmp_path / "climbmix" / "manifest.json"
    dataset.main(["--manifest", str(manifest_path)] + [a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", json.dumps(v) if isinstance(v, dict) else str(v))])
    manifest = json.loads(manifest_path.read_text())
    assert manifest["splits"] == {"train": ["shard_00000.parquet", "shard_00001.parquet"], "val": ["shard_06542.parquet"]}
    assert manifest["shards"][-1]["url"].endswith("/datasets/karpathy/climbmix-400b-shuffle/resolve/main/shard_06542.parquet")
    assert list(shards.iter_texts(shards.shard_paths(manifest_path, "val"))) == DOCS[2]
    assert list(shards.iter_texts(shards.shard_paths(manifest_path, "train"))) == DOCS[0] + DOCS[1]
    assert manifest["provenance"]["config"]["val_index"] == 6542
    assert sorted(r[0].rsplit("/", 1)[1] for r in http_server.requests) == ["shard_00000.parquet", "shard_00001.parquet", "shard_06542.parquet"]


def test_a_val_index_among_the_training_shards_is_refused_before_any_download(tmp_path, capsys):
    with pytest.raises(SystemExit):
        dataset.main(["--kind", "http", "--manifest", str(tmp_path / "manifest.json"), "--shards", "171", "--val-index", "100", "--url", "http://127.0.0.1:1/shard_{index:05d}.parquet"])
    assert "--val-index: val_index 100 is one of the training shards 0 … 169: it must be at least shards - 1 = 170" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def synthetic(tmp_path, count=3):
    manifest = tmp_path / "d" / "manifest.json"
    dataset.main(["--kind", "synthetic", "--manifest", str(manifest), "--seed", "0", "--shards", str(count), "--docs-per-shard", "64"])
    return manifest


def test_a_swapped_duplicated_or_edited_shard_is_refused_naming_it(tmp_path):
    manifest = synthetic(tmp_path)
    d = manifest.parent
    first, second, last = (d / f"shard_0000{i}.parquet" for i in range(3))
    assert shards.shard_paths(manifest, "train") == [first, second]
    good = {p: p.read_bytes() for p in (first, second, last)}
    second.rename(d / "tmp")
    last.rename(second)
    (d / "tmp").rename(last)  # train and validation swapped
    for split, path in (("train", second), ("val", last)):
        with pytest.raises(shards.ShardError, match=rf"{path}: .*{manifest}"):
            shards.shard_paths(manifest, split)
    for path, data in good.items():
        path.write_bytes(data)
    first.write_bytes(good[second][:len(good[first])].ljust(len(good[first]), b"\0"))  # another shard's bytes, same size
    with pytest.raises(shards.ShardError, match=rf"{first}: sha256 [0-9a-f]+ is not the .* that {manifest} records"):
        shards.shard_paths(manifest, "train")
    first.write_bytes(good[first])
    edited = bytearray(good[last])
    edited[len(edited) // 2] ^= 1
    last.write_bytes(bytes(edited))  # one bit, in place
    with pytest.raises(shards.ShardError, match=rf"{last}: sha256"):
        shards.shard_paths(manifest, "val")
    last.write_bytes(good[last])
    assert shards.shard_paths(manifest, "val") == [last]
    last.unlink()
    with pytest.raises(shards.ShardError, match=rf"{last}: shard listed in {manifest} cannot be read"):
        shards.shard_paths(manifest, "val")


def test_a_verified_shard_is_not_hashed_again_until_it_changes(tmp_path, monkeypatch):
    manifest = synthetic(tmp_path)
    hashed = []
    real = shards.hash_file
    monkeypatch.setattr(shards, "hash_file", lambda path: hashed.append(path.name) or real(path))
    shards.shard_paths(manifest, "train")
    assert hashed == []  # the dataset stage recorded its hashes
    (manifest.parent / shards.STAMPS).unlink()
    shards.shard_paths(manifest, "train")
    shards.shard_paths(manifest, "train")
    assert hashed == ["shard_00000.parquet", "shard_00001.parquet"]
    path = manifest.parent / "shard_00001.parquet"
    path.write_bytes(path.read_bytes())  # same bytes, a new mtime: hashed once more
    shards.shard_paths(manifest, "train")
    assert hashed[2:] == ["shard_00001.parquet"]


def test_a_read_error_names_the_shard(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name, data in (("a.parquet", b"PAR1 not really"), ("b.parquet", b"validation")):
        (d / name).write_bytes(data)
    entries = [{"file": n, "bytes": (d / n).stat().st_size, "sha256": hashlib.sha256((d / n).read_bytes()).hexdigest()} for n in ("a.parquet", "b.parquet")]
    (d / "manifest.json").write_text(json.dumps({"shards": entries}))
    paths = shards.shard_paths(d / "manifest.json", "train")
    with pytest.raises(shards.ShardError, match=rf"{d / 'a.parquet'}: cannot read the shard"):
        list(shards.iter_texts(paths))
    from snakechat.train.dataloader import read_unit

    with pytest.raises(ValueError, match=rf"parquet shard {d / 'a.parquet'}"):
        read_unit((str(d / "a.parquet"), 0, 0, 1))


def test_a_mirror_serving_one_shard_twice_is_refused(http_server, tmp_path):
    url = serve_shards(http_server)
    (http_server.root / dataset.shard_name(2)).write_bytes((http_server.root / dataset.shard_name(0)).read_bytes())
    with pytest.raises(SystemExit, match="shards shard_00000.parquet, shard_00002.parquet have the same content"):
        run_http(tmp_path / "manifest.json", url)
    assert not (tmp_path / "manifest.json").exists()
