"""MuonAdamW: the optimizer of the nanochat-2026-07 recipe (shared/recipes/nanochat-2026-07.md §3).

One torch.optim.Optimizer with two kinds of group. "adamw" groups (embedding, value embeddings,
head, the scalars) each have their own lr, betas, eps and weight decay. "muon" groups hold the
matrices of the blocks, one group per shape, stepped as one stack: Nesterov momentum, MuonEq row
equilibration, Polar Express orthogonalisation, the Muon+ renormalisation, NorMuon's factored second
moment and cautious weight decay.

Why not torch.optim: torch.optim.AdamW does its scalar arithmetic (1 - lr·wd, β^t, lr / c1) in
Python doubles, which lands up to 2.4e-7 away from the recipe's fp32 0-d tensor arithmetic after one
step (§3.6); the recipe is bitwise reproducible on CPU, so the AdamW step is written here with
fp32 0-d tensors and torch.lerp. torch.optim.Muon is a different algorithm (quintic Newton–Schulz,
none of MuonEq/Muon+/NorMuon/cautious decay).

There is no gradient clipping. Under torch.distributed the trainer's DDP averages the gradients
before `step()`, and every rank then runs the same step on the same averaged gradients, holding the
full state (master shards the state across ranks instead; the arithmetic per matrix and per element
is the same, so the result equals the single-process step on the averaged gradient).
"""

import torch

# Polar Express coefficients (a, b, c), safety factor 2e-2, cushion 2 (arXiv 2505.16932).
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
ADAMW_EPS = 1e-10
MUON_MOMENTUM, MUON_BETA2, MUON_NS_STEPS = 0.95, 0.9, 5


def fp32(value, device=None):
    """A hyperparameter as the fp32 0-d tensor the recipe's arithmetic uses (doubles give other
    bits), on the parameters' device."""
    return torch.tensor(value, dtype=torch.float32, device=device)


