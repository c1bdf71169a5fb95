"""The per-step schedules of the nanochat-2026-07 recipe (shared/recipes/nanochat-2026-07.md §4.7,
§6.5): plain functions of the step, so a resumed run recomputes them instead of saving them.

Base training: the lr multiplier has a warm-up counted in steps (not a fraction), a flat part and a
linear warm-down to a final fraction; Muon's momentum ramps up over 400 steps and down over the
warm-down; Muon's weight decay follows a cosine from its full value to almost 0. SFT: the lr
multiplier depends on the fraction of the dataset consumed, and the momentum ramps over 300 steps.
"""

import math

WARMUP_STEPS = 40
WARMDOWN_RATIO = 0.65
FINAL_LR_FRAC = 0.05
MOMENTUM_WARMUP_STEPS = 400
SFT_WARMDOWN_RATIO = 0.5
SFT_MOMENTUM_STEPS = 300


def warmdown_steps(steps, warmdown_ratio=WARMDOWN_RATIO):
    return round(warmdown_ratio * steps)


def lr_multiplier(step, steps, warmup=WARMUP_STEPS, warmdown_ratio=WARMDOWN_RATIO, final_lr_frac=FINAL_LR_FRAC):
    """Every group's lr = initial_lr × this, at step `step` of `steps`."""
    down = warmdown_steps(steps, warmdown_ratio)
    if step < warmup:
        return (step + 1) / warmup
    if step <= steps - down:
        return 1.0
    progress = (steps - step) / down
    return progress + (1 - progress) * final_lr_frac


def muon_momentum(step, steps, warmdown_ratio=WARMDOWN_RATIO):
    """0.85 → 0.97 over the first 400 steps (checked first, so it wins in short runs), 0.97, then
    down to 0.90 over the warm-down."""
    down = warmdown_steps(steps, warmdown_ratio)
    if step < MOMENTUM_WARMUP_STEPS:
        frac = step / MOMENTUM_WARMUP_STEPS
        return 0.85 * (1 - frac) + 0.97 * frac
    if step >= steps - down:
        progress = (step - (steps - down)) / down
        return 0.97 * (1 - progress) + 0.90 * progress
    return 0.97


def muon_weight_decay(step, steps, weight_decay):
    """Cosine from `weight_decay` at step 0 to almost 0 at the last step."""
    return weight_decay * 0.5 * (1 + math.cos(math.pi * step / steps))


def sft_lr_multiplier(progress, warmdown_ratio=SFT_WARMDOWN_RATIO):
    """SFT (§6.5): 1 while the fraction of the dataset consumed is at most 1 − warmdown_ratio, then
    linear to 0 at the end of the epoch."""
    if progress <= 1 - warmdown_ratio:
        return 1.0
    decay = (progress - (1 - warmdown_ratio)) / warmdown_ratio
    return 1 - decay


def sft_muon_momentum(step):
    """SFT (§6.5): 0.85 → 0.95 over the first 300 steps, then 0.95."""
    frac = min(step / SFT_MOMENTUM_STEPS, 1)
    return (1 - frac) * 0.85 + frac * 0.95


def apply(optimizer, lr_mult, momentum=None, weight_decay=None):
    """Set every group's lr to initial_lr × lr_mult, and the Muon groups' momentum and weight decay
    (None: left as they are)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_mult
        if group["kind"] == "muon":
            if momentum is not None:
                group["momentum"] = momentum
            if weight_decay is not None:
                group["weight_decay"] = weight_decay
