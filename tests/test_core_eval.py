"""The CORE metric: prompts, sampling, spans, cropping, centering, scoring of the three task
types with a model whose answers are known, batching, torchrun, and the base_eval CLI."""

import csv
import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch

from core_bundle_fixture import CORPUS, NGramModel, char_encode, small_tasks, write_bundle
from snakechat.evaluate import core_bundle
from snakechat.evaluate import core_eval as ce


def char_scorer(model):
    return ce.Scorer(encode=char_encode, logits=model, bos_id=0, max_len=model.max_len, device=torch.device("cpu"))


# ---------------------------------------------------------------------------- prompts

def test_render_mc_joins_examples_with_blank_line_and_delimiter():
    examples = [{"query": "Q1", "choices": ["a", "b"], "gold": 1}, {"query": "Q2", "choices": ["c", "d"], "gold": 0}]
    item = {"query": "Q3", "choices": ["x", "y"], "gold": 0}
    assert ce.render_mc(item, examples, "\nAnswer: ") == [
        "Q1\nAnswer: b\n\nQ2\nAnswer: c\n\nQ3\nAnswer: x",
        "Q1\nAnswer: b\n\nQ2\nAnswer: c\n\nQ3\nAnswer: y",
    ]
    assert ce.render_mc(item, [], " ") == ["Q3 x", "Q3 y"]


def test_render_schema_uses_gold_context_of_examples():
    examples = [{"context_options": ["A cat", "A dog"], "continuation": "barks.", "gold": 1}]
    item = {"context_options": ["He", "She"], "continuation": "ran.", "gold": 0}
    assert ce.render_schema(item, examples, " ") == ["A dog barks.\n\nHe ran.", "A dog barks.\n\nShe ran."]


def test_render_lm_trims_contexts_and_the_prompt_without_continuation():
    examples = [{"context": "  2+2=  ", "continuation": "4"}]
    item = {"context": "3+3= \n", "continuation": "6"}
    without, full = ce.render_lm(item, examples, " ")
    assert full == "2+2= 4\n\n3+3= 6"
    assert without == "2+2= 4\n\n3+3="


# ---------------------------------------------------------------------------- sampling

def test_evaluation_subset_is_seeded_shuffle_then_cut():
    # random.Random(1337).shuffle(list(range(10))) == [0, 3, 7, 2, 1, 6, 4, 5, 8, 9]
    assert ce.evaluation_subset(range(10), 0) == [0, 3, 7, 2, 1, 6, 4, 5, 8, 9]
    assert ce.evaluation_subset(range(10), 4) == [0, 3, 7, 2]
    assert ce.evaluation_subset(range(10), 50) == ce.evaluation_subset(range(10), 0)


def test_fewshot_examples_are_seeded_by_item_and_never_the_item():
    items = ["i0", "i1", "i2", "i3", "i4"]
    # random.Random(1234 + 2).sample([0, 1, 3, 4], 2) == [4, 3]
    assert ce.fewshot_examples(items, 2, 2) == ["i4", "i3"]
    # random.Random(1234 + 0).sample([1, 2, 3, 4], 3) == [4, 1, 3]
    assert ce.fewshot_examples(items, 0, 3) == ["i4", "i1", "i3"]
    assert ce.fewshot_examples(items, 1, 0) == []
    for i in range(5):
        assert items[i] not in ce.fewshot_examples(items, i, 4)


def test_fewshot_draw_equals_sampling_the_list_of_other_rows():
    items = list(range(40))
    for i in range(40):
        others = [j for j in items if j != i]
        assert ce.fewshot_examples(items, i, 10) == random.Random(1234 + i).sample(others, 10)


# ---------------------------------------------------------------------------- spans and cropping

def test_common_prefix_and_suffix():
    assert ce.common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert ce.common_prefix_length([[1, 2], [1, 2, 3]]) == 2
    assert ce.common_suffix_length([[1, 7, 8, 9], [1, 2, 3, 8, 9]]) == 2
    assert ce.common_suffix_length([[1, 2], [1, 3]]) == 0


def test_mc_spans_start_after_the_shared_tokens():
    assert ce.mc_spans([[0, 5, 6, 7], [0, 5, 8, 9, 9]]) == ([2, 2], [4, 5])


