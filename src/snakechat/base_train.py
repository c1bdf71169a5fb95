"""Base pretraining: a GPT of a given depth trained on the pretraining shards.

    python -m snakechat.base_train --manifest results/data/tinyworld/manifest.json \
        --tokenizer results/tokenizer/tinyworld-4k --out results/base/tiny \
        --state results/state/base/tiny --depth 4 [--head-dim 64 --sequence-len 256 ...]
    torchrun --nproc_per_node=8 -m snakechat.base_train --manifest ... --depth 20

Needs the data manifest (shards beside it; the last shard is validation) and a tokenizer
directory. Depth is the one dial; every other shape and schedule number derives from it unless
given (0 = derived): width = depth × aspect_ratio rounded up to head_dim, heads = width / head_dim,
AdamW learning rates × 1/sqrt(width/768), total batch = 2^19 tokens × depth/20 rounded to a power
of two, steps = tokens_params_ratio × parameters / total batch. The derived numbers are printed
and stored in meta.json under "derived".

Writes `--out` (model.pt, meta.json, train_log.csv) when training is done, then empties `--state`.
Resumable state goes to `--state` every `--save-every` steps and on SIGTERM/SIGUSR1 (the process
then exits with 128 + the signal number); running again resumes from it.
"""

import argparse
import time

import torch

from snakechat import dataset, provenance
from snakechat import sizing
from snakechat.bpb import bits_per_byte
from snakechat.checkpoint import save_checkpoint
from snakechat.common import cleanup_distributed, init_distributed, print0
from snakechat.dataloader import PackedLoader
from snakechat.gpt import GPT
from snakechat.tokenizer import Tokenizer, load_token_bytes
from snakechat.train_loop import StateStore, TrainConfig, grad_accum_steps, train

CPU_COMPILE_MIN_SECONDS = 900  # `--compile auto` on CPU: compile only runs expected to take longer (see decide_compile)