def adamw_step(p, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW update of `p` in place (§3.2): decoupled decay first, then the moments by lerp."""
    step_t, lr_t, beta1_t, beta2_t, eps_t, wd_t = (fp32(v, p.device) for v in (step, lr, beta1, beta2, eps, weight_decay))
    p.mul_(1 - lr_t * wd_t)
    exp_avg.lerp_(grad, 1 - beta1_t)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2_t)
    bias1 = 1 - beta1_t ** step_t
    bias2 = 1 - beta2_t ** step_t
    denom = (exp_avg_sq / bias2).sqrt() + eps_t
    step_size = lr_t / bias1
    p.add_(exp_avg / denom, alpha=-step_size)


def polar_express(x, ns_steps, coefficients=POLAR_EXPRESS):
    """Approximately orthogonalise each matrix of the stack `x` (its norm already at most 1)."""
    if x.size(-2) > x.size(-1):
        for a, b, c in coefficients[:ns_steps]:
            gram = x.mT @ x
            x = a * x + x @ (b * gram + c * (gram @ gram))
    else:
        for a, b, c in coefficients[:ns_steps]:
            gram = x @ x.mT
            x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x


def muon_step(params, grads, momentum_buffer, second_moment, lr, momentum, beta2, weight_decay, ns_steps,
              coefficients=POLAR_EXPRESS, compute_dtype=torch.float32):
    """One Muon update (§3.3) of the stacked parameters `params` (K, m, n) in place, from the
    stacked gradients `grads` (overwritten); the buffers are updated in place. Row equilibration
    and Polar Express run in `compute_dtype` (bf16 in a bf16 run, as master does)."""
    m, n = params.shape[-2:]
    mu, beta2_t, wd_t = (fp32(v, params.device) for v in (momentum, beta2, weight_decay))
    lr_t = fp32(lr * max(1.0, m / n) ** 0.5, params.device)
    # Nesterov momentum
    momentum_buffer.lerp_(grads, 1 - mu)
    x = grads.lerp_(momentum_buffer, mu).to(compute_dtype)
    # MuonEq: every row to the matrix's rms row norm
    tau = x.float().norm(dim=(-2, -1), keepdim=True) / m ** 0.5
    row_norm = x.float().norm(dim=-1, keepdim=True).clamp_min(1e-6)
    x = x * (tau / row_norm).to(x.dtype)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-6)
    x = polar_express(x, ns_steps, coefficients).to(params.dtype)
    # Muon+: the Frobenius norm of an exact semi-orthogonal matrix
    x = x * (min(m, n) ** 0.5 / x.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-6))
    # NorMuon: factored second moment over the longer dimension, then back to the same norm
    red_dim = -1 if m >= n else -2
    red_size = x.size(red_dim)
    mean_sq = x.float().square().mean(dim=red_dim, keepdim=True)
    norm_old = (mean_sq.sum(dim=(-2, -1), keepdim=True) * red_size).sqrt()
    second_moment.lerp_(mean_sq.to(second_moment.dtype), 1 - beta2_t)
    scale = second_moment.clamp_min(1e-10).rsqrt()
    norm_new = ((mean_sq * red_size) * scale.float().square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    x = x * (scale * (norm_old / norm_new.clamp_min(1e-10))).to(x.dtype)
    cautious_update(params, x, lr_t.to(x.dtype), wd_t.to(x.dtype))


def cautious_update(params, update, lr, weight_decay):
    """P ← P − (η·O + η·λ·P·mask): decay only where the update and the weight agree in sign (or
    either is zero), judged on the weights before the update."""
    mask = (update * params) >= 0
    params.sub_(lr * update + lr * weight_decay * params * mask)


class MuonAdamW(torch.optim.Optimizer):
    """Param groups are dicts with "kind": "adamw" (lr, betas, eps, weight_decay) or "muon" (lr,
    momentum, beta2, ns_steps, weight_decay; all params of one shape). The schedule sets lr and the
    Muon momentum / weight_decay of the groups before each step. `compute_dtype`: that of Muon's
    orthogonalisation (the moments and the weights stay in the parameters' dtype)."""

    coefficients = POLAR_EXPRESS

    def __init__(self, param_groups, compute_dtype=torch.float32):
        self.compute_dtype = compute_dtype
        for group in param_groups:
            if group.get("kind") not in ("adamw", "muon"):
                raise ValueError(f"MuonAdamW group kind must be 'adamw' or 'muon', got {group.get('kind')!r}")
            if group["kind"] == "muon" and len({tuple(p.shape) for p in group["params"]}) != 1:
                raise ValueError(f"a Muon group holds parameters of one shape, got {sorted({tuple(p.shape) for p in group['params']})}")
        super().__init__(param_groups, defaults={})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        muon = [g for g in self.param_groups if g["kind"] == "muon"]
        stacks = [torch.stack([p.grad for p in g["params"]]) for g in muon]  # every gradient before any update
        for group in self.param_groups:
            if group["kind"] == "adamw":
                self._adamw(group)
        for group, grads in zip(muon, stacks):
            self._muon(group, grads)
        return loss

    def _adamw(self, group):
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            adamw_step(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group["lr"], beta1, beta2,
                       group["eps"], group["weight_decay"])

    def _muon(self, group, grads):
        first = group["params"][0]
        state = self.state[first]
        k, m, n = grads.shape
        if not state:
            state["momentum_buffer"] = torch.zeros_like(grads)
            state["second_moment"] = grads.new_zeros((k, m, 1) if m >= n else (k, 1, n))
        params = torch.stack([p.detach() for p in group["params"]])
        muon_step(params, grads, state["momentum_buffer"], state["second_moment"], group["lr"], group["momentum"],
                  group["beta2"], group["weight_decay"], group["ns_steps"], self.coefficients, self.compute_dtype)
        for p, new in zip(group["params"], params.unbind(0)):
            p.copy_(new)


SMEAR_GROUP = ("smear_gate.weight", "smear_lambda", "backout_lambda")  # in master's order
# (which names, in their order; lr from the setup arguments and dm = (C/768)^-½; betas; weight decay),
# in step order (§3.1)
ADAMW_GROUPS = (
    (lambda names: [n for n in names if n == "lm_head.weight"], lambda a, dm: a["unembedding_lr"] * dm, (0.8, 0.96), 0.01),
    (lambda names: [n for n in names if n == "wte.weight"], lambda a, dm: a["embedding_lr"] * dm, (0.8, 0.995), 0.001),
    (lambda names: sorted((n for n in names if n.startswith("value_embeds.")), key=lambda n: int(n.split(".")[1])),
     lambda a, dm: a["embedding_lr"] * dm * 0.5, (0.8, 0.995), 0.01),
    (lambda names: [n for n in names if n == "resid_lambdas"], lambda a, dm: a["scalar_lr"] * 0.01, (0.8, 0.95), 0.05),
    (lambda names: [n for n in names if n == "x0_lambdas"], lambda a, dm: a["scalar_lr"], (0.96, 0.95), 0.0),
    (lambda names: [n for n in SMEAR_GROUP if n in names], lambda a, dm: 0.2, (0.8, 0.95), 0.0),
)


def param_groups(named_parameters, model_dim, *, unembedding_lr, embedding_lr, matrix_lr, weight_decay, scalar_lr):
    """MuonAdamW's groups for the 2026 model from its named parameters (snakechat names: `wte`,
    `blocks.{i}`): six AdamW groups, then one Muon group per shape of the blocks' matrices in
    ascending shape order, parameters in module order. Each group's initial_lr is its lr."""
    setup = dict(unembedding_lr=unembedding_lr, embedding_lr=embedding_lr, scalar_lr=scalar_lr)
    dm = (model_dim / 768) ** -0.5
    named = list(named_parameters)
    groups = []
    by_name = dict(named)
    for select, lr, betas, decay in ADAMW_GROUPS:
        params = [by_name[name] for name in select(by_name)]
        if params:
            groups.append(dict(kind="adamw", params=params, lr=lr(setup, dm), betas=betas, eps=ADAMW_EPS, weight_decay=decay))
    blocks = [(name, p) for name, p in named if name.startswith("blocks.")]
    for name, p in blocks:
        if p.dim() != 2:
            raise ValueError(f"Muon steps the blocks' matrices, but {name} has shape {tuple(p.shape)}")
    for shape in sorted({tuple(p.shape) for _, p in blocks}):
        groups.append(dict(kind="muon", params=[p for _, p in blocks if tuple(p.shape) == shape], lr=matrix_lr,
                           momentum=MUON_MOMENTUM, beta2=MUON_BETA2, ns_steps=MUON_NS_STEPS, weight_decay=weight_decay))
    grouped = {id(p) for g in groups for p in g["params"]}
    missed = [name for name, p in named if id(p) not in grouped]
    if missed:
        raise ValueError(f"parameters the nanochat-2026-07 optimizer has no group for: {missed}")
    for group in groups:
        group["initial_lr"] = group["lr"]
    return groups
