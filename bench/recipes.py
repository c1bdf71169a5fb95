"""The nanochat-2026-07 recipe against nanochat-2025-11 on real text: the same depth, the same
shards, the same tokens per step and the same training FLOPs, each with its own recipe's settings
(2025: base_train's defaults, the schema's; 2026: the recipe's values, as the config's gpt2 model
sets them). Validation bits per byte at the end of each run and training tokens/s, in one
invocation, through the real base_train stage (data loader, trainer, optimizers, schedules).

    python bench/recipes.py ../shared/data/pretrain --depth 4 --seq-len 256 --step-tokens 4096 --flops 2e13

The last shard of the folder is validation, the others training (as the pipeline's manifests).
A tokenizer of `--vocab` ids is trained first on the first `--tokenizer-chars` characters of the
training shards. Each recipe's steps = round(flops / (its FLOPs per token × step tokens)): the
2026 model's windowed attention and gates change its FLOPs per token, so the two may train on a
different number of tokens for the same compute. The runs go one after the other, on `--threads`
threads each, and each run's tokens/s is the median of its steps after the first two.

Both recipes are run as specified, untuned. The 2026 recipe scales its lrs by √(step tokens / 2^19)
(§4.4) and warms up over 40 steps: at CPU-sized batches its lrs are a fraction of the d12 ones, by
design of the recipe; `--step-tokens` changes that for both sides alike.

Measured 2026-12-06, torch 2.13 CPU, fp32, eager, on the shared 2-core AMD EPYC (AVX2; load
average ~11, so tokens/s are low and only their ratio means much), one thread per run:
`--depth 4 --seq-len 256 --device-batch 8 --step-tokens 2048 --flops 3.5e12 --tokenizer-chars 1000000
--eval-tokens 65536` (vocab 4096):

| recipe | params | steps | tokens | train FLOPs | val bpb | loss (last 5) | tokens/s |
|---|---|---|---|---|---|---|---|
| nanochat-2025-11 | 5,242,880 | 60 | 122,880 | 3.48e12 | **2.5616** | 5.8599 | 410 |
| nanochat-2026-07 | 7,340,114 | 63 | 129,024 | 3.50e12 | 3.3986 | 7.7032 | 442 |

The 2025 recipe wins at equal FLOPs here, by 0.84 bpb; the 2026 model trains 8% more tokens/s
(fewer attention FLOPs under its windows, none on its value embeddings). At 2,048 tokens a step
the 2026 recipe's lrs are 1/16 of their d12 values (√(2048/2^19)) and 63 steps hardly leave its
40-step warm-up: this measures the recipes at CPU scale, not the 2026 recipe at the batch sizes
its law picks (2^18 tokens at d4).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from snakechat.data.shards import iter_texts
from snakechat.model import recipes, sizing
from snakechat.model.tokenizer import Tokenizer

# the 2026 recipe's base_train values (§4.4-4.7; config.yaml's gpt2 model passes the same)
RECIPE_2026_FLAGS = ["--matrix-lr", "0.02", "--embedding-lr", "0.3", "--unembedding-lr", "0.008", "--weight-decay", "0.28",
                     "--warmdown-frac", "0.65", "--final-lr-frac", "0.05", "--grad-clip", "0"]


def prepare(shard_dir, work, vocab, tokenizer_chars):
    """A manifest over the shards (linked, not copied) and a tokenizer trained on the training shards."""
    shards = sorted(Path(shard_dir).glob("shard_*.parquet"))
    if len(shards) < 2:
        raise SystemExit(f"{shard_dir}: need at least two shard_*.parquet (the last one is validation)")
    entries = []
    for path in shards:
        (work / path.name).symlink_to(path.resolve())
        entries.append({"file": path.name, "rows": 0, "bytes": path.stat().st_size})
    (work / "manifest.json").write_text(json.dumps({"shards": entries}))
    texts, total = [], 0
    for text in iter_texts(shards[:-1]):
        texts.append(text)
        total += len(text)
        if total >= tokenizer_chars:
            break
    tok = Tokenizer.train(texts, vocab)
    tok.save(work / "tok")
    return tok.vocab_size


def flops_per_token(recipe, depth, vocab, seq_len):
    if recipe == recipes.NANOCHAT_2026:
        return sizing.size_2026(depth, vocab, sequence_len=seq_len, num_iterations=1).flops_per_token
    return sizing.size(depth, vocab, seq_len, 64, 128, 0, 0, 0, 1, 20.0).flops_per_token


def run(recipe, work, args, steps):
    name = recipe.replace("-", "_")
    cmd = [sys.executable, "-m", "snakechat.base_train", "--manifest", str(work / "manifest.json"), "--tokenizer", str(work / "tok"),
           "--out", str(work / name), "--state", str(work / f"state_{name}"), "--recipe", recipe, "--depth", str(args.depth),
           "--sequence-len", str(args.seq_len), "--device-batch-rows", str(args.device_batch), "--step-tokens", str(args.step_tokens),
           "--steps", str(steps), "--eval-every", "0", "--eval-tokens", str(args.eval_tokens), "--save-every", "0", "--log-every", "10",
           "--compile", "false", "--device", "cpu", "--precision", "fp32", "--seed", str(args.seed)]
    cmd += RECIPE_2026_FLAGS if recipe == recipes.NANOCHAT_2026 else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if proc.returncode:
        raise SystemExit(f"{recipe} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    meta = json.loads((work / name / "meta.json").read_text())
    rows = (work / name / "train_log.csv").read_text().splitlines()
    header = rows[0].split(",")
    values = [dict(zip(header, r.split(","))) for r in rows[1:]]
    tok_s = statistics.median(float(r["tokens_per_s"]) for r in values[2:])
    losses = [float(r["loss"]) for r in values]
    return {"recipe": recipe, "steps": steps, "tokens": meta["tokens"], "flops": meta["flops"], "val_bpb": meta["val_bpb"],
            "final_loss": sum(losses[-5:]) / len(losses[-5:]), "tokens_per_s": tok_s, "wall_s": time.perf_counter() - start,
            "params": sum(v.numel() for v in torch.load(work / name / "model.pt", weights_only=True).values())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards", help="folder of shard_*.parquet (the last one is validation), e.g. ../shared/data/pretrain")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--device-batch", type=int, default=8)
    p.add_argument("--step-tokens", type=int, default=4096)
    p.add_argument("--flops", type=float, default=2e13, help="training FLOPs of each run")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--tokenizer-chars", type=int, default=5_000_000)
    p.add_argument("--eval-tokens", type=int, default=2**17)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vocab = prepare(args.shards, work, args.vocab, args.tokenizer_chars)
        plans = {r: max(1, round(args.flops / (flops_per_token(r, args.depth, vocab, args.seq_len) * args.step_tokens))) for r in recipes.RECIPES}
        print(f"depth {args.depth}, seq {args.seq_len}, vocab {vocab}, {args.step_tokens:,} tokens a step, {args.flops:.3g} training FLOPs each: "
              + ", ".join(f"{r} {s} steps" for r, s in plans.items()), flush=True)
        results = [run(r, work, args, s) for r, s in plans.items()]
    print("| recipe | params | steps | tokens | train FLOPs | val bpb | loss (last 5) | tokens/s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['recipe']} | {r['params']:,} | {r['steps']} | {r['tokens']:,} | {r['flops']:.3g} | {r['val_bpb']:.4f} | {r['final_loss']:.4f} | "
              f"{r['tokens_per_s']:,.0f} | {r['wall_s']:.0f} |")
    best = min(results, key=lambda r: r["val_bpb"])
    other = next(r for r in results if r is not best)
    print(f"lower val bpb at equal FLOPs: {best['recipe']} ({best['val_bpb']:.4f} vs {other['val_bpb']:.4f}); "
          f"tokens/s {results[1]['recipe']} / {results[0]['recipe']}: {results[1]['tokens_per_s'] / results[0]['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
