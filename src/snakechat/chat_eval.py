"""Evaluate a chat checkpoint on held-out chat tasks by nanochat's protocol: one CSV row per task plus ChatCORE.

    python -m snakechat.chat_eval --checkpoint results/sft/tiny \\
        --chat-data results/chat_data/tinyworld --out results/chat_eval/tiny/sft.csv --max-per-task 100
    torchrun --nproc_per_node=8 -m snakechat.chat_eval --checkpoint results/sft/d20 \\
        --chat-data results/chat_data/nanochat --out results/chat_eval/d20/sft.csv \\
        --task GSM8K=gsm8k:gsm8k/test.jsonl --task HumanEval=humaneval:HumanEval.jsonl.gz

Inputs: a checkpoint directory (any stage, base included: every model is prompted the same way,
as a chat), a chat data directory (`tasks.json`; every task with a `test` split of kind mc,
gsm8k or humaneval is evaluated) and optionally extra published task files given as
NAME=FORMAT:PATH (formats of `snakechat.evaluate.tasks.read`).

The protocol is nanochat's scripts/chat_eval.py, with the prompts and answer checks of
`snakechat.evaluate.tasks` (the ones the chat stages train on):
- prompt: the item as a user turn, rendered and cut to its first 2,048 tokens, then
  <|assistant_start|>. A prompt that still does not fit the model's rotary table is cut further
  from the right; the sidecar counts both kinds of cut per task.
- mc (MMLU, ARC and the world's twin): the prediction is the letter whose token has the highest
  logit right after <|assistant_start|>, among the item's own letters only (ARC keeps its labels).
- gsm8k: `num_samples` replies (greedy at temperature 0), at most `max_new_tokens` tokens each,
  calculator calls run; right if any reply's text after "#### " equals the reference's.
- humaneval: the reply's code, after the prompt's imports, run with the tests in
  `snakechat.evaluate.humaneval_sandbox` (bubblewrap); right if the harness reports that check() returned.
  Where that sandbox cannot start the run stops before loading the model, unless `--unsandboxed true`.
- items: the whole test split; `max_per_task` N takes the first N of the split shuffled with
  numpy's default_rng(42), which is the subset nanochat's `-x N` takes of a hub dataset.
- ChatCORE: the mean over tasks of (accuracy - chance) / (1 - chance), chance being nanochat's:
  1/4 for every multiple-choice task, 0 for answers the model writes.

Each row says which items its number is on (`protocol`): "nanochat" for a published test set read
from its published format (mmlu, mmlu_csv, arc, gsm8k, humaneval): the numbers nanochat reports,
when `n` equals `test_items`; "world" for the built-in world's generated tasks (same prompts and
checks, the world's own items; chance from tasks.json); "custom" for anything else (unified
records, llm-foundry's relabelled jsonl). The ChatCORE row joins the protocols of its tasks.

Items are dealt to ranks round-robin and the counts summed. Output: `task,kind,protocol,n,
test_items,accuracy,baseline,centered` (n: items scored; test_items: the size of the test split),
last row ChatCORE (its accuracy and baseline columns are means too), and `<out>.meta.json` with
settings, per-task counts, cuts, sample replies and provenance.
"""

import argparse
import csv
import io
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from snakechat.evaluate import humaneval_sandbox
from snakechat.runtime import provenance
from snakechat.runtime import tracking
from snakechat.evaluate import tasks
from snakechat.model.checkpoint import load_model
from snakechat.runtime.common import cleanup_distributed, init_distributed, print0, write_json_atomic, write_text_atomic
from snakechat.runtime.progress import Progress
from snakechat.model.conversation import render_for_completion
from snakechat.model.engine import Engine
from snakechat.model.precision import SETTINGS, autocast, for_inference, resolve
from snakechat.runtime.settings import finite_float

EVALUATED_KINDS = ("mc", "gsm8k", "humaneval")
COLUMNS = ["task", "kind", "protocol", "n", "test_items", "accuracy", "baseline", "centered"]
SAMPLES_KEPT = 3  # replies per task written to the sidecar
PROMPT_TOKENS = 2048  # nanochat renders a conversation to at most this many tokens, then adds <|assistant_start|>
SUBSET_SEED = 42  # nanochat shuffles each task with this seed before taking its first max_problems
PUBLISHED_FORMATS = ("mmlu", "mmlu_csv", "arc", "gsm8k", "humaneval")
CHANCE = {"mc": 0.25, "gsm8k": 0.0, "humaneval": 0.0}  # nanochat's chance levels for ChatCORE
PROTOCOLS = {  # what a row's protocol says, for the sidecar
    "nanochat": "a published test set scored by nanochat's protocol (prompts, letters, answer checks, 512 tokens, "
                "greedy, prompts cut at 2048 tokens, chance 1/4 for multiple choice): comparable with nanochat's "
                "reports when n equals test_items",
    "world": "the built-in world's generated items, prompted and scored by the same rules; chance from tasks.json; "
             "not a published benchmark",
    "custom": "items from unified records or a relabelled format, prompted and scored by the same rules; chance from "
              "tasks.json or the items; not a published benchmark",
}