def test_mc_spans_never_empty_when_one_choice_prefixes_another():
    # "water" / "watermelon": the shared prefix would be all of the shorter choice
    starts, ends = ce.mc_spans([[0, 5, 6], [0, 5, 6, 7, 8]])
    assert starts == [2, 2] and ends == [3, 5]
    assert all(s < e for s, e in zip(starts, ends))


def test_schema_spans_cover_the_common_suffix():
    assert ce.schema_spans([[0, 1, 2, 9, 9], [0, 4, 9, 9]]) == ([3, 2], [5, 4])


def test_lm_spans():
    assert ce.lm_spans([0, 1, 2], [0, 1, 2, 3, 4]) == ([3], [5])
    # the last context token merged with the continuation: score from the first difference
    assert ce.lm_spans([0, 1, 2], [0, 1, 7, 4]) == ([2], [4])


def test_crop_left_keeps_the_continuation():
    seq = list(range(10))
    assert ce.crop_left(seq, 7, 10, 6) == ([4, 5, 6, 7, 8, 9], 3, 6)
    assert ce.crop_left(seq, 7, 10, None) == (seq, 7, 10)
    assert ce.crop_left(seq, 7, 10, 10) == (seq, 7, 10)
    # a continuation longer than the context keeps one token to predict from
    assert ce.crop_left(seq, 2, 10, 4) == ([6, 7, 8, 9], 1, 4)


# ---------------------------------------------------------------------------- centering

def test_centered_accuracy_and_core():
    assert ce.centered_accuracy(0.5, 25) == pytest.approx(1 / 3)
    assert ce.centered_accuracy(0.25, 25) == pytest.approx(0.0)
    assert ce.centered_accuracy(0.3, 0) == pytest.approx(0.3)
    assert ce.centered_accuracy(0.4, 50) == pytest.approx(-0.2)
    results = [ce.TaskResult("a", "schema", 0, 4, 0.5, 0.2, 1.0), ce.TaskResult("b", "schema", 0, 4, 0.5, -0.1, 1.0)]
    assert ce.core_score(results) == pytest.approx(0.05)


# ---------------------------------------------------------------------------- bundle reading

def test_load_bundle_reads_the_dclm_layout(tmp_path):
    write_bundle(tmp_path, small_tasks(), baselines={"mc": 25})
    tasks = core_bundle.load_bundle(tmp_path / "core.yaml")
    assert [(t.label, t.kind, t.shots, t.delimiter, t.baseline, len(t.items)) for t in tasks] == [
        ("mc", "multiple_choice", 0, " ", 25.0, 4),
        ("schema", "schema", 0, " ", 50.0, 3),
        ("lm", "language_modeling", 0, " ", 0.0, 4),
    ]
    assert [t.label for t in core_bundle.load_bundle(tmp_path)] == ["mc", "schema", "lm"]


@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / "eval_data/multiple_choice/mc.jsonl").write_text('{"query": "q", "choices": ["a", "b"], "gold": 2}\n'), r"mc\.jsonl:1: gold 2"),
    (lambda root: (root / "eval_data/schema/schema.jsonl").write_text('{"context_options": ["a", "b"], "gold": 0}\n'), r"schema\.jsonl:1: schema item lacks \['continuation'\]"),
    (lambda root: (root / "eval_data/language_modeling/lm.jsonl").unlink(), r"lm\.jsonl"),
    (lambda root: (root / "eval_meta_data.csv").write_text("Eval Task,Random baseline\nmc,25\n"), r"eval_meta_data\.csv: no `Random baseline` for task 'schema'"),
    (lambda root: (root / "core.yaml").write_text((root / "core.yaml").read_text().replace("icl_task_type: schema", "icl_task_type: ranking")), r"icl_task_type 'ranking'"),
    (lambda root: (root / "eval_data/multiple_choice/mc.jsonl").write_text('[1, 2]\n'), r"mc\.jsonl:1: an item is a JSON object, not list"),
    (lambda root: (root / "eval_data/multiple_choice/mc.jsonl").write_bytes(b'{"query": "\xff"}\n'), r"mc\.jsonl:1: not UTF-8"),
    (lambda root: (root / "core.yaml").write_text("icl_tasks: [unclosed\n"), r"core\.yaml: not valid YAML"),
    (lambda root: (root / "core.yaml").write_text("icl_tasks: [mc]\n"), r"core\.yaml: icl_tasks\[0\]: a task is a mapping"),
    (lambda root: (root / "core.yaml").write_text((root / "core.yaml").read_text().replace("multiple_choice/mc.jsonl", "../../mc.jsonl")), r"dataset_uri '\.\./\.\./mc\.jsonl' leaves the bundle's eval_data"),
])
def test_load_bundle_names_the_problem(tmp_path, breakage, message):
    write_bundle(tmp_path, small_tasks())
    breakage(tmp_path)
    with pytest.raises(core_bundle.BundleError, match=message):
        core_bundle.load_bundle(tmp_path)


