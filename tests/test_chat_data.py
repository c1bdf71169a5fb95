"""Chat data: hub parquet exports over a real local HTTP server (normal / drop / corrupt), and the built-in world."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from http_server import http_server  # noqa: F401  (fixture)

from snakechat import chat_data
from snakechat.evaluate import tasks
from snakechat.data.download import DownloadError

MESSAGES = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))


def hub_files(root):
    """Small files in the column layouts of the hub's parquet exports, under <repo>/<subset>/<split>/0000.parquet."""
    def put(rel, table):
        path = root / rel / "0000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)

    chats = [[{"content": f"hello {i}", "role": "user"}, {"content": f"hi {i}", "role": "assistant"}] for i in range(5)]
    put("smol-smoltalk/default/train", pa.table({"messages": pa.array(chats, type=MESSAGES), "source": ["s"] * 5}))
    put("mmlu/auxiliary_train/train", pa.table({"train": [{"answer": 2, "choices": ["a", "b", "c"], "question": f"aux {i}", "subject": ""} for i in range(3)]}))
    put("mmlu/all/test", pa.table({"question": ["q?"], "subject": ["law"], "choices": [["w", "x", "y", "z"]], "answer": pa.array([3], pa.int64())}))
    put("gsm8k/main/train", pa.table({"question": ["Two and two?"], "answer": ["2+2 = <<2+2=4>>4\n#### 4"]}))
    put("ai2_arc/ARC-Easy/test", pa.table({"id": ["a"], "question": ["Hot?"], "choices": [{"text": ["sun", "ice"], "label": ["A", "B"]}], "answerKey": ["A"]}))
    put("openai_humaneval/openai_humaneval/test", pa.table({"task_id": ["HumanEval/0"], "prompt": ["def f():\n"], "canonical_solution": ["    return 1\n"], "test": ["def check(c):\n    assert c() == 1\n"], "entry_point": ["f"]}))


def spec(server):
    url = lambda rel: server.url(rel + "/0000.parquet")  # noqa: E731
    return {
        "smoltalk": {"format": "smoltalk", "splits": {"train": [url("smol-smoltalk/default/train")]}},
        "mmlu_aux": {"format": "mmlu", "splits": {"train": [url("mmlu/auxiliary_train/train")]}},
        "mmlu": {"format": "mmlu", "splits": {"test": [url("mmlu/all/test")]}},
        "gsm8k": {"format": "gsm8k", "splits": {"train": [url("gsm8k/main/train")]}},
        "arc_easy": {"format": "arc", "splits": {"test": [url("ai2_arc/ARC-Easy/test")]}},
        "humaneval": {"format": "humaneval", "splits": {"test": [url("openai_humaneval/openai_humaneval/test")]}},
    }


def run(out, task_spec, *extra):
    chat_data.main(["--out", str(out), "--kind", "http", "--tasks", json.dumps(task_spec), "--retries", "2", "--timeout", "5", "--backoff", "0", "--workers", "2", *extra])
    return json.loads(out.read_text())


def test_hub_exports_become_unified_tasks(http_server, tmp_path):
    hub_files(http_server.root)
    out = tmp_path / "nanochat" / "tasks.json"
    index = run(out, spec(http_server))["tasks"]
    assert {t: (e["kind"], sorted(e["splits"])) for t, e in index.items()} == {
        "smoltalk": ("conversation", ["train"]), "mmlu_aux": ("mc", ["train"]), "mmlu": ("mc", ["test"]),
        "gsm8k": ("gsm8k", ["train"]), "arc_easy": ("mc", ["test"]), "humaneval": ("humaneval", ["test"]),
    }
    assert index["mmlu"]["random_baseline"] == 0.25 and index["arc_easy"]["random_baseline"] == 0.5 and index["gsm8k"]["random_baseline"] == 0.0
    assert index["smoltalk"]["rows"] == {"train": 5}
    kind, aux = tasks.load_split(out.parent, "mmlu_aux", "train")
    assert aux[0] == {"question": "aux 0", "choices": ["a", "b", "c"], "answer": 2}
    assert tasks.load_split(out.parent, "arc_easy", "test")[1] == [{"question": "Hot?", "choices": ["sun", "ice"], "answer": 0, "letters": ["A", "B"]}]
    mix = tasks.mixture(out.parent, {"smoltalk": {"epochs": 1}, "gsm8k": {"epochs": 2}}, "train", seed=0)
    assert len(mix) == 7


