"""How big a model is and how long it trains: depth -> width, heads, tokens per step, gradient
accumulation, steps, FLOPs. The one place this arithmetic lives: base_train builds its model and
horizon from it, plan prices a config with it before anything runs, and the report counts a
checkpoint's parameters with it.

Depth is the one dial; every other number derives from it unless given (0 = derived):
- width = depth × aspect_ratio, rounded up to a multiple of head_dim; heads = width / head_dim;
- step_tokens = 2^19 × depth / 20, rounded to a power of two (nanochat's d20 speedrun: 2^19);
- steps = tokens_params_ratio × parameters / step_tokens, or, with a FLOP budget (target_flops),
  budget / (training FLOPs per token × step_tokens) rounded to the nearest step, so that a run of a
  scaling sweep spends its budget to within half a step (validation FLOPs are not counted);
- AdamW learning rates × 1/sqrt(width / 768), the width they were tuned at.
"""

import math
from dataclasses import asdict, dataclass

import torch

from snakechat.model.gpt import GPT, GPTConfig

REFERENCE_DEPTH = 20
REFERENCE_STEP_TOKENS = 2**19  # tokens per optimizer step at the reference depth
REFERENCE_WIDTH = 768  # AdamW learning rates are tuned at this width
# The base settings sizing reads (same names as the config's models.<model>.base keys).
SIZE_KEYS = ("sequence_len", "aspect_ratio", "head_dim", "n_kv_head", "width", "step_tokens", "steps", "tokens_params_ratio", "target_flops")


def config_from_depth(depth, vocab_size, sequence_len, aspect_ratio=64, head_dim=128, n_kv_head=None, width=None):
    """The model shape for a depth: width = depth × aspect_ratio, rounded up to a multiple of head_dim."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    width = width or depth * aspect_ratio
    width = math.ceil(width / head_dim) * head_dim
    n_head = width // head_dim
    n_kv_head = n_kv_head or n_head
    if n_head % n_kv_head:
        raise ValueError(f"n_kv_head={n_kv_head} must divide n_head={n_head} (depth {depth}, width {width}, head_dim {head_dim})")
    return GPTConfig(sequence_len=sequence_len, vocab_size=vocab_size, n_layer=depth, n_head=n_head, n_kv_head=n_kv_head, n_embd=width)


def derive_step_tokens(depth):
    return 2 ** round(math.log2(REFERENCE_STEP_TOKENS * depth / REFERENCE_DEPTH))


def adamw_lr_scale(width):
    return (width / REFERENCE_WIDTH) ** -0.5


def grad_accum_steps(step_tokens, device_batch_rows, sequence_len, world_size):
    """Forward/backward passes per process and optimizer step, so that a step takes step_tokens
    whatever the number of processes."""
    per_pass = device_batch_rows * sequence_len * world_size
    if step_tokens % per_pass:
        raise ValueError(
            f"step_tokens {step_tokens} is not a multiple of device_batch_rows × sequence_len × processes "
            f"= {device_batch_rows} × {sequence_len} × {world_size} = {per_pass}"
        )
    return step_tokens // per_pass


def count(config):
    """(parameters, training FLOPs per token) of a model shape, counted on the meta device (no memory, no time)."""
    with torch.device("meta"):
        model = GPT(config)
    return model.num_params(), model.flops_per_token()


@dataclass
class Sizing:
    """A base model's shape and horizon; base_train stores `record()` in meta.json under "derived"."""

    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int
    head_dim: int
    vocab_size: int
    sequence_len: int
    params: int
    flops_per_token: int
    step_tokens: int
    steps: int
    training_tokens: int
    tokens_per_param: float
    total_flops: int
    adamw_lr_scale: float

    def model_config(self):
        return GPTConfig(sequence_len=self.sequence_len, vocab_size=self.vocab_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_kv_head=self.n_kv_head, n_embd=self.n_embd)

    def record(self):
        return asdict(self)


def size(depth, vocab_size, sequence_len, aspect_ratio, head_dim, n_kv_head, width, step_tokens, steps, tokens_params_ratio, target_flops=0):
    """The Sizing of a base model from its depth and the base settings of SIZE_KEYS (0 = derived)."""
    if steps and target_flops:
        raise ValueError(f"give steps ({steps}) or target_flops ({target_flops:g}), not both: each sets the number of steps")
    config = config_from_depth(depth, vocab_size, sequence_len, aspect_ratio, head_dim, n_kv_head or None, width or None)
    params, flops_per_token = count(config)
    step_tokens = step_tokens or derive_step_tokens(depth)
    if target_flops:
        steps = round(target_flops / (flops_per_token * step_tokens))
        if steps < 1:
            raise ValueError(f"target_flops {target_flops:g} is less than one step of depth {depth} "
                             f"({flops_per_token:,} FLOPs per token × {step_tokens:,} tokens = {flops_per_token * step_tokens:.3g})")
    steps = steps or max(1, round(tokens_params_ratio * params / step_tokens))
    return Sizing(
        n_layer=config.n_layer, n_embd=config.n_embd, n_head=config.n_head, n_kv_head=config.n_kv_head,
        head_dim=config.n_embd // config.n_head, vocab_size=vocab_size, sequence_len=sequence_len, params=params,
        flops_per_token=flops_per_token, step_tokens=step_tokens, steps=steps, training_tokens=steps * step_tokens,
        tokens_per_param=steps * step_tokens / params, total_flops=flops_per_token * steps * step_tokens,
        adamw_lr_scale=adamw_lr_scale(config.n_embd),
    )


def parameters(meta):
    """A checkpoint's parameter count: as base_train recorded it, else counted from its model_config."""
    recorded = meta.get("derived", {}).get("params")
    if recorded:
        return recorded
    return count(GPTConfig(**meta["model_config"]))[0] if meta.get("model_config") else None