def parse_task_spec(spec):
    """NAME=FORMAT:PATH -> (name, format, path), with an error that repeats the bad spec."""
    name, eq, rest = spec.partition("=")
    fmt, colon, path = rest.partition(":")
    if not (eq and colon and name and fmt and path):
        raise argparse.ArgumentTypeError(f"--task {spec!r}: expected NAME=FORMAT:PATH, e.g. GSM8K=gsm8k:test.jsonl")
    if fmt not in tasks.FORMAT_KINDS:
        raise argparse.ArgumentTypeError(f"--task {spec!r}: unknown format {fmt!r} (known: {', '.join(sorted(tasks.FORMAT_KINDS))})")
    return name, fmt, Path(path)


def protocol_of(fmt):
    """Which items a task's score is on: a published test set ("nanochat"), the world's, or other."""
    return "nanochat" if fmt in PUBLISHED_FORMATS else "world" if fmt == "world" else "custom"


def pick_items(records, max_per_task):
    """All records, or the first `max_per_task` of them shuffled as nanochat shuffles (seed 42)."""
    if not max_per_task or len(records) <= max_per_task:
        return records
    order = np.random.default_rng(SUBSET_SEED).permutation(len(records))[:max_per_task]
    return [records[i] for i in order]


def collect_tasks(chat_dir, extra, max_per_task):
    """[(name, kind, protocol, records, test_items, baseline)] for every evaluable task, and the names skipped with why."""
    found, skipped = [], {}
    if chat_dir is not None:
        for name, entry in sorted(tasks.load_tasks(chat_dir).items()):
            if entry["kind"] not in EVALUATED_KINDS:
                skipped[name] = f"kind {entry['kind']} has no answer to score"
                continue
            if "test" not in entry["splits"]:
                skipped[name] = "no test split"
                continue
            kind, records = tasks.load_split(chat_dir, name, "test")
            found.append((name, kind, protocol_of(entry.get("format")), records, entry.get("random_baseline")))
    for name, fmt, path in extra:
        kind = tasks.FORMAT_KINDS[fmt]
        if kind not in EVALUATED_KINDS:
            raise ValueError(f"--task {name}: format {fmt!r} gives {kind} records, which have no answer to score")
        records = list(tasks.read(path, fmt))
        found.append((name, kind, protocol_of(fmt), records, None))
    picked = []
    for name, kind, protocol, records, chance in found:
        if not records:
            raise ValueError(f"task {name!r}: the test split is empty")
        if protocol == "nanochat":
            chance = CHANCE[kind]
        elif chance is None:
            chance = tasks.random_baseline(records, kind)
        picked.append((name, kind, protocol, pick_items(records, max_per_task), len(records), float(chance)))
    return picked, skipped


def prompt_ids(tok, record, kind, max_len):
    """(ids, cut) of a record's chat prompt: its user turn rendered and cut to PROMPT_TOKENS, then
    <|assistant_start|>; cut is None, "reference" (cut at PROMPT_TOKENS) or "model" (cut further to
    leave the model one position to answer in)."""
    conversation = tasks.to_conversation(record, kind)
    ids = render_for_completion(tok, {"messages": conversation["messages"][:-1]})
    body, start, cut = ids[:-1], ids[-1:], None
    if len(body) > PROMPT_TOKENS:
        body, cut = body[:PROMPT_TOKENS], "reference"
    if len(body) + 1 >= max_len:
        body, cut = body[: max_len - 2], "model"
    return body + start, cut


