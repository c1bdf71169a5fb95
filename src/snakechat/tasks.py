"""Chat tasks: published formats in, one record shape per task kind out, and conversations from those.

Task kinds (the records of `results/chat_data/{name}/<task>/<split>.jsonl`):
  conversation  {"messages": [{"role": "system"|"user"|"assistant", "content": str | [parts]}]}
  mc            {"question", "choices": [str], "answer": index, optional "subject"}
  gsm8k         {"question", "answer": "... #### N"} (with <<expr=result>> calculator annotations)
  humaneval     {"task_id", "prompt", "canonical_solution", "test", "entry_point"}

Readers (`read(path, fmt)`) turn the published files into these records: the Hugging Face hub's
parquet exports (SmolTalk, MMLU incl. auxiliary_train, GSM8K, ARC, HumanEval), GSM8K's jsonl,
HumanEval's jsonl(.gz), llm-foundry's multiple-choice jsonl and MMLU's per-subject csv.
Library code: used by `snakechat.chat_data` (conversion), the chat training stages (`mixture`)
and `snakechat.chat_eval` (`render_mc`, `extract_answer`).
"""

import csv
import gzip
import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq

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
    """Rows of a parquet, jsonl, jsonl.gz or csv file, as dicts."""
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
    return {"question": row["question"], "choices": list(choices["text"]), "answer": labels.index(key)}


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
    elif kind == "gsm8k":
        if extract_answer(record.get("answer", "")) is None:
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
    from snakechat.common import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# records -> prompts and conversations


def render_mc(record):
    """The one multiple-choice prompt that training and evaluation share; the reply is a letter."""
    lines = [record["question"].strip(), ""]
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(record["choices"])]
    lines += ["", "Reply with the letter of the correct answer."]
    return "\n".join(lines)


def mc_letter(record):
    return LETTERS[record["answer"]]


_NUMBER = re.compile(r"####\s*([-+]?[\d,]*\.?\d+)")


def extract_answer(text):
    """The number after '####' (commas dropped), or None when there is none."""
    match = _NUMBER.search(text or "")
    return match.group(1).replace(",", "").lstrip("+") if match else None


_CALC = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


def gsm8k_parts(answer):
    """An answer with <<expr=result>> annotations as content parts: text, python call, its output."""
    parts, pos = [], 0
    for m in _CALC.finditer(answer):
        if m.start() > pos:
            parts.append({"type": "text", "text": answer[pos : m.start()]})
        parts.append({"type": "python", "text": m.group(1)})
        parts.append({"type": "python_output", "text": m.group(2)})
        pos = m.end()
    if pos < len(answer):
        parts.append({"type": "text", "text": answer[pos:]})
    return parts


def to_conversation(record, kind):
    """A unified record as a conversation (the assistant turn is the reference answer)."""
    if kind == "conversation":
        return {"messages": record["messages"]}
    if kind == "mc":
        user, assistant = render_mc(record), mc_letter(record)
    elif kind == "gsm8k":
        user, assistant = record["question"], gsm8k_parts(record["answer"])
    elif kind == "humaneval":
        user, assistant = record["prompt"], record["prompt"] + record["canonical_solution"]
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


def load_tasks(chat_dir):
    """tasks.json of a chat data directory: {task: {"kind", "splits": {split: path}, "random_baseline"}}."""
    path = Path(chat_dir) / "tasks.json"
    return json.loads(path.read_text())["tasks"]


def load_split(chat_dir, task, split):
    """(kind, records) of one task split, or a ValueError naming what is missing."""
    tasks = load_tasks(chat_dir)
    if task not in tasks:
        raise ValueError(f"{Path(chat_dir) / 'tasks.json'}: no task {task!r} (tasks: {', '.join(sorted(tasks))})")
    entry = tasks[task]
    if split not in entry["splits"]:
        raise ValueError(f"{Path(chat_dir) / 'tasks.json'}: task {task!r} has no {split!r} split (splits: {', '.join(sorted(entry['splits']))})")
    return entry["kind"], read_jsonl(Path(chat_dir) / entry["splits"][split])


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
