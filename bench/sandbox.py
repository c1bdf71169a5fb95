"""Cost of the HumanEval sandbox: every canonical solution through it, against a plain subprocess, in one run.

    python bench/sandbox.py                                  # ../shared/data's HumanEval.jsonl.gz, all 164
    python bench/sandbox.py --humaneval HumanEval.jsonl.gz --limit 20 --quiet

For each problem the canonical solution (prompt + canonical_solution, the whole function, as a model
reply would give it) is run three ways, in a rotating order so that the shared machine's noise
falls on all three alike:
  plain      `python -I -S -c <nanochat's program>` (imports, code, tests, check(...)): no isolation;
  harness    the sandbox's harness without bwrap (`unsandboxed`): two processes, the token;
  sandbox    the harness inside bubblewrap, as chat_eval runs it.
Prints one line per problem (milliseconds, overhead = sandbox - plain) and a summary: how many
pass each way (all must pass the sandbox) and the overhead's median, mean, 90th percentile and max.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from snakechat.evaluate import tasks
from snakechat.evaluate.humaneval_sandbox import Sandbox

DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/chat/humaneval/original/HumanEval.jsonl.gz"


def plain(record, reply, timeout):
    start = time.monotonic()
    try:
        run = subprocess.run([sys.executable, "-I", "-S", "-c", tasks.humaneval_program(record, reply)], capture_output=True, timeout=timeout)
        ok = run.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    return ok, time.monotonic() - start


def through(box):
    def run(record, reply, timeout):
        start = time.monotonic()
        result = box.run(tasks.humaneval_candidate(record, reply), record["test"], record["entry_point"])
        return result.passed, time.monotonic() - start, result.detail
    return run


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--humaneval", type=Path, default=DEFAULT, help="HumanEval.jsonl(.gz) as published")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per program")
    p.add_argument("--limit", type=int, default=0, help="first N problems only (0: all)")
    p.add_argument("--quiet", action="store_true", help="summary only")
    args = p.parse_args(argv)
    records = list(tasks.read(args.humaneval, "humaneval"))
    if args.limit:
        records = records[: args.limit]
    sandbox = Sandbox(timeout=args.timeout)
    sandbox.verify()
    ways = {"plain": plain, "harness": through(Sandbox(timeout=args.timeout, unsandboxed=True)), "sandbox": through(sandbox)}
    names = list(ways)
    times = {n: [] for n in names}
    passed = {n: 0 for n in names}
    failures = []
    if not args.quiet:
        print(f"{'task':16s} {'plain ms':>9s} {'harness ms':>10s} {'sandbox ms':>10s} {'overhead ms':>11s} {'ratio':>6s}")
    for i, record in enumerate(records):
        reply = record["prompt"] + record["canonical_solution"]
        got = {}
        for name in names[i % 3:] + names[: i % 3]:  # rotate who goes first
            ok, seconds, *detail = ways[name](record, reply, args.timeout)
            got[name] = seconds
            times[name].append(seconds)
            passed[name] += ok
            if not ok:
                failures.append((record["task_id"], name, (detail or [""])[0][-300:]))
        if not args.quiet:
            over = got["sandbox"] - got["plain"]
            print(f"{record['task_id']:16s} {got['plain'] * 1e3:9.1f} {got['harness'] * 1e3:10.1f} {got['sandbox'] * 1e3:10.1f} {over * 1e3:11.1f} {got['sandbox'] / got['plain']:6.2f}")
    n = len(records)
    print(f"\n{n} problems; passed: " + ", ".join(f"{k} {passed[k]}/{n}" for k in names))
    for task_id, name, detail in failures:
        print(f"  FAILED {task_id} ({name}): {detail.strip()}")
    for name in names:
        t = times[name]
        print(f"{name:8s} per problem: median {statistics.median(t) * 1e3:7.1f} ms, mean {statistics.mean(t) * 1e3:7.1f} ms, total {sum(t):6.1f} s")
    for label, other in (("sandbox - plain", "plain"), ("sandbox - harness", "harness"), ("harness - plain", None)):
        a, b = (times["sandbox"], times[other]) if other else (times["harness"], times["plain"])
        over = [x - y for x, y in zip(a, b)]
        print(f"{label:18s} overhead: median {statistics.median(over) * 1e3:7.1f} ms, mean {statistics.mean(over) * 1e3:7.1f} ms, "
              f"p90 {percentile(over, 0.9) * 1e3:7.1f} ms, max {max(over) * 1e3:7.1f} ms; ratio of medians {statistics.median(a) / statistics.median(b):.2f}")
    if passed["sandbox"] != n:
        sys.exit(1)


if __name__ == "__main__":
    main()