def decide_compile(setting, device, expected_seconds):
    """torch.compile always pays on CUDA. On a 2-core CPU (depth 4-6, seq 512) it costs 20-40 s on
    a cold cache and saves 7-14% of each step on an AVX2 EPYC, 1-7% on an AVX-512 one, so it pays
    after roughly 250-1,300 s of eager steps; auto compiles runs estimated above
    CPU_COMPILE_MIN_SECONDS, in that range."""
    if setting in ("true", "false"):
        return setting == "true"
    if device.type == "cuda":
        return True
    return expected_seconds is not None and expected_seconds > CPU_COMPILE_MIN_SECONDS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="data manifest.json (shards beside it)")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--state", required=True, help="resumable state directory (not a Snakemake output)")
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--aspect-ratio", type=int, default=64)
    p.add_argument("--width", type=int, default=0, help="0 = depth × aspect ratio")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--n-kv-head", type=int, default=0, help="0 = as many as query heads")
    p.add_argument("--sequence-len", type=int, default=2048)
    p.add_argument("--device-batch-rows", type=int, default=32, help="rows per process per forward/backward pass")
    p.add_argument("--step-tokens", type=int, default=0, help="tokens per optimizer step, all processes; 0 = derived from depth")
    p.add_argument("--tokens-params-ratio", type=float, default=20.0)
    p.add_argument("--steps", type=int, default=0, help="optimizer steps; 0 = tokens_params_ratio × params / step_tokens")
    p.add_argument("--matrix-lr", type=float, default=0.02)
    p.add_argument("--embedding-lr", type=float, default=0.2, help="at width 768; scaled by 1/sqrt(width/768)")
    p.add_argument("--unembedding-lr", type=float, default=0.004, help="at width 768; scaled by 1/sqrt(width/768)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-frac", type=float, default=0.0)
    p.add_argument("--warmdown-frac", type=float, default=0.2)
    p.add_argument("--final-lr-frac", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=250, help="steps between validation bpb (0 = only at the end)")
    p.add_argument("--eval-tokens", type=int, default=10 * 2**20, help="validation tokens (whole steps' worth, at least one)")
    p.add_argument("--save-every", type=int, default=1000, help="steps between resumable states (0 = only at the end)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--compile", choices=["auto", "true", "false"], default="auto")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train_paths = dataset.shard_paths(args.manifest, "train")
    val_paths = dataset.shard_paths(args.manifest, "val")
    missing = [str(p) for p in train_paths + val_paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing data shards listed in {args.manifest}: {missing}")
    tokenizer = Tokenizer.load(args.tokenizer)
    token_bytes = load_token_bytes(args.tokenizer)

    rank, _, world_size, device = init_distributed(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    size = sizing.size(args.depth, tokenizer.vocab_size, **{k: getattr(args, k) for k in sizing.SIZE_KEYS})
    model_config = size.model_config()
    torch.manual_seed(args.seed)
    model = GPT(model_config).to(device)
    total_batch, num_iterations = size.step_tokens, size.steps
    lr_scale = size.adamw_lr_scale
    cfg = TrainConfig(
        num_iterations=num_iterations, total_batch_size=total_batch, device_batch_size=args.device_batch_rows, sequence_len=args.sequence_len,
        matrix_lr=args.matrix_lr, embedding_lr=args.embedding_lr * lr_scale, unembedding_lr=args.unembedding_lr * lr_scale,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_frac, warmdown_ratio=args.warmdown_frac, final_lr_frac=args.final_lr_frac,
        grad_clip=args.grad_clip, eval_every=args.eval_every, save_every=args.save_every, log_every=args.log_every, seed=args.seed,
    )
    derived = {
        **size.record(), "embedding_lr": cfg.embedding_lr, "unembedding_lr": cfg.unembedding_lr, "matrix_lr": cfg.matrix_lr, "world_size": world_size,
        "grad_accum_steps": sizing.grad_accum_steps(total_batch, args.device_batch_rows, args.sequence_len, world_size),
    }
    print0("derived: " + ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v:.4g}" for k, v in derived.items()))

    rows_per_step, rest = divmod(total_batch, args.sequence_len)
    if rest:
        raise SystemExit(f"total_batch_size {total_batch} is not a multiple of sequence_len {args.sequence_len}")
    loader = PackedLoader(train_paths, tokenizer, args.sequence_len, args.device_batch_rows, rows_per_step, rank, world_size, args.seed, device)
    # Validation reads the same rows whatever the number of processes: lanes as in training.
    eval_micro_batches = max(1, args.eval_tokens // total_batch) * (rows_per_step // (args.device_batch_rows * world_size))

    def evaluate(model):
        val_loader = PackedLoader(val_paths, tokenizer, args.sequence_len, args.device_batch_rows, rows_per_step, rank, world_size, 0, device)
        return bits_per_byte(model, val_loader, eval_micro_batches, token_bytes)

    expected_seconds = None
    if args.compile == "auto" and device.type == "cpu":
        expected_seconds = estimate_cpu_seconds(model, cfg, world_size)
    cfg.compile = decide_compile(args.compile, device, expected_seconds)
    print0(f"torch.compile: {cfg.compile}" + (f" (eager run estimated at {expected_seconds:.0f}s)" if expected_seconds else ""))

    started = time.time()
    summary = train(model, loader, cfg, args.state, device, evaluate=evaluate, model_identity=model_config.to_dict())
    if rank == 0:
        meta = {
            "model_config": model_config.to_dict(), "derived": derived, "train": {**vars(args), **cfg.identity(), "compile": cfg.compile},
            "tokenizer": str(args.tokenizer), "step": summary["step"], "tokens": summary["tokens"], "flops": summary["flops"],
            "elapsed_s": summary["elapsed_s"], "world_size": world_size, "device": str(device), "final_loss": summary["final_loss"],
            "val_bpb": summary["val_bpb"], "resumed_from": summary["resumed_from"],
            "provenance": provenance.record("snakechat.base_train", vars(args), inputs=[args.manifest, args.tokenizer]),
        }
        save_checkpoint(args.out, model, meta, extra_files={"train_log.csv": summary["log_path"]})
        StateStore(args.state).clear()
        print0(f"wrote {args.out} (val bpb {summary['val_bpb']:.4f}, {time.time() - started:.0f}s this run)")
    cleanup_distributed()


def estimate_cpu_seconds(model, cfg, world_size):
    """Predict an eager run's length from one timed forward+backward on random tokens."""
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, model.config.vocab_size, (cfg.device_batch_size, cfg.sequence_len), generator=gen)
    for _ in range(2):  # the first pass pays for memory allocation
        start = time.perf_counter()
        model(inputs, inputs).backward()
        per_micro = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return per_micro * grad_accum_steps(cfg, world_size) * cfg.num_iterations


if __name__ == "__main__":
    main()