def test_dropped_connections_resume(http_server, tmp_path):
    hub_files(http_server.root)
    http_server.mode = "drop"
    index = run(tmp_path / "c" / "tasks.json", spec(http_server))["tasks"]
    assert len(index) == 6
    assert len([r for r in http_server.requests if r[1]]) == 6  # every file resumed once


def test_corrupt_export_names_the_url_and_leaves_nothing_taken_as_done(http_server, tmp_path):
    hub_files(http_server.root)
    http_server.mode = "corrupt"
    out = tmp_path / "c" / "tasks.json"
    with pytest.raises(DownloadError, match=r"http://127\.0\.0\.1:\d+/.*/0000\.parquet: downloaded file is corrupt"):
        run(out, spec(http_server))
    assert not out.exists()
    assert [p for p in (tmp_path / "c").rglob("*") if p.is_file()] == []


def test_wrong_layout_is_rejected_with_the_column_named(http_server, tmp_path):
    path = http_server.root / "gsm8k" / "0000.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"problem": ["x"], "solution": ["#### 1"]}), path)
    with pytest.raises(DownloadError, match="missing field 'question'"):
        run(tmp_path / "c" / "tasks.json", {"gsm8k": {"format": "gsm8k", "splits": {"train": [http_server.url("gsm8k/0000.parquet")]}}})


def test_rerun_fetches_only_missing_files_and_adds_world_tasks(http_server, tmp_path):
    hub_files(http_server.root)
    out = tmp_path / "c" / "tasks.json"
    task_spec = spec(http_server)
    run(out, {k: task_spec[k] for k in ("gsm8k", "mmlu")})
    http_server.requests.clear()
    index = run(out, {k: task_spec[k] for k in ("gsm8k", "mmlu", "arc_easy")}, "--world-tasks", '["identity"]')["tasks"]
    assert [r[0] for r in http_server.requests] == ["ai2_arc/ARC-Easy/test/0000.parquet"]
    assert index["identity"]["kind"] == "conversation" and index["identity"]["rows"]["train"] > 0
    assert tasks.load_split(out.parent, "identity", "test")[1]


def test_synthetic_chat_data(tmp_path):
    out = tmp_path / "tinyworld" / "tasks.json"
    chat_data.main(["--out", str(out), "--kind", "synthetic", "--seed", "0"])
    index = json.loads(out.read_text())["tasks"]
    assert {"conversation", "mc", "gsm8k"} <= {e["kind"] for e in index.values()}
    assert chat_data.check_chat_dir(out.parent) == {t: e["rows"] for t, e in index.items()}
    assert not list(out.parent.glob(".world.*"))


