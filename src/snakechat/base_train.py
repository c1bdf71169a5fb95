"""Base pretraining: a GPT of a given depth trained on the pretraining shards.

    python -m snakechat.base_train --manifest results/data/tinyworld/manifest.json \\
        --tokenizer results/tokenizer/tinyworld-4k --out results/base/tiny \\
        --state results/state/base/tiny --depth 4 [--head-dim 64 --sequence-len 256 ...]
    torchrun --nproc_per_node=8 -m snakechat.base_train --manifest ... --depth 20

Needs the data manifest (shards beside it; the last shard is validation) and a tokenizer
directory. `--recipe` picks the model (snakechat.model.recipes: nanochat-2025-11, the default, or
nanochat-2026-07); it is recorded in meta.json's model_config, from which every later stage rebuilds
it. Depth is the one dial: width, heads, tokens per step and steps derive from it unless
given (0 = derived), as snakechat.model.sizing works them out; the AdamW learning rates are given at
width 768 and scaled by 1/sqrt(width/768). The derived numbers are printed and stored in
meta.json under "derived".

A step takes `--step-tokens` tokens in rows of `--sequence-len` packed documents (see
snakechat.train.dataloader), `--device-batch-rows` rows per process and forward/backward pass, with
gradient accumulation for the rest. Validation bits per byte on the last shard every
`--eval-every` steps. The loop, resumable state under `--state`, signals and the checkpoint in
`--out` (model.pt, meta.json, train_log.csv) are snakechat.train.trainer's.
"""

import time
from dataclasses import dataclass

import torch

from snakechat.model import precision
from snakechat.data import shards
from snakechat.model import sizing
from snakechat.evaluate.bpb import bits_per_byte
from snakechat.runtime.common import cleanup_distributed, device_type, init_distributed, print0
from snakechat.train.dataloader import PackedLoader
from snakechat.model import recipes
from snakechat.model.gpt import GPT
from snakechat.train.optim import NEWTON_SCHULZ, Schedule
from snakechat.train.schedules2026 import SCALAR_LR, BaseSchedule2026
from snakechat.runtime.settings import json_arg, option, parse
from snakechat.model.tokenizer import Tokenizer, load_token_bytes
from snakechat.train.trainer import Run, RunSettings, TokenRecipe, Trainer

CPU_COMPILE_MIN_SECONDS = 900  # `--compile auto` on CPU: compile only runs expected to take longer (see decide_compile)


@dataclass(kw_only=True)
class BaseSettings(RunSettings):
    manifest: str = option(help="data manifest.json (shards beside it)", identity=False)
    tokenizer: str = option(help="tokenizer directory", identity=False)
    depth: int = option(help="transformer layers: the one dial the rest derives from")
    # in the identity through the model's config, where a nanochat-2026-07 model records it
    recipe: str = option(recipes.DEFAULT, "nanochat-2025-11 or nanochat-2026-07 (its model, MuonAdamW, schedules and sizing)",
                         choices=list(recipes.RECIPES), identity=False)
    aspect_ratio: int = option(64, "width = depth × aspect_ratio (rounded up to head_dim)")
    width: int = option(0, "model width; 0 = depth × aspect_ratio")
    head_dim: int = option(128, "channels per attention head")
    n_kv_head: int = option(0, "key/value heads; 0 = as many as query heads")
    sequence_len: int = option(2048, "tokens per row: the model's context length")
    device_batch_rows: int = option(32, "rows per process per forward/backward pass")
    step_tokens: int = option(0, "tokens per optimizer step, all processes; 0 = derived from depth")
    tokens_params_ratio: float = option(20.0, "training tokens per parameter, when --steps is 0")
    steps: int = option(0, "optimizer steps; 0 = tokens_params_ratio × params / step_tokens")
    target_flops: float = option(0.0, "training FLOPs to spend (steps = this / (FLOPs per token × step_tokens), to the nearest step); 0 = unused")
    matrix_lr: float = option(0.02, "Muon lr of the hidden matrices")
    embedding_lr: float = option(0.2, "AdamW lr of the embedding at width 768; scaled by 1/sqrt(width/768)")
    unembedding_lr: float = option(0.004, "AdamW lr of the head at width 768; scaled by 1/sqrt(width/768)")
    weight_decay: float = option(0.0, "nanochat-2025-11: AdamW's decoupled weight decay of the embedding and head (Muon's matrices have none); nanochat-2026-07: Muon's, at d12, scaled by the T_epoch rule")
    muon_momentum_warmup: int = option(300, "steps over which Muon's momentum rises from 0.85 to 0.95 (0: 0.95 throughout; nanochat-2025-11)")
    newton_schulz: str = option("auto", "Muon's orthogonalisation: nanochat (b399e43's bf16 ops), precision (snakechat's, in the run's precision), auto (nanochat under bf16, else precision)",
                                choices=list(NEWTON_SCHULZ))
    warmup_frac: float = option(0.0, "first fraction of steps of linear lr warm-up (nanochat-2025-11)")
    warmdown_frac: float = option(0.2, "last fraction of steps of linear lr decay to final_lr_frac")
    final_lr_frac: float = option(0.0, "lr at the last step, as a fraction of the full lr")
    grad_clip: float = option(1.0, "max gradient norm (0: no clipping)")
    eval_every: int = option(250, "steps between validation bpb (0 = only at the end)", identity=False)
    eval_tokens: int = option(10 * 2**20, "validation tokens (whole steps' worth, at least one)", identity=False)
    save_every: int = option(1000, "steps between resumable states (0 = only at the end)", identity=False)
    log_every: int = option(10, "steps between progress lines", identity=False)
    compile: str = option("auto", "torch.compile: auto (CUDA, and CPU runs estimated over 15 min), true or false", choices=["auto", "true", "false"], identity=False)
    seed: int = option(42, "seeds the initial weights and the order of the data")
    fp8: bool = option(False, "nanochat's fp8 Linear layers: GPU-only and not implemented, true is refused (snakechat.model.precision.refuse_fp8)", parse=json_arg, choices=[False, True], identity=False)


