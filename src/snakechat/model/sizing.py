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

That is the recipe nanochat-2025-11. `size_2026` sizes a model of the recipe nanochat-2026-07
(nanochat master, July 2026) by its own rules: parameters counted by formula, the horizon from the
scaling params (matrices + lm_head) at 12 tokens each, the batch from a power law in them relative
to d12, learning rates and the Muon weight decay scaled by that batch, window-aware FLOPs.

The shape is that of the model's recipe (snakechat.model.recipes): the same fields for both, and its
parameters and FLOPs are counted on that recipe's model (the 2026 one counts windowed attention as
computed).
"""

import math
from dataclasses import asdict, dataclass

import torch

from snakechat.model import recipes

REFERENCE_DEPTH = 20
REFERENCE_STEP_TOKENS = 2**19  # tokens per optimizer step at the reference depth
REFERENCE_WIDTH = 768  # AdamW learning rates are tuned at this width
# The base settings sizing reads (same names as the config's models.<model>.base keys).
SIZE_KEYS = ("sequence_len", "aspect_ratio", "head_dim", "n_kv_head", "width", "step_tokens", "steps", "tokens_params_ratio", "target_flops")


def config_from_depth(depth, vocab_size, sequence_len, aspect_ratio=64, head_dim=128, n_kv_head=None, width=None, recipe=recipes.DEFAULT):
    """The model shape for a depth: width = depth × aspect_ratio, rounded up to a multiple of head_dim."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    width = width or depth * aspect_ratio
    width = math.ceil(width / head_dim) * head_dim
    n_head = width // head_dim
    n_kv_head = n_kv_head or n_head
    if n_head % n_kv_head:
        raise ValueError(f"n_kv_head={n_kv_head} must divide n_head={n_head} (depth {depth}, width {width}, head_dim {head_dim})")
    return recipes.make_config(recipe, sequence_len=sequence_len, vocab_size=vocab_size, n_layer=depth, n_head=n_head, n_kv_head=n_kv_head, n_embd=width)


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
        model = recipes.build(config)
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
    recipe: str = recipes.DEFAULT

    def model_config(self):
        return recipes.make_config(self.recipe, sequence_len=self.sequence_len, vocab_size=self.vocab_size, n_layer=self.n_layer,
                                   n_head=self.n_head, n_kv_head=self.n_kv_head, n_embd=self.n_embd)

    def record(self):
        """The derived numbers (the recipe is in the model_config beside them)."""
        return {k: v for k, v in asdict(self).items() if k != "recipe"}


def size(depth, vocab_size, sequence_len, aspect_ratio, head_dim, n_kv_head, width, step_tokens, steps, tokens_params_ratio, target_flops=0,
         recipe=recipes.DEFAULT):
    """The Sizing of a base model of `recipe` from its depth and the base settings of SIZE_KEYS (0 = derived)."""
    if steps and target_flops:
        raise ValueError(f"give steps ({steps}) or target_flops ({target_flops:g}), not both: each sets the number of steps")
    config = config_from_depth(depth, vocab_size, sequence_len, aspect_ratio, head_dim, n_kv_head or None, width or None, recipe)
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
        adamw_lr_scale=adamw_lr_scale(config.n_embd), recipe=recipe,
    )


def parameters(meta):
    """A checkpoint's parameter count: as base_train recorded it, else counted from its model_config."""
    recorded = meta.get("derived", {}).get("params")
    if recorded:
        return recorded
    return count(recipes.config_from_dict(meta["model_config"]))[0] if meta.get("model_config") else None


# --- recipe nanochat-2026-07 (docs: /work/shared/recipes/nanochat-2026-07.md §1.2, §1.5, §1.7, §4) ---
# Counted by formula, not on a model: the 2026 model has value embeddings, VE gates, smear and
# backout scalars that the 2025 GPT above lacks, and plan/configcheck must size it without torch.

RECIPE_2026 = "nanochat-2026-07"
BATCH_REF_TOKENS_2026 = 2**19  # B_REF: tokens per step of the d12 reference
BATCH_EXPONENT_2026 = 0.383  # B ∝ D^0.383 (Power Lines, arXiv 2505.13738)
REF_DEPTH_2026 = 12  # D_REF = ratio × N(d12), d12 built with the same flags
SMEAR_GATE_INPUTS = 24  # smear_gate is a (1, 24) Linear
VE_GATE_INPUTS = 12  # ve_gate is a (n_kv_head, 12) Linear
SMEAR_GROUP_LR = 0.2  # AdamW lr of smear_gate, smear_lambda, backout_lambda: fixed, never scaled


