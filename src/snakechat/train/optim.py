"""How every training stage optimises: the schedule of a run, and its optimizers.

`torch.optim.Muon` for the hidden 2-D matrices, AdamW for the embedding and the output head; the
learning rates × a warm-up / flat / warm-down multiplier. Muon's orthogonalisation runs in the
run's precision (snakechat.model.precision): torch's bf16 Newton–Schulz under bf16, float32 under fp32.
"""

from dataclasses import asdict, dataclass

import torch

from snakechat.model import recipes
from snakechat.model.checkpoint import unwrap
from snakechat.train.muon_adamw import MuonAdamW, param_groups

ADAM_BETAS = (0.8, 0.95)


@dataclass(kw_only=True)
class Schedule:
    """What the trainer needs to know about a run besides its data. Learning rates are absolute
    (already scaled for width and by a stage's lr_mult)."""

    steps: int
    matrix_lr: float = 0.02  # Muon, hidden matrices
    embedding_lr: float = 0.2  # AdamW
    unembedding_lr: float = 0.004  # AdamW
    weight_decay: float = 0.0  # Muon (hidden matrices) only
    warmup_frac: float = 0.0
    warmdown_frac: float = 0.2
    final_lr_frac: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    eval_every: int = 0  # 0 = only after the last step
    save_every: int = 0  # 0 = only after the last step and on a signal
    log_every: int = 1
    compile: bool = False
    seed: int = 0

    saves_optimizer = False  # whether the checkpoint keeps the final optimizer state (for a later stage to continue from)

    def record(self):
        return asdict(self)

    def apply(self, optimizers, step):
        """Set the optimizers' hyperparameters for step `step`; returns the lr multiplier."""
        mult = lr_multiplier(step, self)
        set_lr(optimizers, mult)
        return mult


def lr_multiplier(step, schedule):
    """Linear warm-up over warmup_frac of the steps, flat, linear warm-down to final_lr_frac."""
    n = schedule.steps
    warmup, warmdown = round(schedule.warmup_frac * n), round(schedule.warmdown_frac * n)
    if step < warmup:
        return (step + 1) / warmup
    if step < n - warmdown:
        return 1.0
    progress = (n - step) / warmdown
    return progress + (1 - progress) * schedule.final_lr_frac


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
    """torch.optim.Muon whose Newton–Schulz step runs in `precision` (resolved: bf16 or fp32):
    torch's own bf16 iteration, or the same iteration in float32 (where bf16 would be emulated it
    dominated the step, and a float32 run should be float32 throughout)."""

    torch_newton_schulz = staticmethod(torch.optim._muon._zeropower_via_newtonschulz)

    def __init__(self, params, precision="fp32", **kwargs):
        super().__init__(params, **kwargs)
        self.precision = precision

    def newton_schulz(self):
        """The orthogonalisation this optimizer's step runs: (grad, ns_coefficients, ns_steps, eps) -> update."""
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
    [AdamW (embedding, head), Muon (hidden matrices, orthogonalised in `precision`: bf16 or fp32)].
    Each group keeps its base lr in "initial_lr". Their state is float32, as the weights are."""
    model = unwrap(model)
    if recipes.recipe_of_model(model) == recipes.NANOCHAT_2026:
        groups = param_groups(model.named_parameters(), model.config.n_embd, **schedule.setup_optimizer_kwargs())
        return [MuonAdamW(groups, torch.bfloat16 if precision == "bf16" else torch.float32)]
    matrices = model.matrix_params()
    groups = [dict(params=[model.wte.weight], lr=schedule.embedding_lr), dict(params=[model.lm_head.weight], lr=schedule.unembedding_lr)]
    adamw = torch.optim.AdamW(groups, betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0, fused=True)
    muon = Muon(matrices, precision, lr=schedule.matrix_lr, momentum=0.95, nesterov=True, weight_decay=schedule.weight_decay)
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
