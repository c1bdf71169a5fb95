"""chat_eval: scoring of each task kind, the CSV and sidecar, published task files, ranks, the sandbox."""

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from snakechat import chat_eval
from snakechat.evaluate import humaneval_sandbox
from snakechat.evaluate import tasks
from snakechat.model.conversation import render_conversation
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)
from tiny_chat_model import memorize, random_gpt, tokenizer, write_checkpoint

MC = [
    {"question": "What pet does Nina Frost have?", "choices": ["rabbit", "tortoise", "horse", "dog"], "answer": 1},
    {"question": "How old is Ruby Stone?", "choices": ["35", "30", "36"], "answer": 2},
    {"question": "Where does Leo Brook live?", "choices": ["Quill", "Zor"], "answer": 0},
]
GSM8K = [
    {"question": "Omar has 3 books. He buys 8 more. How many books does Omar have now?", "answer": "He has 3+8=<<3+8=11>>11 books.\n#### 11"},
    {"question": "How many letters r are in 'strawberry'?", "answer": "<<'strawberry'.count('r')=3>>3\n#### 3"},
]
HUMANEVAL = [
    {
        "task_id": "Test/0",
        "prompt": 'def add(a, b):\n    """Return a + b."""\n',
        "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
        "entry_point": "add",
    }
]
CONVERSATIONS = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]


def write_chat_data(directory):
    directory.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, kind, fmt, records, baseline in [
        ("world_mc", "mc", "world", MC, tasks.random_baseline(MC, "mc")),
        ("word_problems", "gsm8k", "world", GSM8K, 0.0),
        ("code", "humaneval", "humaneval", HUMANEVAL, 0.0),
        ("chit_chat", "conversation", "world", CONVERSATIONS, 0.0),
    ]:
        tasks.write_jsonl(directory / name / "test.jsonl", records)
        entries[name] = {"kind": kind, "splits": {"test": f"{name}/test.jsonl"}, "random_baseline": baseline, "format": fmt}
    tasks.write_tasks(directory, entries)
    return directory


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat_eval")
    checkpoint = write_checkpoint(root / "sft" / "tiny", root / "tok")
    return root, checkpoint, write_chat_data(root / "chat_data")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_csv_has_every_task_and_chatcore(setup, capsys):
    from test_progress import progress_lines

    root, checkpoint, chat_dir = setup
    out = root / "out" / "sft.csv"
    chat_eval.main(["--checkpoint", str(checkpoint), "--chat-data", str(chat_dir), "--out", str(out), "--max-per-task", "2", "--max-new-tokens", "8",
                    "--device-batch-items", "1"])
    log = capsys.readouterr().out
    assert progress_lines(log, "world_mc")[0][:2] == (1, 2) and progress_lines(log, "world_mc")[-1] == (2, 2, "0s"), log
    assert progress_lines(log, "word_problems")[-1] == (2, 2, "0s") and progress_lines(log, "code")[-1] == (1, 1, "0s"), log
    rows = read_csv(out)
    assert list(rows[0]) == chat_eval.COLUMNS
    assert [r["task"] for r in rows] == ["code", "word_problems", "world_mc", "ChatCORE"]
    by_task = {r["task"]: r for r in rows}
    assert [(by_task[t]["n"], by_task[t]["test_items"]) for t in ("world_mc", "word_problems", "code", "ChatCORE")] == [
        ("2", "3"), ("2", "2"), ("1", "1"), ("5", "6")]
    assert [by_task[t]["protocol"] for t in ("world_mc", "word_problems", "code", "ChatCORE")] == ["world", "world", "nanochat", "nanochat+world"]
    assert float(by_task["world_mc"]["baseline"]) == pytest.approx(tasks.random_baseline(MC, "mc"), abs=1e-6)  # the world's own chance
    for r in rows[:-1]:
        acc, base = float(r["accuracy"]), float(r["baseline"])
        assert 0 <= acc <= 1
        assert float(r["centered"]) == pytest.approx((acc - base) / (1 - base), abs=1e-5)
    assert float(rows[-1]["centered"]) == pytest.approx(sum(float(r["centered"]) for r in rows[:-1]) / 3, abs=1e-5)
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    assert meta["skipped_tasks"] == {"chit_chat": "kind conversation has no answer to score"}
    assert meta["provenance"]["module"] == "snakechat.chat_eval"
    assert meta["settings"]["max_per_task"] == 2
    assert set(meta["protocols"]) == {"nanochat", "world", "custom"}
    assert meta["tasks"]["world_mc"] | {"seconds": 0, "correct": 0, "sample_replies": []} == {
        "protocol": "world", "n": 2, "test_items": 3, "prompts_cut_at_2048": 0, "prompts_cut_to_model": 0,
        "seconds": 0, "correct": 0, "sample_replies": []}


