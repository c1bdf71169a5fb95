"""snakechat.evaluate.tasks: readers of the published formats (hand-made files in each layout), prompts, mixtures."""

import gzip
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from snakechat.evaluate import tasks

GSM_ANSWER = "She has 3 * 4 = <<3*4=12>>12 apples.\nThen 12 - 2 = <<12-2=10>>10.\n#### 10"
HUMANEVAL = {"task_id": "HumanEval/0", "prompt": "def add(a, b):\n", "canonical_solution": "    return a + b\n", "test": "def check(c):\n    assert c(1, 2) == 3\n", "entry_point": "add"}


def write_jsonl(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_smoltalk_parquet(tmp_path):
    messages = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
    rows = [
        [{"content": "Be brief.", "role": "system"}, {"content": "Hi", "role": "user"}, {"content": "Hello!", "role": "assistant"}],
        [{"content": "2+2?", "role": "user"}, {"content": "4", "role": "assistant"}],
    ]
    pq.write_table(pa.table({"messages": pa.array(rows, type=messages), "source": ["a", "b"]}), tmp_path / "0000.parquet")
    records = list(tasks.read(tmp_path / "0000.parquet", "smoltalk"))
    assert records[0] == {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    assert tasks.to_conversation(records[1], "conversation") == {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}


def test_conversation_errors_name_the_row(tmp_path):
    pq.write_table(pa.table({"messages": [[{"content": "x", "role": "robot"}]]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet row 0: message role 'robot'"):
        list(tasks.read(tmp_path / "bad.parquet", "smoltalk"))
    pq.write_table(pa.table({"messages": [[{"content": "x", "role": "user"}]]}), tmp_path / "noreply.parquet")
    with pytest.raises(ValueError, match="does not end with an assistant message"):
        list(tasks.read(tmp_path / "noreply.parquet", "smoltalk"))
    pq.write_table(pa.table({"messages": [[{"content": "x", "role": "assistant"}, {"content": "y", "role": "user"}]]}), tmp_path / "order.parquet")
    with pytest.raises(ValueError, match="turns must alternate user, assistant, ... \\(got assistant, user\\)"):
        list(tasks.read(tmp_path / "order.parquet", "smoltalk"))


def test_mmlu_parquet_and_auxiliary_train_and_csv(tmp_path):
    pq.write_table(pa.table({"question": ["2+2?"], "subject": ["math"], "choices": [["3", "4", "5", "6"]], "answer": pa.array([1], pa.int64())}), tmp_path / "test.parquet")
    assert list(tasks.read(tmp_path / "test.parquet", "mmlu")) == [{"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "math"}]
    aux = pa.table({"train": [{"answer": 0, "choices": ["yes", "no"], "question": "Sky blue?", "subject": ""}]})
    pq.write_table(aux, tmp_path / "aux.parquet")
    assert list(tasks.read(tmp_path / "aux.parquet", "mmlu")) == [{"question": "Sky blue?", "choices": ["yes", "no"], "answer": 0}]
    (tmp_path / "virology_test.csv").write_text("question,choice0,choice1,choice2,choice3,answer\n\"A, b?\",w,x,y,z,3\n")
    assert list(tasks.read(tmp_path / "virology_test.csv", "mmlu_csv")) == [{"question": "A, b?", "choices": ["w", "x", "y", "z"], "answer": 3}]


def test_arc_parquet_uses_the_label_of_the_answer_key(tmp_path):
    table = pa.table({
        "id": ["q1", "q2"],
        "question": ["Which is a gas?", "Pick two"],
        "choices": [{"text": ["rock", "steam", "ice"], "label": ["A", "B", "C"]}, {"text": ["one", "two"], "label": ["1", "2"]}],
        "answerKey": ["B", "2"],
    })
    pq.write_table(table, tmp_path / "arc.parquet")
    records = list(tasks.read(tmp_path / "arc.parquet", "arc"))
    assert [r["answer"] for r in records] == [1, 1]
    assert records[0]["choices"] == ["rock", "steam", "ice"]
    assert [r["letters"] for r in records] == [["A", "B", "C"], ["1", "2"]]  # each item keeps its own labels
    assert [tasks.mc_letter(r) for r in records] == ["B", "2"]
    pq.write_table(table.set_column(3, "answerKey", pa.array(["E", "2"])), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet row 0: answerKey 'E'"):
        list(tasks.read(tmp_path / "bad.parquet", "arc"))


def test_llm_foundry_mc_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "arc_easy.jsonl", [{"query": "Question: Which is warm?", "choices": ["snow", "sun"], "gold": 1}])
    assert list(tasks.read(path, "mc_jsonl")) == [{"question": "Which is warm?", "choices": ["snow", "sun"], "answer": 1}]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "Q", "choices": ["a", "b"], "gold": 2}])
    with pytest.raises(ValueError, match=r"bad\.jsonl row 0: answer 2 is not an index into 2 choices"):
        list(tasks.read(bad, "mc_jsonl"))


def test_gsm8k_jsonl_and_parquet_agree(tmp_path):
    row = {"question": "Apples?", "answer": GSM_ANSWER}
    pq.write_table(pa.table({"question": [row["question"]], "answer": [row["answer"]]}), tmp_path / "0000.parquet")
    jsonl = write_jsonl(tmp_path / "test.jsonl", [row])
    assert list(tasks.read(tmp_path / "0000.parquet", "gsm8k")) == list(tasks.read(jsonl, "gsm8k")) == [row]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "no final line"}])
    with pytest.raises(ValueError, match="does not end with '#### N'"):
        list(tasks.read(bad, "gsm8k"))


def test_humaneval_jsonl_gz_and_parquet(tmp_path):
    gz = write_jsonl(tmp_path / "HumanEval.jsonl.gz", [HUMANEVAL], gz=True)
    pq.write_table(pa.table({k: [v] for k, v in HUMANEVAL.items()}), tmp_path / "0000.parquet")
    assert list(tasks.read(gz, "humaneval")) == list(tasks.read(tmp_path / "0000.parquet", "humaneval")) == [HUMANEVAL]
    conv = tasks.to_conversation(HUMANEVAL, "humaneval")
    assert conv["messages"] == [{"role": "user", "content": "def add(a, b):\n"}, {"role": "assistant", "content": "def add(a, b):\n\n    return a + b\n"}]


def test_broken_json_line_and_unknown_format_are_named(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"question": "a", "answer": "#### 1"}\n{oops\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2: not JSON"):
        list(tasks.read(tmp_path / "x.jsonl", "gsm8k"))
    with pytest.raises(ValueError, match="unknown task format 'trivia'"):
        list(tasks.read(tmp_path / "x.jsonl", "trivia"))


def test_render_mc_and_mc_conversation():
    record = {"question": "Which is a fruit? ", "choices": ["car", "apple", "cloud"], "answer": 1}
    assert tasks.render_mc(record) == (
        "Multiple Choice question: Which is a fruit? \n- car=A\n- apple=B\n- cloud=C\n\nRespond only with the letter of the correct answer.")
    conv = tasks.to_conversation(record, "mc")
    assert conv["messages"] == [{"role": "user", "content": tasks.render_mc(record)}, {"role": "assistant", "content": "B"}]
    numbered = dict(record, letters=["1", "2", "3"])
    assert tasks.render_mc(numbered).splitlines()[1:4] == ["- car=1", "- apple=2", "- cloud=3"]
    assert tasks.to_conversation(numbered, "mc")["messages"][1]["content"] == "2"


@pytest.mark.parametrize("letters", [["A", "A", "B"], ["A", "B"], ["A", " ", "C"], "ABC"])
def test_mc_letters_are_checked(letters):
    with pytest.raises(ValueError, match="row 3: letters .* must be 3 distinct non-blank strings"):
        tasks.check_record({"question": "q", "choices": ["x", "y", "z"], "answer": 0, "letters": letters}, "mc", "f row 3")


@pytest.mark.parametrize("text, expected", [
    (GSM_ANSWER, "10"),
    ("so #### 1,234", "1234"),  # commas dropped
    ("#### -7", "-7"),
    ("#### 1000.0", "1000.0"),  # compared as text: not 1000
    ("#### 5.", "5."),  # a full stop after the number is part of it
    ("####3.5", None),  # one space after the marker, no more and no less
    ("####  3", None),
    ("#### +5", None),  # no plus sign
    ("#### $5", None),
    ("#### 4 and later #### 5", "4"),  # the first one
    ("the answer is 4", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert tasks.extract_answer(text) == expected


@pytest.mark.parametrize("reply, right", [("#### 1,000", True), ("so #### 1000", True), ("####1000", False), ("#### 1000.0", False),
                                          ("#### 1000.", False), ("#### +1000", False), ("#### 01000", False), ("no answer", False)])
def test_gsm8k_correct_compares_the_text_after_the_marker(reply, right):
    assert tasks.gsm8k_correct(reply, tasks.gsm8k_gold("2 boxes of <<2*500=1000>>1000.\n#### 1000")) is right


def test_gsm8k_gold_is_read_after_the_last_annotation():
    assert tasks.gsm8k_gold("<<1+1=2>>2\n#### 2") == "2"
    assert tasks.gsm8k_gold("#### 3 is wrong, <<1+1=2>>2\n#### 2") == "2"
    assert tasks.gsm8k_gold("#### 3 then <<1+1=2>>2") is None  # as nanochat: its last text part has no answer
    with pytest.raises(ValueError, match="does not end with '#### N'"):
        tasks.check_record({"question": "q", "answer": "#### 3 then <<1+1=2>>2"}, "gsm8k")


def test_gsm8k_conversation_turns_annotations_into_tool_calls():
    conv = tasks.to_conversation({"question": "Apples?", "answer": GSM_ANSWER}, "gsm8k")
    assert conv["messages"][0] == {"role": "user", "content": "Apples?"}
    assert conv["messages"][1]["content"] == [
        {"type": "text", "text": "She has 3 * 4 = "},
        {"type": "python", "text": "3*4"},
        {"type": "python_output", "text": "12"},
        {"type": "text", "text": "12 apples.\nThen 12 - 2 = "},
        {"type": "python", "text": "12-2"},
        {"type": "python_output", "text": "10"},
        {"type": "text", "text": "10.\n#### 10"},
    ]
    # split as nanochat splits: the expression is what precedes the last '=', an annotation without '=' has no output
    assert tasks.gsm8k_parts("<<a==b=True>>True <<note>>x") == [
        {"type": "python", "text": "a==b"}, {"type": "python_output", "text": "True"}, {"type": "text", "text": "True "},
        {"type": "python", "text": "note"}, {"type": "python_output", "text": ""}, {"type": "text", "text": "x"}]


def test_humaneval_program_as_nanochat_builds_it():
    record = {"prompt": "from typing import List\nimport math\n\n\ndef f(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n",
              "test": "def check(c):\n    assert c([1, 2]) == 3\n", "entry_point": "f"}
    reply = "Here it is:\n```python\ndef f(xs):\n    return sum(xs)\n```\nand ```python\nother\n```"
    assert tasks.humaneval_program(record, reply) == (
        "from typing import List\nimport math\n\ndef f(xs):\n    return sum(xs)\n\ndef check(c):\n    assert c([1, 2]) == 3\n\ncheck(f)")
    assert tasks.humaneval_code("  def f(xs):\n    return 0\n\n") == "def f(xs):\n    return 0"  # no fence: the whole reply
    assert tasks.humaneval_code("```\nx = 1\n```") == "x = 1"
    assert tasks.humaneval_code("```python\nx = 1") == "```python\nx = 1"  # an unclosed fence is not a block
    assert tasks.humaneval_imports("# header\n\nimport os\ndef g():\n    import sys\n") == "import os"


def test_random_baseline():
    records = [{"question": "q", "choices": ["a", "b"], "answer": 0}, {"question": "q", "choices": ["a", "b", "c", "d"], "answer": 0}]
    assert tasks.random_baseline(records, "mc") == pytest.approx((0.5 + 0.25) / 2)
    assert tasks.random_baseline([{"question": "q", "answer": "#### 1"}], "gsm8k") == 0.0


def make_chat_dir(tmp_path):
    mc = [{"question": f"q{i}", "choices": ["x", "y"], "answer": i % 2} for i in range(4)]
    gsm = [{"question": f"p{i}", "answer": f"#### {i}"} for i in range(10)]
    tasks.write_jsonl(tmp_path / "quiz" / "train.jsonl", mc)
    tasks.write_jsonl(tmp_path / "math" / "train.jsonl", gsm)
    tasks.write_jsonl(tmp_path / "math" / "test.jsonl", gsm[:2])
    tasks.write_tasks(tmp_path, {
        "quiz": {"kind": "mc", "splits": {"train": "quiz/train.jsonl"}, "random_baseline": 0.5},
        "math": {"kind": "gsm8k", "splits": {"train": "math/train.jsonl", "test": "math/test.jsonl"}, "random_baseline": 0.0},
    })
    return tmp_path


def test_a_changed_or_unreadable_split_file_is_refused_naming_it(tmp_path):
    chat = make_chat_dir(tmp_path)
    path = chat / "math" / "test.jsonl"
    good = path.read_text()
    assert tasks.load_split(chat, "math", "test")[1][1]["answer"] == "#### 1"
    path.write_text(good.replace("#### 1", "#### 7"))  # one changed answer, still valid records
    with pytest.raises(ValueError, match=f"{path}: changed since {chat / 'tasks.json'} was written"):
        tasks.load_split(chat, "math", "test")
    (chat / "math" / "train.jsonl").rename(chat / "x")
    (chat / "math" / "test.jsonl").rename(chat / "math" / "train.jsonl")
    (chat / "x").rename(chat / "math" / "test.jsonl")  # train and test swapped
    with pytest.raises(ValueError, match="changed since"):
        tasks.load_split(chat, "math", "train")
    bad = chat / "bad.jsonl"
    bad.write_bytes(b'{"question": "q\xff", "answer": "#### 1"}\n')
    with pytest.raises(ValueError, match=f"{bad}: not UTF-8 text"):
        tasks.read_jsonl(bad)
    index = json.loads((chat / "tasks.json").read_text())
    del index["tasks"]["quiz"]["sha256"]
    (chat / "tasks.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="task 'quiz' records no sha256 for its 'train' split"):
        tasks.load_split(chat, "quiz", "train")
    (chat / "tasks.json").write_bytes(b'{"tasks": {"\xfe": 1}}')
    with pytest.raises(ValueError, match=f"{chat / 'tasks.json'}: not UTF-8 text"):
        tasks.load_tasks(chat)


def test_mixture_counts_epochs_and_weights_and_is_seeded(tmp_path):
    chat = make_chat_dir(tmp_path)
    spec = {"quiz": {"epochs": 2.5}, "math": {"weight": 3}}
    mix = tasks.mixture(chat, spec, "train", seed=0)
    users = Counter(c["messages"][0]["content"].split("\n")[0].removeprefix("Multiple Choice question: ") for c in mix)
    assert sum(v for k, v in users.items() if k.startswith("q")) == 10  # 2.5 passes over 4 questions
    assert all(users[f"q{i}"] >= 2 for i in range(4))  # whole passes first
    assert sum(v for k, v in users.items() if k.startswith("p")) == 3
    assert max(users[k] for k in users if k.startswith("p")) == 1
    assert mix == tasks.mixture(chat, spec, "train", seed=0)
    assert mix != tasks.mixture(chat, spec, "train", seed=1)
    kinds = [c["messages"][0]["content"][0] for c in mix]
    assert kinds != sorted(kinds)  # tasks are interleaved, not one block after another


def test_mixture_errors_name_task_and_split(tmp_path):
    chat = make_chat_dir(tmp_path)
    with pytest.raises(ValueError, match="task 'quiz' has no 'test' split"):
        tasks.mixture(chat, {"quiz": {"epochs": 1}}, "test", seed=0)
    with pytest.raises(ValueError, match="no task 'trivia'"):
        tasks.mixture(chat, {"trivia": {"epochs": 1}}, "train", seed=0)


def test_conversation_jsonl_accepts_bare_message_lists(tmp_path):
    path = write_jsonl(tmp_path / "identity.jsonl", [
        [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "snakechat."}],
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    ])
    assert [r["messages"][1]["content"] for r in tasks.read(path, "conversation")] == ["snakechat.", "Hello"]
