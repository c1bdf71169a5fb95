"""Chat tasks: published formats in, one record shape per task kind out, and conversations from those.

Task kinds (the records of `results/chat_data/{name}/<task>/<split>.jsonl`):
  conversation  {"messages": [{"role": "system"|"user"|"assistant", "content": str | [parts]}]}
  mc            {"question", "choices": [str], "answer": index, optional "letters": [str], optional "subject"}
                ("letters" label the choices where they are not A, B, C, ...: ARC keeps its own, e.g. "1"-"4")
  gsm8k         {"question", "answer": "... #### N"} (with <<expr=result>> calculator annotations)
  humaneval     {"task_id", "prompt", "canonical_solution", "test", "entry_point"}

Prompts, replies and their scoring follow nanochat's tasks (tasks/common.py, mmlu.py, arc.py,
gsm8k.py, humaneval.py), for training and evaluation alike, so that a model is trained on the
prompts it is evaluated on and its scores compare with nanochat's:
  mc         `render_mc`: "Multiple Choice question: Q", one "- choice=LETTER" line per choice,
             "Respond only with the letter of the correct answer."; the reply is the letter.
  gsm8k      the question as the user turn; the answer's <<expr=result>> annotations as calculator
             calls (`gsm8k_parts`); a reply is right when the text after its first "#### " equals the
             reference's, commas dropped and nothing else normalised (`extract_answer`).
  humaneval  the prompt as the user turn; the reply's first fenced code block (or the whole reply),
             after the prompt's imports, then the tests and check(entry_point) (`humaneval_program`).

Readers (`read(path, fmt)`) turn the published files into these records: the Hugging Face hub's
parquet exports (SmolTalk, MMLU incl. auxiliary_train, GSM8K, ARC, HumanEval), GSM8K's jsonl,
HumanEval's jsonl(.gz), llm-foundry's multiple-choice jsonl and MMLU's per-subject csv.
Library code: used by `snakechat.chat_data` (conversion), the chat training stages (`mixture`),
`snakechat.chat_eval` and `snakechat.chat_rl` (prompts and answer checks).
"""

import csv
import gzip
import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq

from snakechat.evaluate.chat_index import load_tasks, split_path, write_tasks  # noqa: F401 (tasks.load_tasks, tasks.write_tasks: the index's API)

KINDS = ("conversation", "mc", "gsm8k", "humaneval")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ROLES = ("system", "user", "assistant")

# reader format -> task kind
FORMAT_KINDS = {
    "smoltalk": "conversation",
    "conversation": "conversation",
    "mmlu": "mc",
    "mmlu_csv": "mc",
    "arc": "mc",
    "mc_jsonl": "mc",
    "mc": "mc",
    "gsm8k": "gsm8k",
    "humaneval": "humaneval",
}


# ---------------------------------------------------------------------------------------------
# reading files


def _rows(path):
    """Rows of a parquet, jsonl, jsonl.gz or csv file, as dicts; a byte that is not UTF-8 is named with the file."""
    try:
        yield from _raw_rows(path)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of a read block)") from None


def _raw_rows(path):
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    elif name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{n}: not JSON: {e}") from e
    elif name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)
    else:
        raise ValueError(f"{path}: unknown file type (expected .parquet, .jsonl, .jsonl.gz or .csv)")


def _field(row, key, where):
    if key not in row:
        raise ValueError(f"{where}: missing field {key!r} (fields: {', '.join(row)})")
    return row[key]


def _conversation(row, where):
    messages = row if isinstance(row, list) else _field(row, "messages", where)  # jsonl lines may be bare message lists
    out = []
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"{where}: message role {role!r} is not one of {ROLES}")
        if role == "system" and out:
            raise ValueError(f"{where}: a system message may only come first")
        out.append({"role": role, "content": content})
    turns = [m["role"] for m in out if m["role"] != "system"]
    if not turns or any(r != ("user", "assistant")[i % 2] for i, r in enumerate(turns)):
        raise ValueError(f"{where}: turns must alternate user, assistant, ... (got {', '.join(turns) or 'none'})")
    if turns[-1] != "assistant":
        raise ValueError(f"{where}: conversation does not end with an assistant message")
    return {"messages": out}


def _mmlu(row, where):
    if "train" in row and "question" not in row:  # the hub's auxiliary_train wraps each row in `train`
        row = row["train"]
    record = {"question": _field(row, "question", where), "choices": list(_field(row, "choices", where)), "answer": int(_field(row, "answer", where))}
    if row.get("subject"):
        record["subject"] = row["subject"]
    return record


def _mmlu_csv(row, where):
    choices = [row[k] for k in sorted((k for k in row if k.startswith("choice")), key=lambda k: int(k[6:]))]
    return {"question": _field(row, "question", where), "choices": choices, "answer": int(_field(row, "answer", where))}


def _arc(row, where):
    choices = _field(row, "choices", where)
    labels = list(choices["label"])
    key = _field(row, "answerKey", where)
    if key not in labels:
        raise ValueError(f"{where}: answerKey {key!r} is not among the labels {labels}")
    return {"question": row["question"], "choices": list(choices["text"]), "answer": labels.index(key), "letters": labels}


