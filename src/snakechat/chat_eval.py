"""Evaluate a chat checkpoint on held-out chat tasks: one CSV row per task plus ChatCORE.

    python -m snakechat.chat_eval --checkpoint results/sft/tiny \\
        --chat-data results/chat_data/tinyworld --out results/chat_eval/tiny/sft.csv --max-per-task 200
    torchrun --nproc_per_node=8 -m snakechat.chat_eval --checkpoint results/sft/d20 \\
        --chat-data results/chat_data/smoltalk --out results/chat_eval/d20/sft.csv \\
        --task GSM8K=gsm8k:gsm8k/test.jsonl --task HumanEval=humaneval:HumanEval.jsonl.gz

Inputs: a checkpoint directory (any stage, base included: every model is prompted the same way,
as a chat), a chat data directory (`tasks.json`; every task with a `test` split of kind mc,
gsm8k or humaneval is evaluated) and optionally extra published task files given as
NAME=FORMAT:PATH (formats of `snakechat.tasks.read`).

- mc (ARC, MMLU and their built-in twins): the question rendered with `tasks.render_mc` as a
  user turn; the prediction is the answer letter with the highest logit right after
  <|assistant_start|>, among the item's letters only.
- gsm8k (word problems, spelling/counting): `num_samples` replies sampled by the engine (tool
  calls run), `device_batch_items` items at a time; correct if any reply's number after '####' equals
  the reference's.
- humaneval: the reply's code run against the tests in `snakechat.humaneval_sandbox`.

Items (at most `max_per_task` per task, a seeded shuffle of the test split) are dealt to ranks
round-robin and the counts summed. Output: `task,kind,n,accuracy,baseline,centered` with
centered = (accuracy - baseline) / (1 - baseline), last row ChatCORE (mean centered accuracy;
its accuracy and baseline columns are means too), and `<out>.meta.json` with settings,
provenance and sample replies.
"""

import argparse
import csv
import io
import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from snakechat import humaneval_sandbox, provenance, tasks
from snakechat.checkpoint import load_model
from snakechat.common import cleanup_distributed, init_distributed, print0, write_json_atomic, write_text_atomic
from snakechat.conversation import render_for_completion
from snakechat.engine import Engine

EVALUATED_KINDS = ("mc", "gsm8k", "humaneval")
COLUMNS = ["task", "kind", "n", "accuracy", "baseline", "centered"]
SAMPLES_KEPT = 3  # replies per task written to the sidecar


def parse_task_spec(spec):
    """NAME=FORMAT:PATH -> (name, format, path), with an error that repeats the bad spec."""
    name, eq, rest = spec.partition("=")
    fmt, colon, path = rest.partition(":")
    if not (eq and colon and name and fmt and path):
        raise argparse.ArgumentTypeError(f"--task {spec!r}: expected NAME=FORMAT:PATH, e.g. GSM8K=gsm8k:test.jsonl")
    if fmt not in tasks.FORMAT_KINDS:
        raise argparse.ArgumentTypeError(f"--task {spec!r}: unknown format {fmt!r} (known: {', '.join(sorted(tasks.FORMAT_KINDS))})")
    return name, fmt, Path(path)


def collect_tasks(chat_dir, extra, max_per_task, seed):
    """[(name, kind, records, baseline)] for every evaluable task, and the names skipped with why."""
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
            found.append((name, kind, records, entry.get("random_baseline", tasks.random_baseline(records, kind))))
    for name, fmt, path in extra:
        kind = tasks.FORMAT_KINDS[fmt]
        if kind not in EVALUATED_KINDS:
            raise ValueError(f"--task {name}: format {fmt!r} gives {kind} records, which have no answer to score")
        records = list(tasks.read(path, fmt))
        found.append((name, kind, records, tasks.random_baseline(records, kind)))
    picked = []
    for name, kind, records, baseline in found:
        if not records:
            raise ValueError(f"task {name!r}: the test split is empty")
        if max_per_task and len(records) > max_per_task:
            records = random.Random(f"{seed}:{name}").sample(records, max_per_task)
        picked.append((name, kind, records, float(baseline)))
    return picked, skipped


def prompt_ids(tok, record, kind, max_len):
    """The chat prompt of a record (user turn, then <|assistant_start|>), cut from the left to fit."""
    conversation = tasks.to_conversation(record, kind)
    ids = render_for_completion(tok, {"messages": conversation["messages"][:-1]})
    return ids[-(max_len - 1):] if len(ids) >= max_len else ids