def test_fewshot_room_is_checked_before_scoring(tmp_path):
    tasks = small_tasks()
    tasks["mc"] = ("multiple_choice", 3, None, tasks["mc"][3])
    write_bundle(tmp_path, tasks)
    loaded = core_bundle.load_bundle(tmp_path)
    ce.check_fewshot_room(loaded, 0)
    with pytest.raises(core_bundle.BundleError, match="'mc': 3 rows .* 3 few-shot"):
        ce.check_fewshot_room(loaded, 3)


# ---------------------------------------------------------------------------- scoring with a model whose answers are known

def evaluate(tasks, model, **kw):
    return {r.label: r for r in ce.evaluate_bundle(tasks, char_scorer(model), log=lambda *_: None, **kw)}


def test_three_task_types_on_known_answers(tmp_path):
    write_bundle(tmp_path, small_tasks(), baselines={"mc": 50, "schema": 50})
    results = evaluate(core_bundle.load_bundle(tmp_path), NGramModel())
    assert results["mc"].accuracy == 1.0
    assert results["schema"].accuracy == 1.0
    assert results["lm"].accuracy == pytest.approx(3 / 4)  # "3+3= 7." is wrong
    assert results["lm"].centered == pytest.approx(0.75)
    assert results["mc"].centered == 1.0


def test_wrong_gold_scores_zero(tmp_path):
    tasks = small_tasks()
    for label in ("mc", "schema"):
        for item in tasks[label][3]:
            item["gold"] = 1 - item["gold"]
    write_bundle(tmp_path, tasks)
    results = evaluate(core_bundle.load_bundle(tmp_path), NGramModel())
    assert results["mc"].accuracy == 0.0 and results["schema"].accuracy == 0.0
    assert results["mc"].centered == -1.0


def test_a_model_that_knows_nothing_is_at_chance(tmp_path):
    write_bundle(tmp_path, small_tasks())
    results = evaluate(core_bundle.load_bundle(tmp_path), NGramModel(corpus="."))
    assert results["lm"].accuracy == 0.0
    assert results["mc"].accuracy < 1.0


def test_fewshot_prompts_reach_the_model(tmp_path):
    tasks = small_tasks()
    tasks["lm"] = ("language_modeling", 2, "=>", tasks["lm"][3])
    write_bundle(tmp_path, tasks)
    lm = [t for t in core_bundle.load_bundle(tmp_path) if t.label == "lm"]
    model = NGramModel()
    seen = []
    recording = lambda ids: seen.extend(ids.tolist()) or model(ids)
    scorer = ce.Scorer(encode=char_encode, logits=recording, bos_id=0, max_len=None, device=torch.device("cpu"))
    result = ce.evaluate_bundle(lm, scorer, log=lambda *_: None)[0]
    assert result.shots == 2 and result.n == 4
    whole = {f"{it['context'].strip()}=>{it['continuation']}" for it in lm[0].items}
    for row in seen:
        assert row[0] == 0
        parts = "".join(map(chr, row[1:])).rstrip("\0").split("\n\n")
        assert len(parts) == 3 and set(parts) <= whole
        assert parts[2] not in parts[:2]  # never the item itself
    assert len({tuple(r) for r in seen}) == 4