class Evaluator:
    def __init__(self, model, tok, device, args, sandbox=None, precision="fp32"):
        self.model, self.tok, self.device, self.args, self.sandbox = model, tok, device, args, sandbox
        self.engine = Engine(model, tok, precision=precision)  # resolves it: bf16 or fp32
        self.letter_ids = {}
        self.cuts = {}  # "reference"/"model" -> prompts cut so, since the last run_task

    def _letter_id(self, letter):
        if letter not in self.letter_ids:
            ids = self.tok.encode(letter)
            if len(ids) != 1:
                raise ValueError(f"answer letter {letter!r} is not a single token ({ids}) for this tokenizer")
            self.letter_ids[letter] = ids[0]
        return self.letter_ids[letter]

    def _prompts(self, records, kind):
        prompts = []
        for r in records:
            ids, cut = prompt_ids(self.tok, r, kind, self.engine.max_len)
            if cut:
                self.cuts[cut] = self.cuts.get(cut, 0) + 1
            prompts.append(ids)
        return prompts

    @torch.inference_mode()
    def mc_batch(self, records):
        """(right, letter) per record: its letter (among its own) with the highest logit after <|assistant_start|>."""
        prompts = self._prompts(records, "mc")
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, p in enumerate(prompts):  # right padding: causal attention never looks at it
            ids[i, : len(p)] = torch.tensor(p)
        with autocast(self.device, self.engine.precision):
            logits = self.model(ids.to(self.device))
        results = []
        for i, (p, r) in enumerate(zip(prompts, records)):
            letters = tasks.mc_letters(r)
            candidates = torch.tensor([self._letter_id(x) for x in letters], device=self.device)
            guess = letters[int(logits[i, len(p) - 1, candidates].argmax())]
            results.append((guess == tasks.mc_letter(r), guess))
        return results

    def replies(self, records, kind, seed):
        """`num_samples` replies to each record, all generated in one batch."""
        a = self.args
        prompts = [p for p in self._prompts(records, kind) for _ in range(a.num_samples)]
        outputs = self.engine.generate_many(prompts, max_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k or None, seed=seed)
        texts = [self.tok.decode(tokens) for tokens, _ in outputs]
        return [texts[i : i + a.num_samples] for i in range(0, len(texts), a.num_samples)]

    def gsm8k(self, record, replies):
        gold = tasks.gsm8k_gold(record["answer"])
        return any(tasks.gsm8k_correct(r, gold) for r in replies)

    def humaneval(self, record, replies):
        return any(self.sandbox.run(tasks.humaneval_candidate(record, r), record["test"], record["entry_point"]).passed for r in replies)

    def run_task(self, name, kind, records, rank, world_size):
        """(correct, n, sample replies) over this rank's share of the records, with progress lines."""
        mine = list(range(rank, len(records), world_size))
        progress = Progress(name + (f" (rank {rank} of {world_size})" if world_size > 1 else ""), len(mine), log=print0)
        correct, samples = 0, []
        self.cuts = {}
        for start in range(0, len(mine), self.args.device_batch_items):
            indices = mine[start : start + self.args.device_batch_items]
            chunk = [records[i] for i in indices]
            if kind == "mc":
                for ok, reply in self.mc_batch(chunk):
                    correct += ok
                    samples.append(reply)
            else:
                score = self.gsm8k if kind == "gsm8k" else self.humaneval
                for record, replies in zip(chunk, self.replies(chunk, kind, seed=self.args.seed + indices[0])):
                    correct += score(record, replies)
                    samples.append(replies[0])
            progress.advance(len(indices))
        return correct, len(mine), samples[:SAMPLES_KEPT]


def centered(accuracy, baseline):
    return (accuracy - baseline) / (1.0 - baseline)


def table_rows(results):
    """CSV rows from [(name, kind, protocol, correct, n, test_items, baseline)], then the ChatCORE row."""
    rows = []
    for name, kind, protocol, correct, n, test_items, baseline in results:
        acc = correct / n
        rows.append({"task": name, "kind": kind, "protocol": protocol, "n": n, "test_items": test_items,
                     "accuracy": acc, "baseline": baseline, "centered": centered(acc, baseline)})
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    total = lambda key: sum(r[key] for r in rows)  # noqa: E731
    protocols = "+".join(sorted({r["protocol"] for r in rows}))
    rows.append({"task": "ChatCORE", "kind": "aggregate", "protocol": protocols, "n": total("n"), "test_items": total("test_items"),
                 "accuracy": mean("accuracy"), "baseline": mean("baseline"), "centered": mean("centered")})
    return rows


