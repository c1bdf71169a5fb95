"""The training loop every training stage shares (base, mid, SFT; RL reuses its pieces).

What it does for a stage:
- optimizers: `torch.optim.Muon` for the hidden 2-D matrices, AdamW for the embedding and the head
  (`build_optimizers`), learning rate × a warm-up / flat / warm-down multiplier (`lr_multiplier`);
- gradient accumulation up to `total_batch_size` tokens per step whatever the number of
  processes (DDP over NCCL or gloo), gradient clipping, bf16 autocast and `torch.compile` on CUDA;
- `train_log.csv` (one row per step) and a progress line every `log_every` steps;
- resumable state (weights, optimizers, loader position, RNG, counters) saved atomically into a
  state directory every `save_every` steps, at the end, and on SIGTERM/SIGUSR1 (then the process
  exits with 128 + signal number). A new run with the same state directory resumes from the newest
  readable state; unreadable ones are skipped with a warning, and if none is readable the run
  stops with an error instead of starting over.

The state directory (results/state/{stage}/{model}/) is not a Snakemake output, so it survives
the failed job that Snakemake cleans up. Stages write their checkpoint from the returned summary
and the log at `summary["log_path"]`, then call `StateStore(state_dir).clear()`.

A loader is any object with `next_batch() -> (inputs, targets)` (targets -1 = ignored),
`state_dict()` and `load_state_dict(state)`.
"""

import contextlib
import csv
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from snakechat.checkpoint import unwrap
from snakechat.precision import autocast
from snakechat.common import all_reduce, atomic_path, dist_info, gather, print0

LOG_COLUMNS = ["step", "tokens", "flops", "loss", "lr_mult", "tokens_per_s", "mfu", "elapsed_s", "val_bpb"]
# Dense bf16 peak FLOP/s per GPU, by a substring of torch.cuda.get_device_name().
PEAK_FLOPS = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12)]


@dataclass
class TrainConfig:
    num_iterations: int
    total_batch_size: int  # tokens per optimizer step, all processes together
    device_batch_size: int  # rows per micro-batch and process
    sequence_len: int
    matrix_lr: float = 0.02
    embedding_lr: float = 0.2  # already width-scaled (see adamw_lr_scale)
    unembedding_lr: float = 0.004  # already width-scaled
    weight_decay: float = 0.0  # Muon (hidden matrices) only
    adam_beta1: float = 0.8
    adam_beta2: float = 0.95
    warmup_ratio: float = 0.0
    warmdown_ratio: float = 0.2
    final_lr_frac: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    eval_every: int = 0  # 0 = only at the end
    save_every: int = 0  # 0 = only at the end and on a signal
    log_every: int = 1
    compile: bool = False
    seed: int = 42

    # Fields that change the numbers a run computes; a state saved under other values is refused.
    def identity(self):
        harmless = {"eval_every", "save_every", "log_every", "compile"}
        return {k: v for k, v in asdict(self).items() if k not in harmless}


def grad_accum_steps(cfg, world_size):
    per_micro = cfg.device_batch_size * cfg.sequence_len * world_size
    if cfg.total_batch_size % per_micro:
        raise ValueError(
            f"total_batch_size {cfg.total_batch_size} is not a multiple of device_batch_size × sequence_len × processes "
            f"= {cfg.device_batch_size} × {cfg.sequence_len} × {world_size} = {per_micro}"
        )
    return cfg.total_batch_size // per_micro


def lr_multiplier(step, cfg):
    """Linear warm-up over warmup_ratio of the steps, flat, linear warm-down to final_lr_frac."""
    n = cfg.num_iterations
    warmup, warmdown = round(cfg.warmup_ratio * n), round(cfg.warmdown_ratio * n)
    if step < warmup:
        return (step + 1) / warmup
    if step < n - warmdown:
        return 1.0
    progress = (n - step) / warmdown
    return progress + (1 - progress) * cfg.final_lr_frac


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


def cpu_has_bf16_matmul():
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); without it torch emulates
    bf16 matmuls, 50× slower than float32 on an AVX2 EPYC, while with it they run 2.5–3.5× faster."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


