"""The CORE metric (DCLM, arXiv:2406.11794) over an eval bundle in the DCLM layout.

The protocol is the one behind the published numbers (the llm-foundry gauntlet as run by
nanochat), so scores can be put next to GPT-2's 0.2565:

- each task's rows are shuffled with `random.Random(1337)`, then cut to `max_per_task`;
- item i gets `num_fewshot` examples drawn with `random.Random(1234 + i)` from the other rows
  of the (cut) list;
- a prompt is the few-shot examples, each followed by a blank line, then the item, with the
  task's `continuation_delimiter` between context and continuation;
- multiple_choice: one sequence per choice, scored on the tokens after their common prefix;
  the choice with the lowest mean loss wins. schema: one sequence per context option, scored
  on their common suffix (the shared continuation). language_modeling: correct when greedy
  argmax reproduces every continuation token;
- every sequence starts with BOS; one longer than the model's context loses tokens on the left;
- centered accuracy = (acc - b) / (1 - b) with b the task's random baseline; CORE = their mean.

A model enters through a `Scorer`, so snakechat checkpoints and Hugging Face models share it.
"""

import csv
import random
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from snakechat.runtime.common import atomic_path
from snakechat.runtime.progress import Progress
from snakechat.evaluate.core_bundle import BundleError
from snakechat.model.precision import autocast

SHUFFLE_SEED = 1337
FEWSHOT_SEED = 1234
CSV_COLUMNS = ("label", "type", "shots", "n", "accuracy", "centered", "seconds")
CHUNK_ITEMS = 1024  # items tokenized, sorted by length and packed together


def evaluation_subset(items, max_per_task):
    """The rows a run scores: shuffled with the fixed seed, then cut (0 keeps all), so a cut is a stable sample."""
    items = list(items)
    random.Random(SHUFFLE_SEED).shuffle(items)
    return items[:max_per_task] if max_per_task > 0 else items


def check_fewshot_room(tasks, max_per_task):
    """Fail before any model work if a cut leaves too few rows to draw the few-shot examples from."""
    for t in tasks:
        n = len(evaluation_subset(t.items, max_per_task))
        if t.shots >= n:
            raise BundleError(f"task {t.label!r}: {n} rows (max_per_task={max_per_task}) cannot give {t.shots} few-shot examples besides the item itself")


# -----------------------------------------------------------------------------
# Prompts

def fewshot_examples(items, i, shots):
    """`shots` rows other than row i, drawn with the item's own seed.

    The same draw as sampling from the list of the other indices, without building that list
    for every item (quadratic on a 20,000-row task): position j of that list is row j + (j >= i).
    """
    if shots == 0:
        return []
    picks = random.Random(FEWSHOT_SEED + i).sample(range(len(items) - 1), shots)
    return [items[j + (j >= i)] for j in picks]


def render_mc(item, examples, delimiter):
    """One prompt per choice; the examples show their gold choice."""
    shots = "".join(f"{ex['query']}{delimiter}{ex['choices'][ex['gold']]}\n\n" for ex in examples)
    return [f"{shots}{item['query']}{delimiter}{choice}" for choice in item["choices"]]


def render_schema(item, examples, delimiter):
    """One prompt per context option, all ending in the shared continuation."""
    shots = "".join(f"{ex['context_options'][ex['gold']]}{delimiter}{ex['continuation']}\n\n" for ex in examples)
    return [f"{shots}{context}{delimiter}{item['continuation']}" for context in item["context_options"]]


def render_lm(item, examples, delimiter):
    """(prompt without the continuation, prompt with it).

    Contexts are stripped, and so is the prompt without the continuation: a trailing space
    would otherwise be a token of its own there but merged into the continuation's first token
    in the full prompt, and the first would stop being a prefix of the second.
    """
    shots = "".join(f"{ex['context'].strip()}{delimiter}{ex['continuation']}\n\n" for ex in examples)
    stem = f"{shots}{item['context'].strip()}{delimiter}"
    return stem.strip(), stem + item["continuation"]


# -----------------------------------------------------------------------------
# Spans: which tokens of each sequence are scored

def common_prefix_length(seqs):
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return n