def test_defaults_are_nanochats(setup):
    """Whole test split, 512 tokens per reply, greedy, one sample, HumanEval programs get 5 s."""
    _, checkpoint, chat_dir = setup
    args = chat_eval.parse_args(["--checkpoint", str(checkpoint), "--chat-data", str(chat_dir), "--out", "x.csv"])
    assert (args.max_per_task, args.max_new_tokens, args.temperature, args.num_samples, args.sandbox_timeout) == (0, 512, 0.0, 1, 5.0)


def test_scoring_follows_what_the_model_says():
    """A real tiny GPT taught two mc answers, an ARC-style answer labelled "2" and a tool-using word
    problem: it scores 1 on them, and 0 on the mc items once their answer keys are changed."""
    tok = tokenizer()
    problem = {"question": "2+3?", "answer": "<<2+3=5>>5\n#### 5"}
    numbered = {"question": "Which is a planet?", "choices": ["Moon", "Mars", "Sun"], "answer": 1, "letters": ["1", "2", "3"]}
    mc = MC[:2] + [numbered]
    rows = [render_conversation(tok, c)[0] for c in [tasks.to_conversation(problem, "gsm8k")] + [tasks.to_conversation(r, "mc") for r in mc]]
    model = memorize(random_gpt(tok.vocab_size, seed=3, sequence_len=256, n_embd=64), rows, steps=400)  # each as the evaluation reads it

    class Args:
        device_batch_items, num_samples, max_new_tokens, temperature, top_k, seed = 2, 1, 30, 0.0, 0, 0

    evaluator = chat_eval.Evaluator(model, tok, model.lm_head.weight.device, Args)
    assert evaluator.run_task("mc", "mc", mc, 0, 1) == (3, 3, ["B", "C", "2"])  # the predictions are the items' own letters
    shifted = [dict(r, answer=(r["answer"] + 1) % len(r["choices"])) for r in mc]
    assert evaluator.run_task("mc", "mc", shifted, 0, 1)[:2] == (0, 3)
    [replies] = evaluator.replies([problem], "gsm8k", seed=0)
    assert replies[0].endswith("#### 5"), replies
    assert evaluator.run_task("gsm8k", "gsm8k", [problem, dict(problem, answer="#### 6")], 0, 1)[:2] == (1, 2)


def test_humaneval_reply_is_scored_as_nanochat_scores_it():
    """The reply must define the function (the prompt's imports are added); a bare body fails."""
    record = dict(HUMANEVAL[0], prompt="import math\n" + HUMANEVAL[0]["prompt"])

    evaluator = chat_eval.Evaluator.__new__(chat_eval.Evaluator)
    evaluator.sandbox = humaneval_sandbox.Sandbox(timeout=5.0)
    whole = "def add(a, b):\n    return math.fsum([a, b])\n"
    assert evaluator.humaneval(record, [whole])
    assert evaluator.humaneval(record, ["Sure:\n```python\n" + whole + "```\nDone."])
    assert not evaluator.humaneval(record, [HUMANEVAL[0]["canonical_solution"]])  # a body continuing the prompt
    assert not evaluator.humaneval(record, ["def add(a, b):\n    return a - b\n"])
    assert evaluator.humaneval(record, ["nonsense", whole])  # any of the samples


def test_humaneval_without_a_sandbox_stops_before_the_model_loads_unless_opted_out(setup, tmp_path, monkeypatch):
    """No bwrap on PATH: chat_eval refuses, saying why and how to allow it; --unsandboxed true runs the code anyway."""
    root, checkpoint, chat_dir = setup
    monkeypatch.setenv("PATH", str(tmp_path))
    load_model = chat_eval.load_model
    monkeypatch.setattr(chat_eval, "load_model", lambda *a: pytest.fail("the model was loaded before the sandbox was checked"))
    args = ["--checkpoint", str(checkpoint), "--chat-data", str(chat_dir), "--out", str(tmp_path / "x.csv"), "--max-per-task", "1", "--max-new-tokens", "4"]
    with pytest.raises(SystemExit) as err:
        chat_eval.main(args)
    assert "bwrap (bubblewrap) is not installed" in str(err.value) and "chat_eval.unsandboxed: true" in str(err.value)
    monkeypatch.setattr(chat_eval, "load_model", load_model)
    chat_eval.main(args + ["--unsandboxed", "true"])
    assert {r["task"] for r in read_csv(tmp_path / "x.csv")} == {"code", "word_problems", "world_mc", "ChatCORE"}


