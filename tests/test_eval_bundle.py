"""Eval bundles: the zip download (real layout, local HTTP server: normal / drop / corrupt) and the built-in one."""

import hashlib
import json
import zipfile

import pytest
import yaml
from http_server import http_server  # noqa: F401  (fixture)

from snakechat import eval_bundle
from snakechat.evaluate import core_bundle
from snakechat.data.download import DownloadError

CORE = {"icl_tasks": [
    {"label": "arc_easy", "dataset_uri": "world_knowledge/arc_easy.jsonl", "num_fewshot": [10], "icl_task_type": "multiple_choice", "continuation_delimiter": "\nAnswer: "},
    {"label": "lambada_openai", "dataset_uri": "language_understanding/lambada_openai.jsonl", "num_fewshot": [0], "icl_task_type": "language_modeling"},
]}
FILES = {
    "eval_data/world_knowledge/arc_easy.jsonl": json.dumps({"query": "Question: Warm?", "choices": ["snow", "sun"], "gold": 1}) + "\n",
    "eval_data/language_understanding/lambada_openai.jsonl": json.dumps({"context": "The cat sat on the", "continuation": " mat"}) + "\n" * 2,
    "eval_meta_data.csv": "Eval Task,Task Category,Task Type,#shots,#datapoints,Random baseline,Centered Metric?,Description\narc_easy,wk,mc,10,1,25,,x\nlambada_openai,lu,lm,0,1,0,,y\n",
}


