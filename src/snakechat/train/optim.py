"""How every training stage optimises: the schedule of a run, and its optimizers.

`torch.optim.Muon` for the hidden 2-D matrices, AdamW for the embedding and the output head; the
learning rates × a multiplier and Muon's momentum, both per step, as nanochat b399e43 (the
nanochat-2025-11 recipe) sets them in each stage (`Schedule.decay`, `momentum_warmup`; tested
step by step against b399e43's own numbers in tests/test_recipe2025.py). Muon's orthogonalisation
is b399e43's bf16 Newton–Schulz (`newton_schulz_nanochat`, bitwise its eager path) where the run
is in bf16, i.e. where the device multiplies bf16 natively (snakechat.model.precision), and the
same iteration in float32 where bf16 would be emulated (22-30× slower there); `newton_schulz` forces
either (docs/training.md).
"""

from dataclasses import asdict, dataclass

import torch

from snakechat.model import recipes
from snakechat.model.checkpoint import unwrap
from snakechat.train.muon_adamw import MuonAdamW, param_groups

ADAM_BETAS = (0.8, 0.95)
MUON_MOMENTUM = (0.85, 0.95)  # b399e43's warm-up: from the first to the second over momentum_warmup steps
# b399e43's bf16 op sequence; snakechat's in the run's precision; auto: the first where bf16 is native (precision bf16), else the second
NEWTON_SCHULZ = ("auto", "nanochat", "precision")
DECAYS = ("warmdown", "progress", "linear")


@dataclass(kw_only=True)
class Schedule:
    """What the trainer needs to know about a run besides its data. Learning rates are absolute
    (already scaled for width and by a stage's lr_mult)."""

    steps: int
    matrix_lr: float = 0.02  # Muon, hidden matrices
    embedding_lr: float = 0.2  # AdamW
    unembedding_lr: float = 0.004  # AdamW
    weight_decay: float = 0.0  # AdamW (embedding, head) only, as b399e43's setup_optimizers
    warmup_frac: float = 0.0
    warmdown_frac: float = 0.2
    final_lr_frac: float = 0.0
    decay: str = "warmdown"  # how the multiplier is computed: see lr_multiplier
    horizon: int = 0  # "linear": the N of 1 - s/N (0: steps)
    micro_steps: int = 1  # "progress": loader batches per step
    momentum_start: float = MUON_MOMENTUM[0]
    momentum_warmup: int = 0  # steps of Muon momentum warm-up to MUON_MOMENTUM[1] (0: none)
    newton_schulz: str = "auto"  # one of NEWTON_SCHULZ
    grad_clip: float = 1.0  # 0 = off
    eval_every: int = 0  # 0 = only after the last step
    save_every: int = 0  # 0 = only after the last step and on a signal
    log_every: int = 1
    compile: bool = False
    seed: int = 0

    saves_optimizer = False  # whether the checkpoint keeps the final optimizer state (for a later stage to continue from)

    def __post_init__(self):
        for key, allowed in (("decay", DECAYS), ("newton_schulz", NEWTON_SCHULZ)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"Schedule.{key} must be one of {allowed}, not {getattr(self, key)!r}")

    def record(self):
        return asdict(self)

    def apply(self, optimizers, step):
        """Set the optimizers' hyperparameters for optimizer step `step` (the lr multiplier, Muon's
        momentum); returns the lr multiplier. A recipe's own schedule sets its own."""
        mult = lr_multiplier(step, self)
        set_lr(optimizers, mult)
        set_momentum(optimizers, muon_momentum(step, self))
        return mult


def lr_multiplier(step, schedule):
    """The lr multiplier of optimizer step `step` (0-based), each decay as b399e43 computes it:

    - "warmdown" (base_train): linear warm-up over warmup_frac of the steps, flat, linear
      warm-down to final_lr_frac;
    - "progress" (mid_train): flat, then linear to 0 over the last warmdown_frac of the progress.
      b399e43's progress is the loader's count of micro-batches over its total, read after the
      step's batches and the next one are fetched: (1 + (s+1)·g) / (1 + steps·g);
    - "linear" (chat_sft, chat_rl): 1 - s/N at warmdown_frac 1 (N = horizon, else steps), flat
      before the last warmdown_frac of the N otherwise.
    """
    if schedule.decay == "progress":
        g = schedule.micro_steps
        progress = (1 + (step + 1) * g) / (1 + schedule.steps * g)
        flat = 1 - schedule.warmdown_frac
        return 1.0 if schedule.warmdown_frac == 0 or progress < flat else 1 - (progress - flat) / schedule.warmdown_frac
    if schedule.decay == "linear":
        n = schedule.horizon or schedule.steps
        start = n - round(schedule.warmdown_frac * n)
        return 1.0 if step < start else 1 - (step - start) / (n - start)
    n = schedule.steps
    warmup, warmdown = round(schedule.warmup_frac * n), round(schedule.warmdown_frac * n)
    if step < warmup:
        return (step + 1) / warmup
    if step < n - warmdown:
        return 1.0
    progress = (n - step) / warmdown
    return progress + (1 - progress) * schedule.final_lr_frac