def shape_2026(depth, aspect_ratio=64, head_dim=128):
    """(width, heads): width = ⌈depth·aspect/head_dim⌉·head_dim, heads = width / head_dim (§4.1)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    width = -(-depth * aspect_ratio // head_dim) * head_dim
    return width, width // head_dim


def window_sizes(n_layer, sequence_len, pattern="SSSL"):
    """Each layer's left attention window (§1.5): L = sequence_len, S = a quarter of it rounded up to a
    multiple of 128; the pattern repeats over the layers and the last layer is always L."""
    pattern = pattern.upper()
    if not pattern or set(pattern) - {"S", "L"}:
        raise ValueError(f"window pattern {pattern!r} may hold only S and L")
    short = -((-sequence_len // 4) // 128) * 128
    sizes = [sequence_len if pattern[i % len(pattern)] == "L" else short for i in range(n_layer)]
    sizes[-1] = sequence_len
    return sizes


def param_counts_2026(n_layer, n_embd, n_head, vocab_size):
    """Parameters of the 2026 model by group (§1.2), with n_kv_head = n_head as base_train builds it."""
    padded = -(-vocab_size // 64) * 64
    head_dim = n_embd // n_head
    n_ve = -(-n_layer // 2)  # every other layer, always the last
    counts = {
        "wte": padded * n_embd,
        "value_embeds": n_ve * padded * n_head * head_dim,
        "lm_head": padded * n_embd,
        "transformer_matrices": n_layer * (2 * n_embd**2 + 2 * n_embd * n_head * head_dim + 8 * n_embd**2) + VE_GATE_INPUTS * n_head * n_ve,
        "scalars": 2 * n_layer + SMEAR_GATE_INPUTS + 2,
    }
    counts["total"] = sum(counts.values())
    return counts


def scaling_params_2026(counts):
    """N, what the tokens:params ratio multiplies: transformer matrices (VE gates included) + lm_head."""
    return counts["transformer_matrices"] + counts["lm_head"]


def flops_per_token_2026(counts, n_head, head_dim, windows, sequence_len):
    """Training FLOPs per token (§1.7): 6 per Linear weight (matrices, lm_head, smear gate) plus each
    layer's attention, 12·H·D over the keys its window lets it see."""
    matmul = counts["transformer_matrices"] + counts["lm_head"] + SMEAR_GATE_INPUTS
    return 6 * matmul + sum(12 * n_head * head_dim * min(w, sequence_len) for w in windows)


@dataclass(frozen=True)
class Sizing2026:
    """Everything base_train derives from depth under the 2026 recipe; names follow the recipe's
    fixture (`sizing_master_defaults`), lengths in tokens, learning rates before the per-step multiplier."""

    depth: int
    n_embd: int
    n_head: int
    head_dim: int
    vocab_size: int
    sequence_len: int
    window_sizes: tuple
    params: dict
    params_total: int
    scaling_params: int
    tokens_params_ratio: float
    target_tokens: int
    D_REF: float
    B_REF: int
    total_batch_size: int
    batch_lr_scale: float
    dmodel_lr_scale: float
    weight_decay_scaled: float
    num_iterations: int
    tokens: int
    flops_per_token: int
    total_flops: int
    warmup_steps: int
    warmdown_steps: int
    final_lr_frac: float
    setup_optimizer_kwargs: dict
    group_lrs: dict

    def record(self):
        return {**asdict(self), "window_sizes": list(self.window_sizes)}


