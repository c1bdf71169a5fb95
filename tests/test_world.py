"""The built-in world: deterministic corpus, eval bundle and chat data, all telling the same facts."""

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snakechat.model import calculator
from snakechat.evaluate import tasks
from snakechat.world import entities as world
from snakechat.world import bundle as world_bundle
from snakechat.world import chat as world_chat
from snakechat.world import corpus as world_corpus
from snakechat.world import phrases as world_phrases
from snakechat.world import skills as world_skills

N_DOCS = 1500


@pytest.fixture(scope="module")
def corpus():
    return list(world_corpus.corpus_documents(0, N_DOCS))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    world_bundle.write_bundle(out, 0)
    return out


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    out = tmp_path_factory.mktemp("chat")
    world_chat.write_chat_data(out, 0)
    return out


def _tree_digest(root):
    h = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _load_bundle(root):
    spec = yaml.safe_load((Path(root) / "core.yaml").read_text())
    for task in spec["icl_tasks"]:
        lines = (Path(root) / "eval_data" / task["dataset_uri"]).read_text().splitlines()
        yield task, [json.loads(line) for line in lines]


# ---------------------------------------------------------------------------------------------
# determinism

def test_world_depends_on_seed_only():
    fresh = world.build_world.__wrapped__
    assert fresh(0).facts() == fresh(0).facts()
    assert fresh(0).facts() != fresh(1).facts()
    w0 = fresh(0)
    assert len(w0.people) == world.N_PEOPLE and len(w0.towns) == world.N_TOWNS
    assert len({p.first for p in w0.people}) == world.N_PEOPLE  # first names identify people


def test_corpus_deterministic_and_sliceable(corpus):
    assert list(world_corpus.corpus_documents(0, 40)) == corpus[:40]
    assert list(world_corpus.corpus_documents(0, 25, offset=100)) == corpus[100:125]
    assert list(world_corpus.corpus_documents(1, 40)) != corpus[:40]
    with pytest.raises(ValueError, match="n_docs"):
        list(world_corpus.corpus_documents(0, -1))


def test_same_seed_same_bytes_across_processes(tmp_path):
    """No dependence on hash randomisation or anything else in the process: two interpreters
    with different PYTHONHASHSEED write identical corpus, bundle and chat data."""
    script = (
        "import hashlib, sys\n"
        "from pathlib import Path\n"
        "from snakechat.world import bundle as world_bundle, chat as world_chat, corpus as world_corpus\n"
        "out = Path(sys.argv[1])\n"
        "(out / 'corpus.txt').write_text('\\x00'.join(world_corpus.corpus_documents(3, 300)))\n"
        "world_bundle.write_bundle(out / 'bundle', 3)\n"
        "world_chat.write_chat_data(out / 'chat', 3)\n"
    )
    digests = []
    for hashseed in ("1", "2"):
        out = tmp_path / hashseed
        out.mkdir()
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=env)
        digests.append(_tree_digest(out))
    assert digests[0] == digests[1]


def test_seed_0_corpus_and_bundle_are_pinned(corpus, bundle):
    """The bytes a tiny model is trained and scored on do not change with a refactor: these digests
    (first 300 documents, whole bundle) change only with a deliberate change to the world's text,
    made in the same commit as the new digests (every model trained on the old text is then stale)."""
    assert hashlib.sha256("\x00".join(corpus[:300]).encode()).hexdigest() == (
        "894d811000ede80a99094457b892d7bd77953807bb3e04afef930ec202d5dfe3")
    assert _tree_digest(bundle) == "1dc14b1b6a50cce1e64249d4760be19858790983509bfaa7d058a9fde1887579"


def test_bundle_and_chat_differ_by_seed(tmp_path, bundle, chat):
    world_bundle.write_bundle(tmp_path / "b1", 1)
    world_chat.write_chat_data(tmp_path / "c1", 1)
    assert _tree_digest(tmp_path / "b1") != _tree_digest(bundle)
    assert _tree_digest(tmp_path / "c1") != _tree_digest(chat)


