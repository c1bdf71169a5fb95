"""The per-step schedules of the nanochat-2026-07 recipe (shared/recipes/nanochat-2026-07.md §4.7,
§6.5): plain functions of the step, so a resumed run recomputes them instead of saving them, and
the trainer's Schedules that apply them (`BaseSchedule2026`, `SFTSchedule2026`).

Base training: the lr multiplier has a warm-up counted in steps (not a fraction), a flat part and a
linear warm-down to a final fraction; Muon's momentum ramps up over 400 steps and down over the
warm-down; Muon's weight decay follows a cosine from its full value to almost 0. SFT: the lr
multiplier depends on the fraction of the dataset consumed, and the momentum ramps over 300 steps.
"""

import math
from dataclasses import dataclass

from snakechat.train.optim import Schedule

WARMUP_STEPS = 40
WARMDOWN_RATIO = 0.65
FINAL_LR_FRAC = 0.05
MOMENTUM_WARMUP_STEPS = 400
SFT_WARMDOWN_RATIO = 0.5
SFT_MOMENTUM_STEPS = 300
SCALAR_LR = 0.5  # setup_optimizer's scalar lr (before the batch scaling); base_train has no flag for it (§4.4, §6.5)


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


def warm_start(optimizer, state, lr_mult):
    """Continue from another run's optimizer state (§6.5): its moments, momentum buffers, steps and
    group hyperparameters (so the Muon weight decay is the base run's last value), except the
    learning rates: every group's lr is this optimizer's own (from its setup) × lr_mult, and becomes
    its initial_lr."""
    lrs = [group["lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = group["initial_lr"] = lr * lr_mult


@dataclass(kw_only=True)
class ChatSchedule2026(Schedule):
    """The 2025 chat stages' schedule (lr multiplier only, clipping as set) for a nanochat-2026-07
    model, whose MuonAdamW also needs the scalars' lr: how mid and RL train such a model."""

    scalar_lr: float

    def setup_optimizer_kwargs(self):
        return dict(unembedding_lr=self.unembedding_lr, embedding_lr=self.embedding_lr, matrix_lr=self.matrix_lr,
                    scalar_lr=self.scalar_lr, weight_decay=self.weight_decay)


@dataclass(kw_only=True)
class BaseSchedule2026(ChatSchedule2026):
    """Base training under nanochat-2026-07 (§4.4-4.7). The lrs are setup_optimizer's arguments
    (already × √(B/2^19); the groups apply the width factor), weight_decay is Muon's T_epoch value at
    step 0. Per step: lr multiplier, Muon momentum, Muon weight-decay cosine; no clipping. Its final
    optimizer state goes into the checkpoint, for SFT to continue from."""

    warmup_steps: int = WARMUP_STEPS
    warmdown_frac: float = WARMDOWN_RATIO
    final_lr_frac: float = FINAL_LR_FRAC
    grad_clip: float = 0.0
    saves_optimizer = True

    def apply(self, optimizers, step):
        mult = lr_multiplier(step, self.steps, self.warmup_steps, self.warmdown_frac, self.final_lr_frac)
        momentum = muon_momentum(step, self.steps, self.warmdown_frac)
        decay = muon_weight_decay(step, self.steps, self.weight_decay)
        for optimizer in optimizers:
            apply(optimizer, mult, momentum, decay)
        return mult


@dataclass(kw_only=True)
class SFTSchedule2026(ChatSchedule2026):
    """SFT under nanochat-2026-07 (§6.5), after `warm_start` from the base run's optimizer: the lr
    multiplier from the fraction of the epoch consumed (this step's conversations included: every
    step takes the same number), the momentum ramp over 300 steps, the weight decay as loaded; no
    clipping (the config's gpt2 sets grad_clip 0). The lrs are the base run's unscaled ones, which
    warm_start × its lr_mult."""

    warmdown_frac: float = SFT_WARMDOWN_RATIO
    final_lr_frac: float = 0.0

    def apply(self, optimizers, step):
        mult = sft_lr_multiplier((step + 1) / self.steps, self.warmdown_frac)
        for optimizer in optimizers:
            apply(optimizer, mult, sft_muon_momentum(step))
        return mult