class Muon(torch.optim.Muon):
    """torch.optim.Muon; on a CPU without native bf16 matmul its Newton–Schulz step runs in float32
    instead of bfloat16 (emulated bf16 dominated such CPUs' steps)."""

    torch_newton_schulz = staticmethod(torch.optim._muon._zeropower_via_newtonschulz)

    def newton_schulz(self):
        """The orthogonalisation this optimizer's step runs: (grad, ns_coefficients, ns_steps, eps) -> update."""
        on_cpu = self.param_groups[0]["params"][0].device.type == "cpu"
        return newton_schulz_float32 if on_cpu and not cpu_has_bf16_matmul() else self.torch_newton_schulz

    def step(self, closure=None):
        torch.optim._muon._zeropower_via_newtonschulz = self.newton_schulz()
        try:
            return super().step(closure)
        finally:
            torch.optim._muon._zeropower_via_newtonschulz = self.torch_newton_schulz


def build_optimizers(model, cfg):
    """[AdamW (embedding, head), Muon (hidden matrices)]; each group keeps its base lr in "initial_lr"."""
    model = unwrap(model)
    matrices = model.matrix_params()
    adamw = torch.optim.AdamW(
        [dict(params=[model.wte.weight], lr=cfg.embedding_lr), dict(params=[model.lm_head.weight], lr=cfg.unembedding_lr)],
        betas=(cfg.adam_beta1, cfg.adam_beta2), eps=1e-10, weight_decay=0.0, fused=True,
    )
    muon = Muon(matrices, lr=cfg.matrix_lr, momentum=0.95, nesterov=True, weight_decay=cfg.weight_decay)
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


def peak_flops(device):
    """Peak bf16 FLOP/s of one device, or None where unknown (CPUs)."""
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)


class StateError(RuntimeError):
    pass


class StateStore:
    """Resumable states `state_{step:08d}.pt` in a directory; the newest two are kept."""

    def __init__(self, directory, keep=2):
        self.directory, self.keep = Path(directory), keep

    def paths(self):
        return sorted(self.directory.glob("state_*.pt"))

    def save(self, state):
        path = self.directory / f"state_{state['step']:08d}.pt"
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        for old in self.paths()[:-self.keep]:
            old.unlink()
        return path

    def clear(self):
        """Remove the states and the log once the stage's checkpoint is safely written: a later
        run with other settings then starts afresh instead of being refused."""
        for path in [*self.paths(), self.directory / "train_log.csv"]:
            path.unlink(missing_ok=True)

    def load_latest(self):
        """The newest readable state, or None when there is none at all."""
        paths = self.paths()
        for path in reversed(paths):
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
                if not isinstance(state, dict) or "step" not in state or "model" not in state:
                    raise ValueError("not a training state")
            except Exception as e:
                warnings.warn(f"skipping unreadable training state {path}: {e}")
                continue
            return path, state
        if paths:
            raise StateError(
                f"no readable training state in {self.directory} (tried {', '.join(p.name for p in paths)}); "
                f"refusing to start over from step 0. Delete the directory to train from scratch."
            )
        return None


class TrainLog:
    """train_log.csv, appended one row per step and flushed, so it survives an interruption."""

    def __init__(self, path, columns):
        self.path, self.columns = Path(path), list(columns)

    def start(self, resume_step):
        """Keep the rows up to `resume_step` (rows after it were not saved in any state)."""
        rows = []
        if resume_step and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, self.columns)
                writer.writeheader()
                writer.writerows(rows)

    def write(self, row):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: "" if v is None else v for k, v in row.items()})