class Evaluator:
    def __init__(self, model, tok, device, args):
        self.model, self.tok, self.device, self.args = model, tok, device, args
        self.engine = Engine(model, tok)
        self.letter_ids = [self._letter_id(letter) for letter in tasks.LETTERS]

    def _letter_id(self, letter):
        ids = self.tok.encode(letter)
        if len(ids) != 1:
            raise ValueError(f"answer letter {letter!r} is not a single token ({ids}) for this tokenizer")
        return ids[0]

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()

    @torch.inference_mode()
    def mc_batch(self, records):
        """Whether each record's highest-logit letter (among its own letters) is the answer."""
        prompts = [prompt_ids(self.tok, r, "mc", self.engine.max_len) for r in records]
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, p in enumerate(prompts):  # right padding: causal attention never looks at it
            ids[i, : len(p)] = torch.tensor(p)
        with self._autocast():
            logits = self.model(ids.to(self.device))
        results = []
        for i, (p, r) in enumerate(zip(prompts, records)):
            letters = torch.tensor(self.letter_ids[: len(r["choices"])], device=self.device)
            guess = int(logits[i, len(p) - 1, letters].argmax())
            results.append((guess == r["answer"], tasks.LETTERS[guess]))
        return results

    def replies(self, records, kind, seed):
        """`num_samples` replies to each record, all generated in one batch."""
        a = self.args
        prompts = [prompt_ids(self.tok, r, kind, self.engine.max_len) for r in records for _ in range(a.num_samples)]
        outputs = self.engine.generate_many(prompts, max_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k or None, seed=seed)
        texts = [self.tok.decode(tokens) for tokens, _ in outputs]
        return [texts[i : i + a.num_samples] for i in range(0, len(texts), a.num_samples)]

    def gsm8k(self, record, replies):
        reference = tasks.extract_answer(record["answer"])
        return any(same_number(tasks.extract_answer(r), reference) for r in replies)

    def humaneval(self, record, replies):
        return any(humaneval_sandbox.check_completion(record, r, timeout=self.args.sandbox_timeout).passed for r in replies)

    def run_task(self, kind, records, rank, world_size):
        """(correct, n, sample replies) over this rank's share of the records."""
        mine = list(range(rank, len(records), world_size))
        correct, samples = 0, []
        for start in range(0, len(mine), self.args.device_batch_items):
            indices = mine[start : start + self.args.device_batch_items]
            chunk = [records[i] for i in indices]
            if kind == "mc":
                for ok, reply in self.mc_batch(chunk):
                    correct += ok
                    samples.append(reply)
                continue
            score = self.gsm8k if kind == "gsm8k" else self.humaneval
            for record, replies in zip(chunk, self.replies(chunk, kind, seed=self.args.seed + indices[0])):
                correct += score(record, replies)
                samples.append(replies[0])
        return correct, len(mine), samples[:SAMPLES_KEPT]


def same_number(a, b):
    if a is None or b is None:
        return False
    try:
        return abs(float(a) - float(b)) < 1e-6
    except ValueError:
        return a.strip() == b.strip()


def centered(accuracy, baseline):
    return (accuracy - baseline) / (1.0 - baseline)


def table_rows(results):
    """CSV rows from [(name, kind, correct, n, baseline)], then the ChatCORE row."""
    rows = []
    for name, kind, correct, n, baseline in results:
        acc = correct / n
        rows.append({"task": name, "kind": kind, "n": n, "accuracy": acc, "baseline": baseline, "centered": centered(acc, baseline)})
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    rows.append({"task": "ChatCORE", "kind": "aggregate", "n": sum(r["n"] for r in rows), "accuracy": mean("accuracy"), "baseline": mean("baseline"), "centered": mean("centered")})
    return rows


def to_csv(rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory (results/{stage}/{model})")
    p.add_argument("--chat-data", type=Path, help="chat data directory with tasks.json")
    p.add_argument("--task", action="append", default=[], type=parse_task_spec, metavar="NAME=FORMAT:PATH", help="an extra published task file")
    p.add_argument("--out", required=True, type=Path, help="CSV to write")
    p.add_argument("--max-per-task", type=int, default=500, help="items per task (0: all)")
    p.add_argument("--num-samples", type=int, default=1, help="replies sampled per generative item (correct if any is)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=50, help="0: no top-k filter")
    p.add_argument("--device-batch-items", type=int, default=8, help="items per process at once (mc: per forward pass; generative: x num-samples rows)")
    p.add_argument("--sandbox-timeout", type=float, default=10.0, help="seconds a HumanEval program may run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--device", default="auto")
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


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, _, world_size, device = init_distributed(args.device)
    picked, skipped = collect_tasks(args.chat_data, args.task, args.max_per_task, args.seed)
    if not picked:
        raise SystemExit(f"no evaluable tasks (skipped: {skipped})")
    model, tok, meta = load_model(args.checkpoint, device)
    model.eval()
    evaluator = Evaluator(model, tok, device, args)
    results, details = [], {}
    for name, kind, records, baseline in picked:
        start = time.time()
        correct, n, samples = evaluator.run_task(kind, records, rank, world_size)
        counts = torch.tensor([correct, n], dtype=torch.long, device=device)
        if world_size > 1:
            dist.all_reduce(counts)
        correct, n = counts.tolist()
        results.append((name, kind, correct, n, baseline))
        details[name] = {"seconds": round(time.time() - start, 2), "correct": correct, "sample_replies": samples}
        print0(f"{name:24s} {kind:10s} n={n:5d} accuracy={correct / n:.4f} baseline={baseline:.4f} ({details[name]['seconds']} s)")
    rows = table_rows(results)
    print0(f"ChatCORE {rows[-1]['centered']:.4f}")
    if rank == 0:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "task", "device")}
        settings["task"] = [f"{n}={f}:{p}" for n, f, p in args.task]
        inputs = [args.checkpoint / "meta.json"] + ([args.chat_data / "tasks.json"] if args.chat_data else [])
        sidecar = {
            "settings": settings,
            "checkpoint_step": meta.get("step"),
            "world_size": world_size,
            "device": str(device),
            "skipped_tasks": skipped,
            "tasks": details,
            "provenance": provenance.record("snakechat.chat_eval", settings, inputs),
        }
        write_json_atomic(Path(f"{args.out}.meta.json"), sidecar)
        write_text_atomic(args.out, to_csv(rows))
    cleanup_distributed()


if __name__ == "__main__":
    main()