def test_empty_span_items_give_finite_scores(tmp_path):
    # one choice is a prefix of another, and with a char tokenizer the shared prefix is all of it
    items = [
        {"query": "the fruit is", "choices": ["water", "watermelon"], "gold": 1},
        {"query": "the fruit is", "choices": ["watermelon", "water"], "gold": 0},
        {"query": "it is", "choices": ["C", "Co"], "gold": 0},
    ]
    write_bundle(tmp_path, {"piqa": ("multiple_choice", 0, None, items)})
    task = core_bundle.load_bundle(tmp_path)[0]
    scorer = char_scorer(NGramModel(corpus="the fruit is watermelon. the fruit is wates. the fruit is watex. "))
    prepared = [ce.prepare_item(task, task.items, i, scorer) for i in range(3)]
    for p in prepared:
        assert all(s < e for s, e in zip(p.starts, p.ends))
        mean_loss, _ = ce.score_rows(scorer, p.rows, p.starts, p.ends)
        assert all(math.isfinite(x) for x in mean_loss)
    result = ce.evaluate_task(task, scorer)
    assert math.isfinite(result.accuracy) and result.n == 3
    assert ce.score_items(task.kind, prepared, scorer, 10_000)[:2] == [True, True]  # the model knows "watermelon"


def test_long_prompts_are_cropped_to_the_context(tmp_path):
    tasks = small_tasks()
    tasks["mc"] = ("multiple_choice", 3, None, tasks["mc"][3])
    tasks["lm"] = ("language_modeling", 3, None, tasks["lm"][3])
    write_bundle(tmp_path, tasks)
    model = NGramModel(max_len=24)
    results = evaluate(core_bundle.load_bundle(tmp_path), model)
    assert max(model.widths) <= 24
    assert results["mc"].accuracy == 1.0  # the choices survive the crop
    assert results["lm"].accuracy == pytest.approx(3 / 4)


# ---------------------------------------------------------------------------- batching