def test_a_cached_file_with_one_byte_flipped_is_named_and_fetched_again(http_server, tmp_path, capsys):
    hub_files(http_server.root)
    out = tmp_path / "c" / "tasks.json"
    task_spec = {k: spec(http_server)[k] for k in ("gsm8k", "mmlu")}
    run(out, task_spec)
    [raw] = (out.parent / "raw" / "mmlu" / "test").glob("*.parquet")
    data = bytearray(raw.read_bytes())
    data[len(data) // 2] ^= 0x01
    raw.write_bytes(data)
    http_server.requests.clear()
    capsys.readouterr()
    index = run(out, task_spec)
    assert f"{raw}: cached file rejected: sha256 " in capsys.readouterr().out
    assert [r[0] for r in http_server.requests] == ["mmlu/all/test/0000.parquet"]
    assert raw.read_bytes() == (http_server.root / "mmlu/all/test/0000.parquet").read_bytes()
    assert index["tasks"]["mmlu"]["rows"] == {"test": 1}


def test_the_2026_sft_mixture_from_the_shipped_entry(http_server, tmp_path):
    """The shipped `nanochat-2026` chat data against a local server laid out as the Hub's parquet exports
    (datasets/<org>/<repo>/resolve/refs%2Fconvert%2Fparquet/<subset>/<split>/0000.parquet), then gpt2's SFT
    mixture over it: SmolTalk once, MMLU's auxiliary train 3 times, GSM8K 4 times; validation on the test
    splits of SmolTalk and GSM8K."""
    from pathlib import Path

    import yaml

    from snakechat.pipeline import configcheck
    from snakechat.train import chat_stage

    root = Path(__file__).resolve().parents[1]
    cfg = configcheck.validate(yaml.safe_load((root / "config/config.yaml").read_text()), root / "workflow/schemas/config.schema.yaml")
    entry, mixture = cfg["chat_data"]["nanochat-2026"], cfg["models"]["gpt2"]["sft"]["mixture"]
    assert cfg["models"]["gpt2"]["chat_data"] == "nanochat-2026" and entry["world_tasks"] == []
    assert mixture == {"smoltalk": {"epochs": 1}, "mmlu_aux": {"epochs": 3}, "gsm8k": {"epochs": 4}}
    chats = lambda tag, n: pa.table({"messages": pa.array([[{"content": f"{tag} {i}", "role": "user"}, {"content": "ok", "role": "assistant"}] for i in range(n)], type=MESSAGES)})  # noqa: E731
    mc = {"question": ["Which?"], "subject": ["law"], "choices": [["w", "x", "y", "z"]], "answer": pa.array([3], pa.int64())}
    arc = {"id": ["a"], "question": ["Hot?"], "choices": [{"text": ["sun", "ice"], "label": ["A", "B"]}], "answerKey": ["A"]}
    tables = {
        ("smoltalk", "train"): chats("smol", 5), ("smoltalk", "test"): chats("smol test", 2),
        ("mmlu_aux", "train"): pa.table({"train": [{"answer": 2, "choices": ["a", "b", "c"], "question": f"aux {i}", "subject": ""} for i in range(3)]}),
        ("mmlu", "test"): pa.table(mc), ("arc_easy", "test"): pa.table(arc), ("arc_challenge", "test"): pa.table(arc),
        ("gsm8k", "train"): pa.table({"question": ["Two and two?", "Three and one?"], "answer": ["<<2+2=4>>4\n#### 4", "<<3+1=4>>4\n#### 4"]}),
        ("gsm8k", "test"): pa.table({"question": ["One and one?"], "answer": ["<<1+1=2>>2\n#### 2"]}),
        ("humaneval", "test"): pa.table({"task_id": ["HumanEval/0"], "prompt": ["def f():\n"], "canonical_solution": ["    return 1\n"], "test": ["def check(c):\n    assert c() == 1\n"], "entry_point": ["f"]}),
    }
    prefix = "https://huggingface.co/"
    local = {}
    for task, spec in entry["tasks"].items():
        splits = {}
        for split, urls in spec["splits"].items():
            (url,) = urls
            assert url.startswith(prefix + "datasets/") and "/resolve/refs%2Fconvert%2Fparquet/" in url and url.endswith("/0000.parquet")
            path = http_server.root / url.removeprefix(prefix)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(tables[task, split], path)
            splits[split] = [http_server.url(url.removeprefix(prefix))]
        local[task] = {"format": spec["format"], "splits": splits}
    out = tmp_path / "nanochat-2026" / "tasks.json"
    index = run(out, local)["tasks"]
    assert sorted(index) == sorted({task for task, _ in tables})
    train = tasks.mixture(out.parent, mixture, "train", seed=0)
    firsts = [c["messages"][0]["content"] for c in train]
    assert len(train) == 5 + 3 * 3 + 4 * 2
    assert sum(f.startswith("smol ") for f in firsts) == 5
    assert sum(f.count("aux ") for f in firsts) == 9 and sum("and" in f for f in firsts) == 8
    chat_stage.check_chat_data(out.parent, list(mixture), "train")
    assert len(chat_stage.validation_conversations(out.parent, mixture, 0)) == 2 + 1