# ---------------------------------------------------------------------------------------------
# corpus content

def test_corpus_documents_sizes_and_kinds(corpus):
    lengths = [len(d) for d in corpus]
    assert min(lengths) >= world_corpus.MIN_CHARS and max(lengths) <= 4000
    text = "\n".join(corpus)
    for marker in ("About ", "Question: ", "Copy the words: ", " * ", "Problem: ", "Name: ", "Hello "):
        assert marker in text
    assert sum(lengths) / len(lengths) > 800


def test_corpus_never_contradicts_the_world(corpus):
    """Every canonical statement in the corpus ("X lives in Y.") names the true value."""
    w = world.build_world(0)
    text = "\n".join(corpus)
    checked = 0
    for fact in w.facts():
        context = world_phrases.canonical_context(w, fact) + " "
        start = text.find(context)
        while start >= 0:
            before = text[start - 1] if start else " "
            after = text[start + len(context):].removeprefix("the town of ")
            if not before.isalpha():  # "Anna Bell" must not match inside "Hanna Bell"
                assert re.match(r"[A-Za-z0-9]+", after).group() == fact.value.split()[0], (fact, after[:30])
                checked += 1
            start = text.find(context, start + 1)
    assert checked > 5000


def test_eval_facts_are_stated_in_corpus(corpus, bundle):
    """The answer of every fact-completion item appears as a stated sentence in the corpus."""
    text = "\n".join(corpus)
    task, items = next((t, i) for t, i in _load_bundle(bundle) if t["label"] == "world_facts_lm")
    assert task["continuation_delimiter"] == " "
    missing = [i for i in items if f"{i['context']} {i['continuation']}." not in text]
    assert not missing, missing[:5]


# ---------------------------------------------------------------------------------------------
# eval bundle

def test_bundle_follows_core_format(bundle):
    spec = yaml.safe_load((bundle / "core.yaml").read_text())
    with open(bundle / "eval_meta_data.csv", newline="") as f:
        meta = {row["Eval Task"]: row for row in csv.DictReader(f)}
    labels = [t["label"] for t in spec["icl_tasks"]]
    assert set(labels) == set(meta) and len(labels) == len(set(labels))
    types = set()
    for task, items in _load_bundle(bundle):
        kind, label = task["icl_task_type"], task["label"]
        types.add(kind)
        assert task["dataset_uri"].endswith(f"/{label}.jsonl")
        shots = task["num_fewshot"]
        assert isinstance(shots, list) and len(shots) == 1 and 0 <= shots[0] <= 10
        assert isinstance(task["continuation_delimiter"], str)
        assert 50 <= len(items) <= 500, label
        assert int(meta[label]["#datapoints"]) == len(items) and int(meta[label]["#shots"]) == shots[0]
        baseline = float(meta[label]["Random baseline"])
        if kind == "multiple_choice":
            for item in items:
                assert set(item) == {"query", "choices", "gold"}
                assert 0 <= item["gold"] < len(item["choices"]) and len(set(item["choices"])) == len(item["choices"])
                assert baseline == pytest.approx(100 / len(item["choices"]))
        elif kind == "schema":
            for item in items:
                assert set(item) == {"context_options", "continuation", "gold"}
                assert 0 <= item["gold"] < len(item["context_options"])
                assert baseline == pytest.approx(100 / len(item["context_options"]))
        else:
            assert kind == "language_modeling" and baseline == 0
            for item in items:
                assert set(item) == {"context", "continuation"} and item["continuation"]
    assert types == {"multiple_choice", "schema", "language_modeling"}