def decide_compile(setting, device, expected_seconds):
    """torch.compile always pays on CUDA. On a 2-core CPU (depth 4-6, seq 256-512) it costs 20-40 s
    on a cold cache and saves 7-14% of each fp32 step on an AVX2 EPYC, 1-7% on an AVX-512 one; in
    bf16 (Zen 5, AVX512-BF16) it saves 11-21% of each step (the elementwise work it fuses is a
    larger share once the matmuls run 3x faster) for 20-85 s of compiling. So it pays after
    roughly 100-1,300 s of eager steps; auto compiles runs estimated above CPU_COMPILE_MIN_SECONDS,
    in that range (the estimate is timed in the run's precision)."""
    if setting in ("true", "false"):
        return setting == "true"
    if device.type == "cuda":
        return True
    return expected_seconds is not None and expected_seconds > CPU_COMPILE_MIN_SECONDS


def estimate_cpu_seconds(model, s, micro_steps, steps, device):
    """Predict an eager run's length from one timed forward+backward on random tokens, in the run's precision."""
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, model.config.vocab_size, (s.device_batch_rows, s.sequence_len), generator=gen)
    for _ in range(2):  # the first pass pays for memory allocation
        start = time.perf_counter()
        with precision.autocast(device, precision.resolve(s.precision, device)):
            loss = model(inputs, inputs)
        loss.backward()
        per_micro = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return per_micro * micro_steps * steps


class Size2026:
    """sizing.Sizing2026 under the names base_train reads (step_tokens, steps, flops_per_token)."""

    def __init__(self, sizing_2026):
        self.sizing = sizing_2026
        self.step_tokens, self.steps = sizing_2026.total_batch_size, sizing_2026.num_iterations
        self.flops_per_token = sizing_2026.flops_per_token

    def record(self):
        return self.sizing.record()


def setup_2026(s, vocab_size, device):
    """(model, size, base lrs, schedule) of a nanochat-2026-07 run. The lr flags are base_train's
    of the recipe (§4.4, scaled here by the batch and in the groups by the width; the scalars' lr is
    the recipe's fixed 0.5), --weight-decay is Muon's λ at d12 (§4.5). The base lrs recorded for the
    chat stages are the flags' unscaled values, which its SFT starts from (§6.5)."""
    if s.width or s.n_kv_head:
        raise SystemExit(f"--recipe {s.recipe} derives the width and heads from --depth: leave --width and --n-kv-head at 0")
    lrs = {"matrix_lr": s.matrix_lr, "embedding_lr": s.embedding_lr, "unembedding_lr": s.unembedding_lr, "scalar_lr": SCALAR_LR}
    try:
        size = sizing.size_2026(s.depth, vocab_size, sequence_len=s.sequence_len, aspect_ratio=s.aspect_ratio, head_dim=s.head_dim,
                                tokens_params_ratio=s.tokens_params_ratio, total_batch_size=s.step_tokens, num_iterations=s.steps,
                                target_flops=s.target_flops, weight_decay=s.weight_decay, warmdown_ratio=s.warmdown_frac, final_lr_frac=s.final_lr_frac, **lrs)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    torch.manual_seed(s.seed)
    config = recipes.make_config(s.recipe, sequence_len=s.sequence_len, vocab_size=vocab_size, n_layer=s.depth, n_head=size.n_head,
                                 n_kv_head=size.n_head, n_embd=size.n_embd)
    model = recipes.build(config).to(device)
    kwargs = size.setup_optimizer_kwargs
    schedule = BaseSchedule2026(
        steps=size.num_iterations, matrix_lr=kwargs["matrix_lr"], embedding_lr=kwargs["embedding_lr"], unembedding_lr=kwargs["unembedding_lr"],
        scalar_lr=kwargs["scalar_lr"], weight_decay=kwargs["weight_decay"], warmup_steps=size.warmup_steps, warmdown_frac=s.warmdown_frac,
        final_lr_frac=s.final_lr_frac, grad_clip=s.grad_clip, eval_every=s.eval_every, save_every=s.save_every, log_every=s.log_every, seed=s.seed,
    )
    return model, Size2026(size), lrs, schedule