def size_2026(depth, vocab_size, sequence_len=2048, aspect_ratio=64, head_dim=128, window_pattern="SSSL",
              tokens_params_ratio=12.0, total_batch_size=0, num_iterations=0, target_flops=0, weight_decay=0.28,
              matrix_lr=0.02, embedding_lr=0.3, unembedding_lr=0.008, scalar_lr=0.5, warmup_steps=40,
              warmdown_ratio=0.65, final_lr_frac=0.05):
    """The Sizing2026 of a depth (§4). 0 means derived: total_batch_size from the power law in the
    scaling params relative to d12; steps from num_iterations, else target_flops, else the ratio.
    Batch size and weight decay always follow the ratio's horizon, as base_train derives them."""
    if tokens_params_ratio <= 0:
        raise ValueError(f"tokens_params_ratio must be > 0, got {tokens_params_ratio}")
    tokens_params_ratio = float(tokens_params_ratio)  # base_train's flag is a float: D_REF is one

    def scaling(d):
        width, heads = shape_2026(d, aspect_ratio, head_dim)
        return scaling_params_2026(param_counts_2026(d, width, heads, vocab_size))

    width, heads = shape_2026(depth, aspect_ratio, head_dim)
    counts = param_counts_2026(depth, width, heads, vocab_size)
    n = scaling_params_2026(counts)
    windows = window_sizes(depth, sequence_len, window_pattern)
    fpt = flops_per_token_2026(counts, heads, head_dim, windows, sequence_len)
    target_tokens = int(tokens_params_ratio * n)
    d_ref = tokens_params_ratio * scaling(REF_DEPTH_2026)
    b_ref = BATCH_REF_TOKENS_2026
    batch = total_batch_size or 2 ** round(math.log2(b_ref * (target_tokens / d_ref) ** BATCH_EXPONENT_2026))
    bls = (batch / b_ref) ** 0.5
    dm = (width / REFERENCE_WIDTH) ** -0.5
    wd = weight_decay * math.sqrt(batch / b_ref) * (d_ref / target_tokens)
    if num_iterations > 0:
        steps = num_iterations
    elif target_flops > 0:
        steps = round(target_flops / (fpt * batch))
    else:
        steps = target_tokens // batch
    if steps < 1:
        raise ValueError(f"depth {depth} trains for {steps} steps of {batch:,} tokens: raise the ratio or target_flops, or set num_iterations")
    kwargs = {"unembedding_lr": unembedding_lr * bls, "embedding_lr": embedding_lr * bls, "scalar_lr": scalar_lr * bls,
              "matrix_lr": matrix_lr * bls, "weight_decay": wd}
    group_lrs = {
        "lm_head": kwargs["unembedding_lr"] * dm, "wte": kwargs["embedding_lr"] * dm, "value_embeds": kwargs["embedding_lr"] * dm * 0.5,
        "resid_lambdas": kwargs["scalar_lr"] * 0.01, "x0_lambdas": kwargs["scalar_lr"], "smear": SMEAR_GROUP_LR, "muon": kwargs["matrix_lr"],
    }
    return Sizing2026(
        depth=depth, n_embd=width, n_head=heads, head_dim=head_dim, vocab_size=vocab_size, sequence_len=sequence_len,
        window_sizes=tuple(windows), params=counts, params_total=counts["total"], scaling_params=n,
        tokens_params_ratio=tokens_params_ratio, target_tokens=target_tokens, D_REF=d_ref, B_REF=b_ref,
        total_batch_size=batch, batch_lr_scale=bls, dmodel_lr_scale=dm, weight_decay_scaled=wd, num_iterations=steps,
        tokens=steps * batch, flops_per_token=fpt, total_flops=fpt * steps * batch, warmup_steps=warmup_steps,
        warmdown_steps=round(warmdown_ratio * steps), final_lr_frac=final_lr_frac, setup_optimizer_kwargs=kwargs,
        group_lrs=group_lrs,
    )


# A model's base settings (config keys of models.<model>.base, base_train's flags) -> size_2026's arguments.
BASE_KEYS_2026 = {
    "sequence_len": "sequence_len", "aspect_ratio": "aspect_ratio", "head_dim": "head_dim", "tokens_params_ratio": "tokens_params_ratio",
    "step_tokens": "total_batch_size", "steps": "num_iterations", "target_flops": "target_flops", "weight_decay": "weight_decay", "matrix_lr": "matrix_lr",
    "embedding_lr": "embedding_lr", "unembedding_lr": "unembedding_lr", "warmdown_frac": "warmdown_ratio", "final_lr_frac": "final_lr_frac",
}


def size_2026_from_base(depth, vocab_size, base):
    """size_2026 from a model's base settings (a mapping of BASE_KEYS_2026's keys; those it lacks keep
    size_2026's defaults, the recipe's)."""
    return size_2026(depth, vocab_size, **{arg: base[key] for key, arg in BASE_KEYS_2026.items() if key in base})