def test_bundle_answers_are_true(bundle):
    """Gold answers agree with the world and arithmetic; distractors are wrong."""
    w = world.build_world(0)
    truth = {}  # question text -> true value
    for fact in w.facts():
        for index in range(len(world_phrases.QUESTIONS[fact.attr])):
            truth[f"Question: {world_phrases.question(w, fact, index=index)}"] = fact.value
    for p in w.people:
        t, friend = w.town(p.home_town), w.person(p.friend)
        truth[f"Question: In which country does {p.name} live?"] = t.country
        truth[f"Question: Which river flows through the home town of {p.name}?"] = t.river
        truth[f"Question: In which town does the best friend of {p.name} live?"] = friend.home_town
    words = {"plus": "+", "minus": "-", "times": "*"}
    data = {task["label"]: items for task, items in _load_bundle(bundle)}
    for label in ("world_facts", "world_relations", "world_two_hop"):
        for item in data[label]:
            assert item["choices"][item["gold"]] == truth[item["query"]]
    for item in data["arithmetic_mc"]:
        a, word, b = re.fullmatch(r"Question: What is (\d+) (\w+) (\d+)\?", item["query"]).groups()
        assert item["choices"][item["gold"]] == calculator.run(f"{a}{words[word]}{b}")
    for item in data["arithmetic_lm"]:
        assert calculator.run(item["context"].rstrip("=")) == item["continuation"]
    for item in data["copy_words"]:
        assert item["context"] == f"Copy the words: {item['continuation']}\nCopy:"
    contexts = {world_phrases.canonical_context(w, f): f.value for f in w.facts()}
    for item in data["world_schema"]:
        value = item["continuation"].rstrip(".")
        holds = [contexts[c] == value for c in item["context_options"]]
        assert holds.count(True) == 1 and holds[item["gold"]]
    for item in data["world_facts_lm"]:
        assert contexts[item["context"]] == item["continuation"]


# ---------------------------------------------------------------------------------------------
# chat data

def _user_texts(record):
    return [m["content"] for m in record["messages"] if m["role"] == "user"]


def _strip_greeting(text):
    for greeting in sorted(set(world_chat.GREETINGS + world_chat.IDENTITY_GREETINGS), key=len, reverse=True):
        if greeting and text.lower().startswith(greeting.lower()):
            return text[len(greeting):]
    return text


def test_chat_data_follows_contract(chat):
    spec = json.loads((chat / "tasks.json").read_text())["tasks"]
    assert set(spec) == {t[0] for t in world_chat.TASKS}
    for name, entry in spec.items():
        assert set(entry) == {"kind", "splits", "random_baseline", "format", "sha256"} and entry["format"] == "world" and 0 <= entry["random_baseline"] <= 1
        for split in ("train", "test"):
            kind, records = tasks.load_split(chat, name, split)
            assert kind == entry["kind"]
            for n, record in enumerate(records):
                tasks.check_record(record, kind, f"{name}/{split} {n}")
            if kind == "mc":
                assert entry["random_baseline"] == pytest.approx(tasks.random_baseline(records, kind))
        n_train, n_test = (len(tasks.load_split(chat, name, s)[1]) for s in ("train", "test"))
        assert n_train >= 1000 and 40 <= n_test <= 300


def test_chat_conversations_are_well_formed(chat):
    for name, kind, *_ in world_chat.TASKS:
        if kind != "conversation":
            continue
        for split in ("train", "test"):
            for record in tasks.load_split(chat, name, split)[1]:
                roles = [m["role"] for m in record["messages"]]
                if roles[0] == "system":
                    roles = roles[1:]
                assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
                for m in record["messages"]:
                    content = m["content"]
                    if isinstance(content, str):
                        assert content
                        continue
                    assert m["role"] == "assistant"
                    types = [part["type"] for part in content]
                    for i, part in enumerate(content):
                        if part["type"] == "python":
                            # the recorded tool output is what the calculator really says
                            assert types[i + 1] == "python_output"
                            assert calculator.run(part["text"]) == content[i + 1]["text"]