class StopSignals:
    """Turns SIGTERM/SIGUSR1 into a flag the loop checks after each step."""

    def __init__(self):
        self.signum = 0
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    def received(self, device):
        """The signal any process got (all processes must agree to stop at the same step)."""
        if not dist.is_initialized():
            return self.signum
        flag = torch.tensor([self.signum], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


def rng_state(device):
    state = {"cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def check_identity(saved, current, path):
    diffs = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if diffs:
        listed = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in sorted(diffs.items()))
        raise StateError(f"training state {path} was made with other settings ({listed}). Delete {path.parent} to start over.")


def restore(state, path, identity, model, optimizers, device):
    """Load a saved state's weights, optimizer moments and RNGs, after checking it was made under `identity`."""
    check_identity(state["identity"], identity, path)
    model.load_state_dict(state["model"])
    for opt, opt_state in zip(optimizers, state["optimizers"]):
        opt.load_state_dict(opt_state)  # param groups keep their "initial_lr"
    set_rng_state(state["rng"], device)
    print0(f"resuming from {path} at step {state['step']}")


def train(model, loader, cfg, state_dir, device, evaluate=None, model_identity=None):
    """Train `model` (a plain GPT on `device`) for cfg.num_iterations optimizer steps.

    evaluate(model) -> float, called on every process at eval_every steps and at the end, goes
    into the val_bpb column. Returns a summary dict (step, tokens, flops, elapsed_s, world_size,
    grad_accum_steps, final_loss, val_bpb, log_path, resumed_from).
    """
    rank, _, world_size = dist_info()
    device = torch.device(device)
    accum = grad_accum_steps(cfg, world_size)
    optimizers = build_optimizers(model, cfg)
    store = StateStore(state_dir)
    log = TrainLog(Path(state_dir) / "train_log.csv", LOG_COLUMNS)
    identity = {"train": cfg.identity(), "model": model_identity or {}, "world_size": world_size}

    step, tokens, flops, elapsed, resumed_from, val, loss_value = 0, 0, 0, 0.0, None, None, float("nan")
    found = store.load_latest()
    if found:
        path, state = found
        restore(state, path, identity, model, optimizers, device)
        loader.load_state_dict(state["loader"][rank])
        step, tokens, flops, elapsed, val, loss_value = (state[k] for k in ("step", "tokens", "flops", "elapsed_s", "val_bpb", "loss"))
        resumed_from = str(path)
    else:
        torch.manual_seed(cfg.seed)
    if rank == 0:
        log.start(step)

    def save_state():
        loader_states = gather(loader.state_dict())
        if rank == 0:
            state = {
                "step": step, "tokens": tokens, "flops": flops, "elapsed_s": elapsed, "val_bpb": val, "loss": loss_value,
                "model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                "loader": loader_states, "rng": rng_state(device), "identity": identity,
            }
            print0(f"saved training state {store.save(state)}")
        if dist.is_initialized():
            dist.barrier()

    train_model = model
    if world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    signals = StopSignals()
    flops_per_token = model.flops_per_token()
    peak = peak_flops(device)

    while step < cfg.num_iterations:
        t0 = time.perf_counter()
        mult = lr_multiplier(step, cfg)
        set_lr(optimizers, mult)
        loss_sum = torch.zeros((), device=device)
        for micro in range(accum):
            inputs, targets = loader.next_batch()
            sync = micro == accum - 1 or world_size == 1
            with (contextlib.nullcontext() if sync else unwrap_ddp(train_model).no_sync()), autocast(device):
                loss = train_model(inputs, targets)
            (loss / accum).backward()
            loss_sum += loss.detach()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        loss_value = all_reduce([loss_sum.item() / accum])[0] / world_size
        dt = time.perf_counter() - t0
        step += 1
        tokens += cfg.total_batch_size
        flops += flops_per_token * cfg.total_batch_size
        elapsed += dt
        tokens_per_s = cfg.total_batch_size / dt
        mfu = flops_per_token * tokens_per_s / (peak * world_size) if peak else None
        val_now = None
        if evaluate is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.num_iterations):
            model.eval()
            with torch.no_grad(), autocast(device):
                val = val_now = evaluate(model)
            model.train()
        if rank == 0:
            log.write(dict(step=step, tokens=tokens, flops=flops, loss=f"{loss_value:.6f}", lr_mult=f"{mult:.6f}", tokens_per_s=f"{tokens_per_s:.1f}",
                           mfu=None if mfu is None else f"{mfu:.4f}", elapsed_s=f"{elapsed:.3f}", val_bpb=None if val_now is None else f"{val_now:.6f}"))
        if step % cfg.log_every == 0 or step == cfg.num_iterations or val_now is not None:
            print0(
                f"step {step:6d}/{cfg.num_iterations} | loss {loss_value:.4f} | lr× {mult:.3f} | {tokens_per_s:,.0f} tok/s"
                + (f" | mfu {100 * mfu:.1f}%" if mfu is not None else "")
                + (f" | val bpb {val_now:.4f}" if val_now is not None else "")
                + f" | {elapsed:.1f}s"
            )
        signum = signals.received(device)
        if signum or step == cfg.num_iterations or (cfg.save_every and step % cfg.save_every == 0):
            save_state()
        if signum:
            print0(f"stopping after step {step} on signal {signal.Signals(signum).name}; re-run to resume")
            sys.exit(128 + signum)

    return dict(step=step, tokens=tokens, flops=flops, elapsed_s=elapsed, world_size=world_size, grad_accum_steps=accum,
                final_loss=loss_value, val_bpb=val, log_path=str(log.path), resumed_from=resumed_from)


def unwrap_ddp(model):
    """The DistributedDataParallel module under an optional torch.compile wrapper."""
    return getattr(model, "_orig_mod", model)