def random_gpt(seed=0):
    from snakechat.model.gpt import GPT, GPTConfig

    torch.manual_seed(seed)
    model = GPT(GPTConfig(sequence_len=64, vocab_size=128, n_layer=2, n_head=2, n_kv_head=2, n_embd=32))
    for p in model.parameters():  # init_weights zeroes the output projections; make attention matter
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def test_padding_and_batching_do_not_change_scores(tmp_path):
    scorer = ce.Scorer(encode=char_encode, logits=random_gpt(), bos_id=0, max_len=64, device=torch.device("cpu"))
    short, long = [0, 5, 6, 7], [0, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    alone, exact_alone = ce.score_rows(scorer, [short], [2], [4])
    together, exact_together = ce.score_rows(scorer, [short, long], [2, 3], [4, 10])
    assert together[0] == pytest.approx(alone[0], rel=1e-4)
    assert exact_together[0] == exact_alone[0]

    write_bundle(tmp_path, small_tasks())
    tasks = core_bundle.load_bundle(tmp_path)
    for task in tasks:
        prepared = [ce.prepare_item(task, task.items, i, scorer) for i in range(len(task.items))]
        one_by_one = ce.score_items(task.kind, prepared, scorer, batch_tokens=1)
        all_at_once = ce.score_items(task.kind, prepared, scorer, batch_tokens=100_000)
        assert one_by_one == all_at_once


def test_pack_respects_the_token_budget():
    prepared = [ce.Prepared([[0] * n] * k, [1] * k, [n] * k, 0) for n, k in [(10, 2), (30, 4), (20, 1), (5, 3)]]
    batches = ce.pack(prepared, batch_tokens=120)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    assert batches[0] == [1]  # the longest first, alone: 4 rows x 30 = 120
    for b in batches:
        rows = sum(len(prepared[i].rows) for i in b)
        assert len(b) == 1 or rows * max(len(prepared[i].rows[0]) for i in b) <= 120


# ---------------------------------------------------------------------------- the CLI, one process and torchrun

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random snakechat checkpoint with a tokenizer trained on the corpus."""
    from snakechat.model.checkpoint import save_checkpoint
    from snakechat.model.gpt import GPT, GPTConfig
    from snakechat.model.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("ckpt")
    tok = Tokenizer.train([CORPUS * 3] * 20, vocab_size=300)
    tok.save(root / "tok")
    torch.manual_seed(0)
    cfg = GPTConfig(sequence_len=32, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=2, n_embd=32)
    save_checkpoint(root / "base", GPT(cfg), {"model_config": cfg.to_dict(), "tokenizer": str(root / "tok"), "step": 0})
    return root / "base"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_csv_and_provenance(tmp_path, checkpoint, capsys):
    from snakechat import base_eval
    from test_progress import progress_lines

    tasks = small_tasks()
    tasks["mc"] = ("multiple_choice", 2, "\nAnswer: ", tasks["mc"][3])
    write_bundle(tmp_path / "bundle", tasks)
    out = tmp_path / "out" / "tiny.csv"
    base_eval.main(["--checkpoint", str(checkpoint), "--bundle", str(tmp_path / "bundle" / "core.yaml"), "--out", str(out), "--max-per-task", "3"])
    rows = read_csv(out)
    assert list(rows[0]) == list(ce.CSV_COLUMNS)
    assert [r["label"] for r in rows] == ["mc", "schema", "lm", "CORE"]
    assert [r["n"] for r in rows] == ["3", "3", "3", "9"]
    assert rows[0]["shots"] == "2" and rows[0]["type"] == "multiple_choice"
    centered = [float(r["centered"]) for r in rows[:3]]
    assert float(rows[3]["centered"]) == pytest.approx(sum(centered) / 3, abs=1e-5)
    meta = json.loads(out.with_name("tiny.csv.meta.json").read_text())
    assert meta["settings"]["max_per_task"] == 3
    assert meta["provenance"]["module"] == "snakechat.base_eval"
    assert set(meta["tasks"]) == {"mc", "schema", "lm"}
    log = capsys.readouterr().out
    for task in ("mc", "schema", "lm"):  # each task's progress, ending with all of its items done
        assert progress_lines(log, task)[-1] == (3, 3, "0s"), log


def test_cli_rejects_a_bad_bundle_before_loading_the_model(tmp_path):
    from snakechat import base_eval

    write_bundle(tmp_path / "bundle", small_tasks())
    (tmp_path / "bundle" / "eval_meta_data.csv").unlink()
    (tmp_path / "model").mkdir()  # not a checkpoint: loading it would fail differently
    with pytest.raises(core_bundle.BundleError, match="eval_meta_data.csv: missing"):
        base_eval.main(["--checkpoint", str(tmp_path / "model"), "--bundle", str(tmp_path / "bundle"), "--out", str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()


def test_torchrun_spreads_items_and_gathers_the_same_result(tmp_path, checkpoint):
    from snakechat import base_eval

    tasks = small_tasks()
    tasks["mc"] = ("multiple_choice", 1, None, tasks["mc"][3] * 2)  # 8 items: uneven shares are fine too
    write_bundle(tmp_path / "bundle", tasks)
    args = ["--checkpoint", str(checkpoint), "--bundle", str(tmp_path / "bundle")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one.csv"
    base_eval.main([*args, "--out", str(one)])
    two = tmp_path / "two.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "snakechat.base_eval", *args, "--out", str(two)],
        env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(read_csv(two)) == strip(read_csv(one))
    assert json.loads((tmp_path / "two.csv.meta.json").read_text())["world_size"] == 2


def test_a_changed_answer_in_an_installed_bundle_is_refused_naming_the_file(tmp_path):
    root = write_bundle(tmp_path / "bundle", small_tasks())
    assert [t.label for t in core_bundle.load_bundle(root, verify=True)] == ["mc", "schema", "lm"]
    path = root / "eval_data" / "multiple_choice" / "mc.jsonl"
    good = path.read_text()
    item = json.loads(good.splitlines()[0])
    item["gold"] = (item["gold"] + 1) % len(item["choices"])  # still a valid item, now with the wrong answer
    path.write_text(json.dumps(item) + "\n" + "\n".join(good.splitlines()[1:]) + "\n")
    assert core_bundle.load_bundle(root)  # unverified, it reads (the stage's own check while installing)
    with pytest.raises(core_bundle.BundleError, match=f"{path}: changed since the bundle was installed"):
        core_bundle.load_bundle(root, verify=True)
    path.write_text(good)
    (root / "eval_meta_data.csv").write_bytes((root / "eval_meta_data.csv").read_bytes() + b"x\xff,t,1,d\n")
    with pytest.raises(core_bundle.BundleError, match="eval_meta_data.csv: not UTF-8"):
        core_bundle.load_bundle(root)
    (root / "source.json").unlink()
    with pytest.raises(core_bundle.BundleError, match="source.json: no record of the bundle's file hashes"):
        core_bundle.load_bundle(root, verify=True)