def test_chat_splits_do_not_overlap(chat):
    for name, kind, *_ in world_chat.TASKS:
        train = tasks.load_split(chat, name, "train")[1]
        test = tasks.load_split(chat, name, "test")[1]
        dumps = {json.dumps(r, sort_keys=True) for r in train}
        assert not any(json.dumps(r, sort_keys=True) in dumps for r in test), name
        if kind in ("mc", "gsm8k"):
            assert not {r["question"] for r in train} & {r["question"] for r in test}, name
            assert len({r["question"] for r in test}) == len(test)
        elif name == "arithmetic_tool":
            calcs = lambda rs: {p["text"] for r in rs for m in r["messages"] if isinstance(m["content"], list)
                                for p in m["content"] if p["type"] == "python"}
            assert not calcs(train) & calcs(test)
        else:
            firsts = lambda rs: {_strip_greeting(_user_texts(r)[0]) for r in rs}
            shared = firsts(train) & firsts(test)
            if name == "identity":  # the key is the exact text, greeting included
                shared = {_user_texts(r)[0] for r in train} & {_user_texts(r)[0] for r in test}
            assert not shared, (name, sorted(shared)[:3])


def test_gsm8k_form_answers_compute(chat):
    w = world.build_world(0)
    for name in ("word_problems", "spelling"):
        for split in ("train", "test"):
            for record in tasks.load_split(chat, name, split)[1]:
                answer = record["answer"]
                assert re.search(r"\n#### \d+$", answer)
                final = tasks.extract_answer(answer)
                steps = world_skills.ANNOTATION.findall(answer)
                assert steps
                for expr, result in steps:
                    assert calculator.run(expr) == result, (expr, result)
                assert steps[-1][1] == final
                if name == "spelling":
                    word = re.search(r"'([a-z]+)'", record["question"]).group(1)
                    letter = re.search(r"letters? (\w) ", record["question"])
                    assert int(final) == (word.count(letter.group(1)) if letter else len(word))
                else:
                    assert 0 <= int(final) <= 200
                    assert any(p.name in record["question"] for p in w.people)


def test_chat_facts_agree_with_world(chat):
    w = world.build_world(0)
    truth = {}
    for fact in w.facts():
        for index in range(len(world_phrases.QUESTIONS[fact.attr])):
            truth[world_phrases.question(w, fact, index=index)] = fact.value
    for split in ("train", "test"):
        for record in tasks.load_split(chat, "world_mc", split)[1]:
            assert record["choices"][record["answer"]] == truth[record["question"]]
        for record in tasks.load_split(chat, "world_chat", split)[1]:
            first_q = _strip_greeting(_user_texts(record)[0])
            reply = next(m["content"] for m in record["messages"] if m["role"] == "assistant")
            assert truth[first_q] in reply


def test_chat_world_questions_hold_out_facts(chat):
    """Questions about a held-out fact appear only in test splits, all others only in train."""
    w = world.build_world(0)
    held = world_chat.held_out_facts(0)
    assert 0.25 < len(held) / len(w.facts()) < 0.4
    fact_of = {world_phrases.question(w, f, index=i): f for f in w.facts() for i in range(len(world_phrases.QUESTIONS[f.attr]))}
    for split in ("train", "test"):
        asked = [r["question"] for r in tasks.load_split(chat, "world_mc", split)[1]]
        for record in tasks.load_split(chat, "world_chat", split)[1]:
            asked += [_strip_greeting(t) for t in _user_texts(record) if _strip_greeting(t) in fact_of]
        assert len(asked) > 100
        assert all((fact_of[q] in held) == (split == "test") for q in asked), split


def test_the_plan_knows_the_bundle_size(bundle):
    """config.yaml's plan.bundle_items.tinyworld (the plan prices base_eval with it) is the generated bundle's size."""
    from snakechat.evaluate import core_bundle

    tasks_ = core_bundle.load_bundle(bundle)
    facts = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/config.yaml").read_text())["plan"]["bundle_items"]["tinyworld"]
    assert facts == {"tasks": len(tasks_), "items": sum(len(t.items) for t in tasks_)}