def _mc_jsonl(row, where):
    question = _field(row, "query", where)
    question = re.sub(r"^Question:\s*", "", question)
    question = re.sub(r"\s*Answer:\s*$", "", question)
    return {"question": question, "choices": list(_field(row, "choices", where)), "answer": int(_field(row, "gold", where))}


def _mc(row, where):
    return {k: row[k] for k in ("question", "choices", "answer", "subject") if k in row}


def _gsm8k(row, where):
    return {"question": _field(row, "question", where), "answer": _field(row, "answer", where)}


def _humaneval(row, where):
    return {k: _field(row, k, where) for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")}


_CONVERTERS = {
    "smoltalk": _conversation,
    "conversation": _conversation,
    "mmlu": _mmlu,
    "mmlu_csv": _mmlu_csv,
    "arc": _arc,
    "mc_jsonl": _mc_jsonl,
    "mc": _mc,
    "gsm8k": _gsm8k,
    "humaneval": _humaneval,
}


def read(path, fmt):
    """Yield unified records (of kind FORMAT_KINDS[fmt]) from one published file."""
    if fmt not in _CONVERTERS:
        raise ValueError(f"unknown task format {fmt!r} (known: {', '.join(sorted(_CONVERTERS))})")
    convert, kind = _CONVERTERS[fmt], FORMAT_KINDS[fmt]
    for n, row in enumerate(_rows(path)):
        record = convert(row, f"{path} row {n}")
        check_record(record, kind, f"{path} row {n}")
        yield record


def check_record(record, kind, where="record"):
    """Raise ValueError naming `where` unless `record` has the shape of its kind."""
    if kind == "mc":
        choices, answer = record.get("choices"), record.get("answer")
        if not isinstance(record.get("question"), str) or not isinstance(choices, list) or len(choices) < 2:
            raise ValueError(f"{where}: an mc record needs a question and at least two choices")
        if len(choices) > len(LETTERS) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise ValueError(f"{where}: answer {answer!r} is not an index into {len(choices)} choices")
        letters = record.get("letters")
        if letters is not None and (not isinstance(letters, list) or len(letters) != len(choices) or len(set(letters)) != len(letters)
                                    or not all(isinstance(x, str) and x and not x.isspace() for x in letters)):
            raise ValueError(f"{where}: letters {letters!r} must be {len(choices)} distinct non-blank strings, one per choice")
    elif kind == "gsm8k":
        if not isinstance(record.get("answer"), str) or gsm8k_gold(record["answer"]) is None:
            raise ValueError(f"{where}: answer does not end with '#### N'")
    elif kind == "conversation":
        _conversation(record, where)
    elif kind == "humaneval":
        for key in ("task_id", "prompt", "test", "entry_point"):
            if not isinstance(record.get(key), str):
                raise ValueError(f"{where}: humaneval record lacks {key!r}")
    else:
        raise ValueError(f"{where}: unknown task kind {kind!r} (known: {', '.join(KINDS)})")


def iter_jsonl(path):
    """The records of a unified task file, one at a time."""
    return _rows(path)


def read_jsonl(path):
    """The records of a unified task file."""
    return list(_rows(path))


def write_jsonl(path, records):
    from snakechat.runtime.common import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# records -> prompts and conversations


def mc_letters(record):
    """The labels of an item's choices: its own ("letters") or A, B, C, ... in order."""
    return list(record.get("letters") or LETTERS[: len(record["choices"])])


def render_mc(record):
    """The multiple-choice prompt nanochat trains and evaluates on (tasks/common.py).

    Each choice is followed by its letter with no space before it, so the letter in the prompt is
    the same token as the one-letter reply; the question is used as it is.
    """
    lines = [f"Multiple Choice question: {record['question']}"]
    lines += [f"- {choice}={letter}" for letter, choice in zip(mc_letters(record), record["choices"])]
    return "\n".join(lines) + "\n\nRespond only with the letter of the correct answer."


def mc_letter(record):
    """The reply that is right: the letter of the answer."""
    return mc_letters(record)[record["answer"]]


_ANSWER = re.compile(r"#### (-?[0-9.,]+)")


def extract_answer(text):
    """The final answer of a GSM8K-form text as nanochat reads it (after OpenAI's grade-school-math):
    the first "#### " (one space) followed by an optional minus and digits, dots and commas, with the
    commas dropped; None when there is none.

    Nothing else is normalised, so answers compare as text: "#### 1,000" gives "1000", "#### 1000.0"
    gives "1000.0" (not "1000"), "#### 5." gives "5.", and "####1000", "#### +5" or "#### $5" give None.
    """
    match = _ANSWER.search(text or "")
    return match.group(1).strip().replace(",", "") if match else None


_CALL = re.compile(r"(<<[^>]+>>)")


def gsm8k_parts(answer):
    """An answer with <<expr=result>> annotations as content parts: text, python call, its output.

    Split as nanochat splits it: an annotation is "<<" up to the next ">", the expression is what
    comes before its last "=" (an annotation without "=" is a call with an empty output). Empty
    text between two annotations is left out (it renders to no tokens either way).
    """
    parts = []
    for piece in _CALL.split(answer):
        if piece.startswith("<<") and piece.endswith(">>"):
            inner = piece[2:-2]
            expr, result = inner.rsplit("=", 1) if "=" in inner else (inner, "")
            parts += [{"type": "python", "text": expr}, {"type": "python_output", "text": result}]
        elif piece:
            parts.append({"type": "text", "text": piece})
    return parts


def gsm8k_gold(answer):
    """The reference answer of a GSM8K-form record: read from the text after its last annotation,
    as nanochat reads it from the last part of the assistant message."""
    return extract_answer(_CALL.split(answer)[-1])


def gsm8k_correct(reply, gold):
    """Whether a reply's final answer is the reference answer `gold` (from `gsm8k_gold`), as text."""
    return gold is not None and extract_answer(reply) == gold


def humaneval_imports(prompt):
    """The import lines at the top of a HumanEval prompt (comments and blank lines skipped), stripped."""
    imports = []
    for line in prompt.split("\n"):
        line = line.strip()
        if line.startswith(("import ", "from ")):
            imports.append(line)
        elif line and not line.startswith("#"):
            break
    return "\n".join(imports)


_FENCE = re.compile(r"```(?:python)?\s*\n(.*?)\n```", re.DOTALL)


def humaneval_code(reply):
    """The code of a reply: its first closed ``` or ```python block, else the whole reply; stripped."""
    match = _FENCE.search(reply)
    return (match.group(1) if match else reply).strip()


def humaneval_candidate(record, reply):
    """The model's part of the program: the prompt's imports, then the reply's code (expected to define
    the whole function). `snakechat.evaluate.humaneval_sandbox` runs it apart from the tests."""
    return f"{humaneval_imports(record['prompt'])}\n\n{humaneval_code(reply)}"


def humaneval_program(record, reply):
    """The program that checks a reply as nanochat builds it: the candidate, the tests and
    check(entry_point). It passes if it runs without an exception."""
    return f"{humaneval_candidate(record, reply)}\n\n{record['test']}\ncheck({record['entry_point']})"


def to_conversation(record, kind):
    """A unified record as a conversation (the assistant turn is the reference answer)."""
    if kind == "conversation":
        return {"messages": record["messages"]}
    if kind == "mc":
        user, assistant = render_mc(record), mc_letter(record)
    elif kind == "gsm8k":
        user, assistant = record["question"], gsm8k_parts(record["answer"])
    elif kind == "humaneval":
        user, assistant = record["prompt"], f"{record['prompt']}\n{record['canonical_solution']}"
    else:
        raise ValueError(f"unknown task kind {kind!r} (known: {', '.join(KINDS)})")
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def random_baseline(records, kind):
    """Expected accuracy of guessing: 1/choices for mc, 0 for open answers."""
    if kind != "mc" or not records:
        return 0.0
    return sum(1 / len(r["choices"]) for r in records) / len(records)


# ---------------------------------------------------------------------------------------------
# chat data directories and mixtures


def load_split(chat_dir, task, split):
    """(kind, records) of one task split, verified, or a ValueError naming what is missing or changed."""
    tasks = load_tasks(chat_dir)
    if task not in tasks:
        raise ValueError(f"{Path(chat_dir) / 'tasks.json'}: no task {task!r} (tasks: {', '.join(sorted(tasks))})")
    entry = tasks[task]
    if split not in entry["splits"]:
        raise ValueError(f"{Path(chat_dir) / 'tasks.json'}: task {task!r} has no {split!r} split (splits: {', '.join(sorted(entry['splits']))})")
    return entry["kind"], read_jsonl(split_path(chat_dir, task, entry, split))


def _draw(records, count, rng):
    """`count` records: whole shuffled passes, then the start of one more."""
    out = []
    while len(out) < count:
        order = list(range(len(records)))
        rng.shuffle(order)
        out.extend(records[i] for i in order[: count - len(out)])
    return out


def mixture(chat_dir, spec, split, seed):
    """Conversations of several tasks mixed and shuffled, deterministically for a seed.

    spec: task -> {"epochs": e} (e passes over the task; fractions take part of a pass) or
    {"weight": n} (n examples drawn, cycling through the task as often as needed).
    Tasks without the split are an error, so a typo cannot silently shrink the mixture.
    """
    rng = random.Random(seed)
    conversations = []
    for task in sorted(spec):
        kind, records = load_split(chat_dir, task, split)
        if not records:
            raise ValueError(f"{chat_dir}: task {task!r} split {split!r} is empty")
        how = spec[task]
        if set(how) == {"epochs"}:
            count = round(how["epochs"] * len(records))
        elif set(how) == {"weight"}:
            count = round(how["weight"])
        else:
            raise ValueError(f"mixture entry for {task!r} must be {{'epochs': e}} or {{'weight': n}}, not {how!r}")
        conversations += [to_conversation(r, kind) for r in _draw(records, count, rng)]
    rng.shuffle(conversations)
    return conversations