def common_suffix_length(seqs):
    return common_prefix_length([s[::-1] for s in seqs])


def mc_spans(seqs):
    """Score each choice after the tokens all choices share.

    When one choice's tokens are a prefix of another's, the shared part would swallow the
    shorter choice whole; the start then moves back so every choice keeps at least one token.
    """
    start = min(common_prefix_length(seqs), min(len(s) for s in seqs) - 1)
    return [start] * len(seqs), [len(s) for s in seqs]


def schema_spans(seqs):
    """Score the shared continuation: the common suffix (at least one token, never the BOS)."""
    suffix = max(1, min(common_suffix_length(seqs), min(len(s) for s in seqs) - 1))
    ends = [len(s) for s in seqs]
    return [e - suffix for e in ends], ends


def lm_spans(without, full):
    """Score what the full prompt adds to the one without the continuation."""
    start = min(common_prefix_length([without, full]), len(full) - 1)
    return [start], [len(full)]


def crop_left(seq, start, end, max_len):
    """Keep the last `max_len` tokens, shifting the span; the span keeps a token before it to predict from."""
    if max_len is None or len(seq) <= max_len:
        return seq, start, end
    cut = len(seq) - max_len
    return seq[cut:], max(start - cut, 1), end - cut


# -----------------------------------------------------------------------------
# Scoring

@dataclass
class Scorer:
    """What the metric needs from a model.

    encode: texts -> token ids (no BOS; the metric adds `bos_id`); logits: (B, T) ids on
    `device` -> (B, T, V) logits; max_len: the model's context length (None: no limit);
    precision: what `logits` runs in (snakechat.model.precision; the scores read the logits in float32).
    """
    encode: Callable
    logits: Callable
    bos_id: int
    max_len: int | None
    device: torch.device
    precision: str = "fp32"


@dataclass
class Prepared:
    """One item as token rows plus the [start, end) span scored in each row."""
    rows: list
    starts: list
    ends: list
    gold: int | None


def prepare_item(task, items, i, scorer):
    item = items[i]
    examples = fewshot_examples(items, i, task.shots)
    if task.kind == "multiple_choice":
        seqs = tokenize(scorer, render_mc(item, examples, task.delimiter))
        starts, ends = mc_spans(seqs)
    elif task.kind == "schema":
        seqs = tokenize(scorer, render_schema(item, examples, task.delimiter))
        starts, ends = schema_spans(seqs)
    else:
        without, full = tokenize(scorer, render_lm(item, examples, task.delimiter))
        seqs = [full]
        starts, ends = lm_spans(without, full)
    cropped = [crop_left(s, a, b, scorer.max_len) for s, a, b in zip(seqs, starts, ends)]
    rows, starts, ends = (list(x) for x in zip(*cropped))
    return Prepared(rows, starts, ends, item.get("gold"))


def tokenize(scorer, texts):
    return [[scorer.bos_id, *ids] for ids in scorer.encode(list(texts))]


def pack(prepared, batch_tokens):
    """Groups of item indices, longest first, each at most `batch_tokens` padded tokens (but at least one item)."""
    order = sorted(range(len(prepared)), key=lambda i: -max(len(r) for r in prepared[i].rows))
    batches, current, rows, width = [], [], 0, 0
    for i in order:
        n, w = len(prepared[i].rows), max(len(r) for r in prepared[i].rows)
        if current and (rows + n) * max(width, w) > batch_tokens:
            batches.append(current)
            current, rows, width = [], 0, 0
        current.append(i)
        rows, width = rows + n, max(width, w)
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def score_rows(scorer, rows, starts, ends):
    """Per row: mean loss over its span, and whether greedy argmax reproduces the whole span."""
    device = scorer.device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), scorer.bos_id, dtype=torch.long)  # right padding never reaches a span
    for r, seq in enumerate(rows):
        ids[r, : len(seq)] = torch.tensor(seq)
    ids = ids.to(device)
    with autocast(device, scorer.precision):
        logits = scorer.logits(ids)
    # position p predicts token p + 1, so a span [start, end) is read at positions [start - 1, end - 1)
    pos = torch.arange(width - 1, device=device)
    span = (pos >= torch.tensor(starts, device=device)[:, None] - 1) & (pos < torch.tensor(ends, device=device)[:, None] - 1)
    row = span.nonzero()[:, 0]
    picked, targets = logits[:, :-1][span].float(), ids[:, 1:][span]  # only the scored positions
    losses = F.cross_entropy(picked, targets, reduction="none")
    misses = (picked.argmax(-1) != targets).float()
    zeros = torch.zeros(len(rows), device=device)
    mean_loss = zeros.index_add(0, row, losses) / span.sum(1)
    exact = zeros.index_add(0, row, misses) == 0
    return mean_loss.tolist(), exact.tolist()