def to_csv(rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def true_or_false(text):
    if text not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return text == "true"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory (results/{stage}/{model})")
    p.add_argument("--chat-data", type=Path, help="chat data directory with tasks.json")
    p.add_argument("--task", action="append", default=[], type=parse_task_spec, metavar="NAME=FORMAT:PATH", help="an extra published task file")
    p.add_argument("--out", required=True, type=Path, help="CSV to write")
    p.add_argument("--max-per-task", type=int, default=0, help="items per task, the first of the split shuffled as nanochat does (0: all, as nanochat)")
    p.add_argument("--num-samples", type=int, default=1, help="replies sampled per generative item (correct if any is)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="tokens per reply (nanochat: 512)")
    p.add_argument("--temperature", type=finite_float, default=0.0, help="0: greedy (nanochat)")
    p.add_argument("--top-k", type=int, default=50, help="0: no top-k filter")
    p.add_argument("--device-batch-items", type=int, default=8, help="items per process at once (mc: per forward pass; generative: x num-samples rows)")
    p.add_argument("--sandbox-timeout", type=finite_float, default=5.0, help="seconds a HumanEval program may run (nanochat: 5)")
    p.add_argument("--unsandboxed", type=true_or_false, default=False, metavar="{true,false}", help="true: run HumanEval code without isolation where bubblewrap cannot start")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (temperature > 0)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=SETTINGS, default="auto", help="auto (bf16 where the device multiplies bf16 natively, else fp32), fp32 or bf16")
    tracking.add_args(p)
    args = p.parse_args(argv)
    if args.chat_data is None and not args.task:
        p.error("give --chat-data and/or --task")
    if args.chat_data is not None and not (args.chat_data / "tasks.json").exists():
        p.error(f"--chat-data {args.chat_data}: no tasks.json there")
    if not (args.checkpoint / "meta.json").exists():
        p.error(f"--checkpoint {args.checkpoint}: no meta.json there")
    for name, _, path in args.task:
        if not path.exists():
            p.error(f"--task {name}: no file {path}")
    return args


def open_sandbox(args):
    """The sandbox for model-written code, checked before any model is loaded; SystemExit saying why where it cannot start."""
    sandbox = humaneval_sandbox.Sandbox(timeout=args.sandbox_timeout, unsandboxed=args.unsandboxed)
    try:
        sandbox.verify()
    except humaneval_sandbox.SandboxUnavailable as e:
        raise SystemExit(str(e)) from None
    if sandbox.unsandboxed:
        print0("WARNING: --unsandboxed true: HumanEval code runs without isolation, as this user")
    return sandbox


def main(argv=None):
    args = parse_args(argv)
    tracking.check(args.tracking)
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, _, world_size, device = init_distributed(args.device)
    picked, skipped = collect_tasks(args.chat_data, args.task, args.max_per_task)
    if not picked:
        raise SystemExit(f"no evaluable tasks (skipped: {skipped})")
    sandbox = open_sandbox(args) if any(task[1] == "humaneval" for task in picked) else None
    model, tok, meta = load_model(args.checkpoint, device)
    precision = resolve(args.precision, device)
    evaluator = Evaluator(for_inference(model.eval(), precision), tok, device, args, sandbox, precision)
    results, details = [], {}
    for name, kind, protocol, records, test_items, baseline in picked:
        start = time.time()
        correct, n, samples = evaluator.run_task(name, kind, records, rank, world_size)
        counts = torch.tensor([correct, n, evaluator.cuts.get("reference", 0), evaluator.cuts.get("model", 0)], dtype=torch.long, device=device)
        if world_size > 1:
            dist.all_reduce(counts)
        correct, n, cut_reference, cut_model = counts.tolist()
        results.append((name, kind, protocol, correct, n, test_items, baseline))
        details[name] = {"protocol": protocol, "n": n, "test_items": test_items, "correct": correct, "seconds": round(time.time() - start, 2),
                         "prompts_cut_at_2048": cut_reference, "prompts_cut_to_model": cut_model, "sample_replies": samples}
        print0(f"{name:24s} {kind:10s} {protocol:9s} n={n:5d}/{test_items} accuracy={correct / n:.4f} baseline={baseline:.4f} ({details[name]['seconds']} s)")
    rows = table_rows(results)
    print0(f"ChatCORE {rows[-1]['centered']:.4f}")
    if rank == 0:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                    if k not in ("out", "task", "device", "tracking", "tracking_project", "tracking_dir")}
        settings["task"] = [f"{n}={f}:{p}" for n, f, p in args.task]
        inputs = [args.checkpoint / "meta.json"] + ([args.chat_data / "tasks.json"] if args.chat_data else [])
        sidecar = {
            "settings": settings,
            "checkpoint_step": meta.get("step"),
            "world_size": world_size,
            "device": str(device),
            "precision": evaluator.engine.precision,
            "skipped_tasks": skipped,
            "protocols": PROTOCOLS,
            "tasks": details,
            "provenance": provenance.record("snakechat.chat_eval", settings, inputs),
        }
        write_json_atomic(Path(f"{args.out}.meta.json"), sidecar)
        write_text_atomic(args.out, to_csv(rows))
        scores = {f"chat_eval/{r['task']}/{k}": r[k] for r in rows for k in ("accuracy", "centered")}
        tracking.report_results(args, f"chat_eval-{meta.get('stage') or args.checkpoint.parent.name}", settings, sidecar["provenance"], scores)
    cleanup_distributed()


if __name__ == "__main__":
    main()