def muon_momentum(step, schedule):
    """Muon's momentum at `step`: from momentum_start to MUON_MOMENTUM[1] over momentum_warmup steps, in
    b399e43's rounding ((1 - f)·start + f·end)."""
    if not schedule.momentum_warmup:
        return MUON_MOMENTUM[1]
    f = min(step / schedule.momentum_warmup, 1)
    return (1 - f) * schedule.momentum_start + f * MUON_MOMENTUM[1]


def newton_schulz_nanochat(grad, ns_coefficients, ns_steps, eps):
    """b399e43's quintic Newton–Schulz (its eager path): bf16 throughout, every product and sum
    rounded to bf16 on its own, the norm offset by 1e-7 (`eps` unused). On the same CPU and torch it
    reproduces b399e43's weights bitwise; it is 1,000-24,000× further from the exact iteration
    than newton_schulz_float32 (docs/training.md)."""
    a, b, c = ns_coefficients
    tall = grad.size(0) > grad.size(1)
    x = grad.bfloat16()
    if tall:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def newton_schulz_float32(grad, ns_coefficients, ns_steps, eps):
    """torch.optim.Muon's quintic Newton–Schulz orthogonalisation, computed in float32."""
    a, b, c = ns_coefficients
    x = grad.float()
    if x.size(0) > x.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x


class Muon(torch.optim.Muon):
    """torch.optim.Muon whose Newton–Schulz step is b399e43's ("nanochat"; "auto" under bf16) or
    runs in `precision` (resolved: bf16 or fp32; "precision", "auto" under fp32): torch's own bf16
    iteration, or the same iteration in float32 (where bf16 would be emulated it dominated the
    step, and a float32 run should be float32 throughout)."""

    torch_newton_schulz = staticmethod(torch.optim._muon._zeropower_via_newtonschulz)

    def __init__(self, params, precision="fp32", newton_schulz="precision", **kwargs):
        if newton_schulz not in NEWTON_SCHULZ:
            raise ValueError(f"newton_schulz must be one of {NEWTON_SCHULZ}, not {newton_schulz!r}")
        super().__init__(params, **kwargs)
        self.precision, self.ns = precision, newton_schulz

    def newton_schulz(self):
        """The orthogonalisation this optimizer's step runs: (grad, ns_coefficients, ns_steps, eps) -> update."""
        if self.ns == "nanochat" or (self.ns == "auto" and self.precision == "bf16"):
            return newton_schulz_nanochat
        return self.torch_newton_schulz if self.precision == "bf16" else newton_schulz_float32

    def step(self, closure=None):
        torch.optim._muon._zeropower_via_newtonschulz = self.newton_schulz()
        try:
            return super().step(closure)
        finally:
            torch.optim._muon._zeropower_via_newtonschulz = self.torch_newton_schulz


def build_optimizers(model, schedule, precision="fp32"):
    """The optimizers of `model`'s recipe (snakechat.model.recipes). nanochat-2026-07: [MuonAdamW]
    (snakechat.train.muon_adamw; Muon's orthogonalisation in bf16 under bf16). nanochat-2025-11:
    [AdamW (embedding, head; weight_decay), Muon (hidden matrices, no weight decay, orthogonalised
    as schedule.newton_schulz says)]. Each group keeps its base lr in "initial_lr". Their state is
    float32, as the weights are."""
    model = unwrap(model)
    if recipes.recipe_of_model(model) == recipes.NANOCHAT_2026:
        groups = param_groups(model.named_parameters(), model.config.n_embd, **schedule.setup_optimizer_kwargs())
        return [MuonAdamW(groups, torch.bfloat16 if precision == "bf16" else torch.float32)]
    matrices = model.matrix_params()
    adamw = torch.optim.AdamW(
        [dict(params=[model.wte.weight], lr=schedule.embedding_lr), dict(params=[model.lm_head.weight], lr=schedule.unembedding_lr)],
        betas=ADAM_BETAS, eps=1e-10, weight_decay=schedule.weight_decay, fused=True,
    )
    muon = Muon(matrices, precision, schedule.newton_schulz, lr=schedule.matrix_lr, momentum=muon_momentum(0, schedule), nesterov=True, weight_decay=0.0)
    covered = {id(p) for opt in (adamw, muon) for g in opt.param_groups for p in g["params"]}
    missed = [name for name, p in model.named_parameters() if id(p) not in covered]
    if missed:
        raise ValueError(f"parameters without an optimizer: {missed}")
    optimizers = [adamw, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def set_lr(optimizers, mult):
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * mult


def set_momentum(optimizers, momentum):
    """Muon's momentum for the next step (b399e43 sets it on every step of base and mid)."""
    for opt in optimizers:
        if isinstance(opt, torch.optim.Muon):
            for group in opt.param_groups:
                group["momentum"] = momentum


def optimizer_step(model, optimizers, schedule, step):
    """Optimizer step `step` on the accumulated gradients, in b399e43's base_train order: clip
    (grad_clip > 0), the lr multiplier and Muon's momentum of the step, AdamW then Muon, gradients
    dropped. The schedule sets each step's hyperparameters (`Schedule.apply`). Returns (lr
    multiplier, the pre-clip gradient norm or None)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.grad_clip) if schedule.grad_clip > 0 else None
    mult = schedule.apply(optimizers, step)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    return mult, norm