def score_items(task_kind, prepared, scorer, batch_tokens, progress=None):
    """Whether each prepared item is answered correctly; `progress` (a Progress) counts the items scored."""
    correct = [False] * len(prepared)
    for batch in pack(prepared, batch_tokens):
        rows, starts, ends = [], [], []
        for i in batch:
            p = prepared[i]
            rows += p.rows
            starts += p.starts
            ends += p.ends
        mean_loss, exact = score_rows(scorer, rows, starts, ends)
        r = 0
        for i in batch:
            n = len(prepared[i].rows)
            if task_kind == "language_modeling":
                correct[i] = exact[r]
            else:
                losses = mean_loss[r : r + n]
                correct[i] = losses.index(min(losses)) == prepared[i].gold
            r += n
        if progress is not None:
            progress.advance(len(batch))
    return correct


# -----------------------------------------------------------------------------
# Tasks and the CORE score

@dataclass
class TaskResult:
    label: str
    kind: str
    shots: int
    n: int
    accuracy: float
    centered: float
    seconds: float


def centered_accuracy(accuracy, baseline_percent):
    b = baseline_percent / 100
    return (accuracy - b) / (1 - b)


def evaluate_task(task, scorer, max_per_task=0, batch_tokens=16384, log=None):
    """Accuracy of one task; under torch.distributed each rank scores every world_size-th item.
    With `log`, progress lines (this process's share of the items) go through it."""
    t0 = time.time()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    items = evaluation_subset(task.items, max_per_task)
    mine = list(range(rank, len(items), world))
    progress = None if log is None else Progress(f"{task.label}" + (f" (rank {rank} of {world})" if world > 1 else ""), len(mine), log=log)
    correct = [0.0] * len(items)
    for lo in range(0, len(mine), CHUNK_ITEMS):  # bounded memory on tasks of 20,000 long items
        chunk = mine[lo : lo + CHUNK_ITEMS]
        prepared = [prepare_item(task, items, i, scorer) for i in chunk]
        for i, ok in zip(chunk, score_items(task.kind, prepared, scorer, batch_tokens, progress)):
            correct[i] = float(ok)
    correct = torch.tensor(correct, device=scorer.device)
    if world > 1:
        dist.all_reduce(correct, op=dist.ReduceOp.SUM)
    accuracy = correct.mean().item()
    return TaskResult(task.label, task.kind, task.shots, len(items), accuracy, centered_accuracy(accuracy, task.baseline), time.time() - t0)


def evaluate_bundle(tasks, scorer, max_per_task=0, batch_tokens=16384, log=print):
    results = []
    for task in tasks:
        res = evaluate_task(task, scorer, max_per_task, batch_tokens, log)
        log(f"{res.label:<36} {res.kind:<18} n={res.n:<6} acc={res.accuracy:.4f} centered={res.centered:+.4f} {res.seconds:.1f}s")
        results.append(res)
    return results


def core_score(results):
    return sum(r.centered for r in results) / len(results)


def write_csv(path, results):
    """One row per task and a last row `CORE` (the mean centered accuracy), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in results:
            w.writerow([r.label, r.kind, r.shots, r.n, f"{r.accuracy:.6f}", f"{r.centered:.6f}", f"{r.seconds:.2f}"])
        w.writerow(["CORE", "", "", sum(r.n for r in results), "", f"{core_score(results):.6f}", f"{sum(r.seconds for r in results):.2f}"])