def make_zip(path, top="eval_bundle/", core=CORE, files=FILES):
    """A small zip in the layout of the real eval_bundle.zip (everything under one top folder)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(top + "core.yaml", yaml.safe_dump(core))
        for name, text in files.items():
            z.writestr(top + name, text)
    return path


def run(out, url, *extra):
    eval_bundle.main(["--out", str(out), "--kind", "http", "--url", url, "--retries", "2", "--timeout", "5", "--backoff", "0", *extra])


def test_zip_is_downloaded_and_unpacked_to_the_normal_layout(http_server, tmp_path):
    digest = hashlib.sha256(make_zip(http_server.root / "eval_bundle.zip").read_bytes()).hexdigest()
    out = tmp_path / "eval_bundle" / "core" / "core.yaml"
    run(out, http_server.url("eval_bundle.zip"), "--sha256", digest)
    assert yaml.safe_load(out.read_text()) == CORE
    assert (out.parent / "eval_data/world_knowledge/arc_easy.jsonl").read_text() == FILES["eval_data/world_knowledge/arc_easy.jsonl"]
    assert sorted(p.name for p in (tmp_path / "eval_bundle").iterdir()) == [".core.zip.download.json", "core", "core.zip"]  # no temp dirs left
    source = json.loads((out.parent / "source.json").read_text())
    assert source["source"]["sha256"] == digest and source["tasks"] == {"arc_easy": 1, "lambada_openai": 1}
    http_server.requests.clear()
    run(out, http_server.url("eval_bundle.zip"))  # a re-run uses the verified zip
    assert http_server.requests == []


def test_flat_zip_and_dropped_connection(http_server, tmp_path):
    make_zip(http_server.root / "flat.zip", top="")
    http_server.mode = "drop"
    out = tmp_path / "b" / "core.yaml"
    run(out, http_server.url("flat.zip"))
    assert out.is_file() and any(r[1] for r in http_server.requests)


def test_corrupt_zip_names_the_url_and_leaves_nothing(http_server, tmp_path):
    make_zip(http_server.root / "eval_bundle.zip")
    http_server.mode = "corrupt"
    out = tmp_path / "eval_bundle" / "core" / "core.yaml"
    url = http_server.url("eval_bundle.zip")
    with pytest.raises(DownloadError, match=f"{url}: downloaded file is corrupt"):
        run(out, url)
    assert not out.exists() and not (tmp_path / "eval_bundle" / "core.zip").exists()
    assert [p.name for p in (tmp_path / "eval_bundle").iterdir()] == []


def test_incomplete_bundle_is_rejected_naming_the_task(http_server, tmp_path):
    files = {k: v for k, v in FILES.items() if "lambada" not in k}
    make_zip(http_server.root / "eval_bundle.zip", files=files)
    out = tmp_path / "eval_bundle" / "core" / "core.yaml"
    with pytest.raises(ValueError, match=r"core.yaml: icl_tasks\[1\] \(lambada_openai\): dataset_uri 'language_understanding/lambada_openai.jsonl' not found"):
        run(out, http_server.url("eval_bundle.zip"))
    assert [p.name for p in (tmp_path / "eval_bundle").iterdir()] == []


def test_zip_without_core_yaml_is_corrupt(http_server, tmp_path):
    with zipfile.ZipFile(http_server.root / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(DownloadError, match="no core.yaml in the zip"):
        run(tmp_path / "x" / "core.yaml", http_server.url("other.zip"))


def test_reinstall_replaces_a_stale_bundle(tmp_path):
    zip_path = make_zip(tmp_path / "b.zip")
    out_dir = tmp_path / "bundle"
    (out_dir / "eval_data").mkdir(parents=True)
    (out_dir / "stale.txt").write_text("from an older bundle")
    eval_bundle.from_zip(out_dir, zip_path)
    assert not (out_dir / "stale.txt").exists() and (out_dir / "core.yaml").is_file()


def test_synthetic_bundle_is_complete(tmp_path):
    out = tmp_path / "tinyworld" / "core.yaml"
    eval_bundle.main(["--out", str(out), "--kind", "synthetic", "--seed", "0"])
    rows = eval_bundle.check_bundle(out.parent)
    types = {t["icl_task_type"] for t in yaml.safe_load(out.read_text())["icl_tasks"]}
    assert types == set(core_bundle.TASK_TYPES) and all(n > 0 for n in rows.values())


def test_a_cached_zip_with_one_byte_flipped_is_named_and_fetched_again(http_server, tmp_path, capsys):
    served = make_zip(http_server.root / "eval_bundle.zip").read_bytes()
    out = tmp_path / "eval_bundle" / "core" / "core.yaml"
    run(out, http_server.url("eval_bundle.zip"))
    cached = tmp_path / "eval_bundle" / "core.zip"
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x01
    cached.write_bytes(data)
    http_server.requests.clear()
    capsys.readouterr()
    run(out, http_server.url("eval_bundle.zip"))
    assert f"{cached}: cached file rejected: sha256 " in capsys.readouterr().out
    assert [r[0] for r in http_server.requests] == ["eval_bundle.zip"]
    assert cached.read_bytes() == served
    assert json.loads((out.parent / "source.json").read_text())["source"]["sha256"] == hashlib.sha256(served).hexdigest()


def bomb_zip(path, unpacked_bytes):
    """The bundle's zip with one more member of zeros: a few KB that unpack to `unpacked_bytes`."""
    make_zip(path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("eval_bundle/eval_data/padding.bin", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(unpacked_bytes >> 20):
                member.write(block)
    return path


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(http_server, tmp_path):
    zip_path = bomb_zip(http_server.root / "bomb.zip", 64 << 20)
    assert zip_path.stat().st_size < 200_000
    out = tmp_path / "eval_bundle" / "core" / "core.yaml"
    with pytest.raises(DownloadError, match=r"member eval_bundle/eval_data/padding.bin unpacks \d+ bytes to 67108864 \(over max_ratio 100"):
        run(out, http_server.url("bomb.zip"))
    assert [p.name for p in (tmp_path / "eval_bundle").iterdir()] == []
    with pytest.raises(DownloadError, match=r"it unpacks to \d+ bytes, more than max_unpacked_bytes 1000000"):
        run(out, http_server.url("bomb.zip"), "--max-ratio", "100000", "--max-unpacked-bytes", "1000000")
    with pytest.raises(ValueError, match="over max_ratio 100"):  # a zip already on disk is checked before it is unpacked too
        eval_bundle.from_zip(tmp_path / "b", zip_path)
    assert not (tmp_path / "b").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.")] == []
    run(out, http_server.url("bomb.zip"), "--max-ratio", "100000")  # within caps set wide enough it installs
    assert (out.parent / "eval_data/padding.bin").stat().st_size == 64 << 20