def test_published_files_via_task_option(setup, tmp_path):
    """GSM8K jsonl, HumanEval jsonl.gz and ARC parquet in their published layouts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, checkpoint, _ = setup
    gsm = tmp_path / "test.jsonl"
    gsm.write_text("".join(json.dumps(r) + "\n" for r in GSM8K))
    he = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(he, "wt") as f:
        f.write(json.dumps(HUMANEVAL[0]) + "\n")
    arc = tmp_path / "arc.parquet"
    rows = [{"id": "q1", "question": "Which is a planet?", "choices": {"text": ["Mars", "Moon", "Sun"], "label": ["A", "B", "C"]}, "answerKey": "A"},
            {"id": "q2", "question": "Which is a star?", "choices": {"text": ["Mars", "Moon", "Sun"], "label": ["1", "2", "3"]}, "answerKey": "3"}]
    pq.write_table(pa.Table.from_pylist(rows), arc)
    out = tmp_path / "real.csv"
    chat_eval.main(["--checkpoint", str(checkpoint), "--out", str(out), "--max-new-tokens", "4",
                    "--task", f"GSM8K=gsm8k:{gsm}", "--task", f"HumanEval=humaneval:{he}", "--task", f"ARC-Easy=arc:{arc}"])
    rows = {r["task"]: r for r in read_csv(out)}
    assert set(rows) == {"GSM8K", "HumanEval", "ARC-Easy", "ChatCORE"}
    assert {r["protocol"] for r in rows.values()} == {"nanochat"}
    assert float(rows["ARC-Easy"]["baseline"]) == 0.25  # nanochat's chance for multiple choice, whatever the items
    assert (rows["ARC-Easy"]["n"], rows["GSM8K"]["n"], rows["GSM8K"]["test_items"]) == ("2", "2", "2")


def test_bad_inputs_fail_early_with_clear_errors(setup, tmp_path, capsys):
    _, checkpoint, chat_dir = setup
    with pytest.raises(SystemExit):
        chat_eval.main(["--checkpoint", str(checkpoint), "--out", "x.csv", "--task", "GSM8K:gsm8k=nowhere"])
    assert "NAME=FORMAT:PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        chat_eval.main(["--checkpoint", str(tmp_path), "--chat-data", str(chat_dir), "--out", "x.csv"])
    assert "no meta.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        chat_eval.main(["--checkpoint", str(checkpoint), "--out", "x.csv", "--task", f"G=gsm8k:{tmp_path / 'missing.jsonl'}"])
    assert "no file" in capsys.readouterr().err


def test_two_ranks_give_the_same_table(setup, tmp_path):
    """Items dealt to 2 gloo processes under torchrun, counts summed: the same CSV as one process."""
    root, checkpoint, chat_dir = setup
    common = ["--checkpoint", str(checkpoint), "--chat-data", str(chat_dir), "--max-new-tokens", "6", "--device-batch-items", "2"]
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    chat_eval.main(common + ["--out", str(one)])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "snakechat.chat_eval", *common, "--out", str(two)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert two.read_text() == one.read_text()
    assert json.loads(Path(f"{two}.meta.json").read_text())["world_size"] == 2



def test_the_rule_runs_and_reruns_when_its_settings_change(setup, tmp_path):
    """`snakemake results/chat_eval/tiny/sft.csv` on a work dir holding an SFT checkpoint and chat data."""
    import shutil

    import yaml

    root = Path(__file__).resolve().parents[1]
    _, checkpoint, chat_dir = setup
    work = tmp_path / "work"
    shutil.copytree(checkpoint, work / "results/sft/tiny")
    shutil.copytree(chat_dir, work / "results/chat_data/tinyworld")
    config = yaml.safe_load((root / "config/config.yaml").read_text())
    config["models"]["tiny"]["chat_data"] = "tinyworld"
    config["models"]["tiny"]["chat_eval"] = {"max_per_task": 2, "max_new_tokens": 4, "threads": 1}

    def snakemake(*args):
        configfile = tmp_path / "config.yaml"
        configfile.write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "--directory", str(work), "--configfile", str(configfile),
               "--allowed-rules", "chat_eval", "-c1", *args, "results/chat_eval/tiny/sft.csv"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        return run.stdout + run.stderr

    snakemake()
    rows = read_csv(work / "results/chat_eval/tiny/sft.csv")
    assert [r["task"] for r in rows] == ["code", "word_problems", "world_mc", "ChatCORE"]
    assert json.loads((work / "results/chat_eval/tiny/sft.csv.meta.json").read_text())["settings"]["max_new_tokens"] == 4
    unchanged = snakemake("-n")
    assert "Nothing to be done" in unchanged and "rule chat_eval:" not in unchanged
    config["models"]["tiny"]["chat_eval"]["max_per_task"] = 3
    assert "rule chat_eval:" in snakemake("-n")