def main(argv=None):
    s = parse(BaseSettings, argv, __doc__)
    if s.fp8:
        precision.refuse_fp8(device_type(s.device))
    train_paths, val_paths = shards.shard_paths(s.manifest, "train"), shards.shard_paths(s.manifest, "val")
    missing = [str(p) for p in train_paths + val_paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing data shards listed in {s.manifest}: {missing}")
    tokenizer = Tokenizer.load(s.tokenizer)
    token_bytes = load_token_bytes(s.tokenizer)
    rank, _, world_size, device = init_distributed(s.device)

    if s.recipe == recipes.NANOCHAT_2026:
        model, size, lrs, schedule = setup_2026(s, tokenizer.vocab_size, device)
    else:
        try:
            size = sizing.size(s.depth, tokenizer.vocab_size, **{k: getattr(s, k) for k in sizing.SIZE_KEYS}, recipe=s.recipe)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        model = GPT.build(size.model_config(), device, s.seed)
        lrs = {"matrix_lr": s.matrix_lr, "embedding_lr": s.embedding_lr * size.adamw_lr_scale, "unembedding_lr": s.unembedding_lr * size.adamw_lr_scale}
        schedule = Schedule(
            steps=size.steps, **lrs, weight_decay=s.weight_decay, warmup_frac=s.warmup_frac, warmdown_frac=s.warmdown_frac,
            final_lr_frac=s.final_lr_frac, momentum_warmup=s.muon_momentum_warmup, newton_schulz=s.newton_schulz, grad_clip=s.grad_clip,
            eval_every=s.eval_every, save_every=s.save_every, log_every=s.log_every, seed=s.seed,
        )
    try:
        micro_steps = sizing.grad_accum_steps(size.step_tokens, s.device_batch_rows, s.sequence_len, world_size)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    derived = {**size.record(), "world_size": world_size, "grad_accum_steps": micro_steps}
    print0("derived: " + ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v:.4g}" for k, v in {**derived, **lrs}.items() if isinstance(v, (int, float))))

    rows_per_step = size.step_tokens // s.sequence_len
    loader = PackedLoader(train_paths, tokenizer, s.sequence_len, s.device_batch_rows, rows_per_step, rank, world_size, s.seed, device)
    eval_micro_steps = max(1, s.eval_tokens // size.step_tokens) * micro_steps  # the same rows whatever the number of processes

    def validate(model):
        val_loader = PackedLoader(val_paths, tokenizer, s.sequence_len, s.device_batch_rows, rows_per_step, rank, world_size, 0, device)
        return bits_per_byte(model, val_loader, eval_micro_steps, token_bytes)

    expected = estimate_cpu_seconds(model, s, micro_steps, size.steps, device) if s.compile == "auto" and device.type == "cpu" else None
    schedule.compile = decide_compile(s.compile, device, expected)
    print0(f"torch.compile: {schedule.compile}" + (f" (eager run estimated at {expected:.0f}s)" if expected else ""))

    recipe = TokenRecipe(loader, micro_steps, size.step_tokens, size.flops_per_token, validate)
    run = Run("base", "snakechat.base_train", s, inputs=[s.manifest, s.tokenizer], meta={"tokenizer": s.tokenizer, "derived": derived, "base_lrs": lrs})
    Trainer(model, recipe, schedule, run, device).train()
    cleanup_distributed()


if __name__ == "__main__":
    main()
