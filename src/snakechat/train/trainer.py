"""The trainer: one training stage from start to finish, the same way for every stage.

A stage module (base_train, mid_train, chat_sft, chat_rl) is a recipe: it reads its settings,
builds or loads the model, and hands the trainer a `Recipe`, the part that is its own: how a
step's micro-batches are made and become a loss (packed documents for base, packed conversations
for mid, masked conversation rows for SFT: all `TokenRecipe`; sampled and rewarded completions for
RL) and how the model is evaluated. The trainer does the rest:

- resume from the newest readable state in the state directory, once it has checked that the
  state was made under this run's identity: the settings that change what is computed, the model
  shape, the inputs (by hash) and the number of processes; otherwise it stops, naming each difference;
- the loop: learning rate × schedule and Muon's momentum (snakechat.train.optim), the micro-batches with gradient
  accumulation (DDP over NCCL or gloo, gradients synchronised on the last micro-batch), the run's
  precision (`--precision`, resolved by snakechat.model.precision: bf16 autocast with float32 weights and
  optimizer state, or float32), torch.compile where the schedule asks, clipping, the optimizer steps;
- train_log.csv, one row per step, and a progress line every log_every steps; each step's metrics
  also go to the experiment tracker the settings name (snakechat.runtime.tracking), with the final
  results and the run's settings and provenance;
- evaluations every eval_every steps and after the last (and before the first, for a recipe that asks);
- a resumable state every save_every steps, after the last and on SIGTERM/SIGUSR1 (the process
  then exits with 128 + the signal number);
- the checkpoint (model.pt, meta.json with the fields every checkpoint has, train_log.csv), then
  the state directory is removed.

State directories: one policy for every stage. A stage and model have one state directory,
results/state/{stage}/{model}/ (the rule passes it as --state), holding the newest two states and
train_log.csv. A run resumes what is there if it was made under the same identity, and otherwise
stops with an error that names each difference and the directory to delete. A directory per
settings would let a changed run start afresh by itself, but an interrupted run can be hours of
accelerator time: a setting changed on the way, or a start checkpoint rebuilt, would silently
abandon it and leave its states on disk. One fixed place keeps disk use bounded, is found again by
a Slurm requeue and by a person, and a fresh start is the one `rm -r` that the error spells out.
"""

import contextlib
import csv
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from snakechat.model import precision
from snakechat.runtime import provenance
from snakechat.runtime import settings
from snakechat.runtime import tracking
from snakechat.model.checkpoint import save_checkpoint
from snakechat.runtime.common import all_reduce, atomic_path, dist_info, gather, print0
from snakechat.runtime.progress import Progress
from snakechat.train.optim import build_optimizers, optimizer_step
from snakechat.train.train_state import StateError, StateStore, check_identity, rng_state, set_rng_state

OPTIMIZER_FILE = "optimizer.pt"  # a checkpoint's final optimizer states, where its schedule keeps them
LOG_COLUMNS = ["step", "tokens", "flops", "loss", "lr_mult", "tokens_per_s", "mfu", "elapsed_s", "val_bpb"]
# Dense bf16 peak FLOP/s per GPU, by a substring of torch.cuda.get_device_name().
PEAK_FLOPS = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12)]


def peak_flops(device):
    """Peak bf16 FLOP/s of one device, or None where unknown (CPUs)."""
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)


@dataclass
class Step:
    """One optimizer step's work, as a recipe plans it: its micro-batches (this process's) and what
    the step counts, all processes together."""

    batches: list
    tokens: int  # tokens trained on (RL: sampled), for the tokens column and tokens/s
    flops: int  # training FLOPs
    log: dict = field(default_factory=dict)  # the recipe's own train_log.csv columns, as text


class Recipe:
    """What a stage plugs into the trainer; the defaults suit a stage with nothing to evaluate,
    resume or record."""

    log_columns = ()  # train_log.csv columns of its own
    evaluates_first = False  # evaluate once before the first step as well

    def step(self, step):
        """The Step of optimizer step `step` (0-based)."""
        raise NotImplementedError

    def loss(self, model, batch):
        """The loss of one micro-batch on the training model (DDP/compile-wrapped). Summed over
        the step's micro-batches and averaged over the processes, it is the step's objective."""
        raise NotImplementedError

    def evaluate(self, model):
        """{metric: value} of the model (val_bpb goes into train_log.csv)."""
        return {}

    def state_dict(self):
        """This process's position, saved in resumable states."""
        return {}

    def load_state_dict(self, state):
        pass

    def meta(self):
        """meta.json fields of its own."""
        return {}


class TokenRecipe(Recipe):
    """Micro-batches (inputs, targets) from a loader, the loss the model's cross-entropy over the
    targets (-1: not a target): packed tokens (base, mid) or masked conversation rows (SFT).
    `validate(model)`, if given, is the validation bits per byte."""

    def __init__(self, loader, micro_steps, step_tokens, flops_per_token, validate=None, meta=None):
        self.loader, self.micro_steps, self.step_tokens = loader, micro_steps, step_tokens
        self.flops_per_token, self.validate, self._meta = flops_per_token, validate, meta or {}

    def step(self, step):
        batches = [self.loader.next_batch() for _ in range(self.micro_steps)]
        return Step(batches, self.step_tokens, self.flops_per_token * self.step_tokens)

    def loss(self, model, batch):
        inputs, targets = batch
        return model(inputs, targets) / self.micro_steps

    def evaluate(self, model):
        return {"val_bpb": self.validate(model)} if self.validate else {}

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)

    def meta(self):
        return self._meta


@dataclass(kw_only=True)
class RunSettings:
    """The settings every training stage has (a stage's settings class adds its own)."""

    out: str = settings.option(help="checkpoint directory to write", identity=False)
    state: str = settings.option(help="resumable state directory (not a Snakemake output)", identity=False)
    device: str = settings.option("auto", "auto, cpu or cuda", identity=False)
    # resolved (auto -> bf16 or fp32 on this device) before it enters the identity and meta.json
    precision: str = settings.option("auto", "auto (bf16 where the device multiplies bf16 natively, else fp32), fp32 or bf16",
                                     choices=list(precision.SETTINGS), identity=False)
    tracking: str = settings.option("none", "experiment tracker for the metrics (offline by default; snakechat.runtime.tracking)",
                                    choices=list(tracking.KINDS), identity=False)
    tracking_project: str = settings.option("snakechat", "tracker project (MLflow experiment); the workflow passes snakechat-<model>", identity=False)
    tracking_dir: str = settings.option("results/tracking", "where the offline tracker writes", identity=False)

    def __post_init__(self):
        """A tracker whose package is missing is a usage error, before the stage loads anything."""
        try:
            tracking.check(self.tracking)
        except tracking.TrackingError as e:
            raise ValueError(str(e)) from None


@dataclass
class Run:
    """What a run is, besides its model, recipe and schedule: the stage, its module (provenance),
    its settings (RunSettings; meta.json "train"), the files it reads (provenance, and by hash its
    identity) and meta.json fields of its own."""

    stage: str
    module: str
    settings: object
    inputs: list
    meta: dict = field(default_factory=dict)


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

    def received(self):
        """The signal any process got (all processes must agree to stop at the same step)."""
        return int(all_reduce([self.signum], "max")[0])


class Trainer:
    """Trains `model` (a plain GPT on `device`) for schedule.steps optimizer steps of `recipe`,
    then writes its checkpoint (see the module docstring)."""

    def __init__(self, model, recipe, schedule, run, device):
        self.model, self.recipe, self.schedule, self.run_info = model, recipe, schedule, run
        self.device = torch.device(device)
        self.rank, _, self.world_size = dist_info()
        precision.configure(self.device)
        self.precision = precision.resolve(run.settings.precision, self.device)
        self.optimizers = build_optimizers(model, schedule, self.precision)
        self.store = StateStore(run.settings.state)
        self.log = TrainLog(self.store.directory / "train_log.csv", LOG_COLUMNS + list(recipe.log_columns))
        self.identity = {**settings.identity(run.settings), "precision": self.precision, "model": model.config.to_dict(), "world_size": self.world_size,
                         "inputs": {str(p): provenance.hash_path(p) for p in run.inputs}}
        self.step, self.tokens, self.flops, self.elapsed, self.loss = 0, 0, 0, 0.0, float("nan")
        self.evals, self.resumed_from = [], None

    def train(self):
        """The whole run; returns the checkpoint's meta.json (rank 0; None elsewhere)."""
        self.resume()
        with self.open_tracker() as self.tracker:
            return self.loop()

    def open_tracker(self):
        run = self.run_info
        train_settings = settings.as_dict(run.settings, drop=("out", "state"))
        return tracking.open_run(run.settings.tracking, run.settings.tracking_project, run.stage, run.settings.tracking_dir, train_settings,
                                 provenance.record(run.module, train_settings, inputs=run.inputs) if self.rank == 0 else None)

    def loop(self):
        model = self.training_model()
        signals = StopSignals()
        if self.recipe.evaluates_first and self.step == 0:
            self.evaluate()
        while self.step < self.schedule.steps:
            row = self.train_step(model)
            last = self.step == self.schedule.steps
            every = lambda n: n and self.step % n == 0  # noqa: E731
            evaluated = self.evaluate() if last or every(self.schedule.eval_every) else {}
            self.record(row, evaluated)
            signum = signals.received()
            if signum or last or every(self.schedule.save_every):
                self.save_state()
            if signum:
                print0(f"stopping after step {self.step} on signal {signal.Signals(signum).name}; re-run to resume")
                sys.exit(128 + signum)
        return self.finish()

    def resume(self):
        found = self.store.load_latest()
        if found:
            path, state = found
            try:
                check_identity(state["identity"], self.identity, path)
            except StateError as e:
                raise SystemExit(str(e)) from None
            self.model.load_state_dict(state["model"])
            for opt, opt_state in zip(self.optimizers, state["optimizers"]):
                opt.load_state_dict(opt_state)  # param groups keep their "initial_lr"
            set_rng_state(state["rng"], self.device)
            self.recipe.load_state_dict(state["recipe"][self.rank])
            self.step, self.tokens, self.flops, self.elapsed, self.loss, self.evals = (
                state[k] for k in ("step", "tokens", "flops", "elapsed_s", "loss", "evals"))
            self.resumed_from = str(path)
            print0(f"resuming from {path} at step {self.step}")
        else:
            torch.manual_seed(self.schedule.seed)
        if self.rank == 0:
            self.log.start(self.step)
        self.progress = Progress(self.run_info.stage, self.schedule.steps, unit="steps", done=self.step)  # the ETA of progress lines

    def training_model(self):
        """The model the micro-batches run through: DDP-wrapped over several processes, compiled where asked."""
        model = self.model
        if self.world_size > 1:
            # find_unused_parameters (there are none): DDP then keeps its first gradient buckets for
            # good. By default it regroups them after its first step, and a bucket's layout decides
            # the order in which 3 or more processes' gradients are summed: a resumed run's first
            # step would round differently from the uninterrupted run's. (DDP warns once per process
            # that it found no unused parameters.)
            model = DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None, find_unused_parameters=True)
        return torch.compile(model) if self.schedule.compile else model

    def train_step(self, model):
        t0 = time.perf_counter()
        work = self.recipe.step(self.step)
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        for i, batch in enumerate(work.batches):
            accumulate = self.world_size > 1 and i < len(work.batches) - 1
            with (getattr(model, "_orig_mod", model).no_sync() if accumulate else contextlib.nullcontext()), precision.autocast(self.device, self.precision):
                loss = self.recipe.loss(model, batch)
            loss.backward()
            loss_sum += loss.detach()
        mult, _ = optimizer_step(self.model, self.optimizers, self.schedule, self.step)
        self.loss = all_reduce([loss_sum.item()])[0] / self.world_size
        dt = time.perf_counter() - t0
        self.step, self.tokens, self.flops, self.elapsed = self.step + 1, self.tokens + work.tokens, self.flops + work.flops, self.elapsed + dt
        peak = peak_flops(self.device)
        return {"lr_mult": mult, "tokens_per_s": work.tokens / dt, "mfu": work.flops / dt / (peak * self.world_size) if peak else None, **work.log}

    def evaluate(self):
        self.model.eval()
        with torch.no_grad(), precision.autocast(self.device, self.precision):
            result = self.recipe.evaluate(self.model)
        self.model.train()
        if result:
            self.evals.append({"step": self.step, **result})
            print0(f"eval at step {self.step}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
        return result

    def record(self, row, evaluated):
        """The step's train_log.csv row, and its progress line every log_every steps (ending in the
        wall time of this run and the ETA at its pace, evaluations included)."""
        self.progress.done = self.step
        val, mfu, own = evaluated.get("val_bpb"), row.pop("mfu"), {k: row.pop(k) for k in self.recipe.log_columns}
        self.tracker.log({"train/loss": self.loss, "train/lr_mult": row["lr_mult"], "train/tokens_per_s": row["tokens_per_s"], "train/mfu": mfu,
                          **{f"train/{k}": v for k, v in own.items()}, **{f"eval/{k}": v for k, v in evaluated.items()}}, self.step)
        if self.rank == 0:
            self.log.write(dict(step=self.step, tokens=self.tokens, flops=self.flops, loss=f"{self.loss:.6f}", lr_mult=f"{row['lr_mult']:.6f}",
                                tokens_per_s=f"{row['tokens_per_s']:.1f}", mfu=None if mfu is None else f"{mfu:.4f}", elapsed_s=f"{self.elapsed:.3f}",
                                val_bpb=None if val is None else f"{val:.6f}", **own))
        if self.step % self.schedule.log_every == 0 or self.step == self.schedule.steps or evaluated:
            print0(
                f"step {self.step:6d}/{self.schedule.steps} | loss {self.loss:.5g} | lr× {row['lr_mult']:.3f} | {row['tokens_per_s']:,.0f} tok/s"
                + (f" | mfu {100 * mfu:.1f}%" if mfu is not None else "")
                + (f" | val bpb {val:.4f}" if val is not None else "")
                + "".join(f" | {k} {v}" for k, v in own.items())
                + f" | {self.elapsed:.1f}s"
                + f" | {self.progress.timing()}"
            )

    def save_state(self):
        positions = gather(self.recipe.state_dict())
        if self.rank == 0:
            state = {
                "step": self.step, "tokens": self.tokens, "flops": self.flops, "elapsed_s": self.elapsed, "loss": self.loss, "evals": self.evals,
                "model": self.model.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers], "recipe": positions,
                "rng": rng_state(self.device), "identity": self.identity,
            }
            print0(f"saved training state {self.store.save(state)}")
        if dist.is_initialized():
            dist.barrier()

    def finish(self):
        """Rank 0 writes the checkpoint, then removes the state directory."""
        if self.rank != 0:
            return None
        run = self.run_info
        train_settings = settings.as_dict(run.settings, drop=("out", "state"))
        val = next((e["val_bpb"] for e in reversed(self.evals) if "val_bpb" in e), None)
        meta = {
            "stage": run.stage, "model_config": self.model.config.to_dict(), **run.meta, "train": train_settings,
            "schedule": self.schedule.record(), "step": self.step, "tokens": self.tokens, "flops": self.flops, "elapsed_s": self.elapsed,
            "world_size": self.world_size, "device": str(self.device), "precision": self.precision, "final_loss": self.loss, "val_bpb": val, "evals": self.evals,
            "resumed_from": self.resumed_from, **self.recipe.meta(),
            "provenance": provenance.record(run.module, train_settings, inputs=run.inputs),
        }
        extra = {"train_log.csv": self.log.path}
        if self.schedule.saves_optimizer:
            extra[OPTIMIZER_FILE] = self.store.directory / OPTIMIZER_FILE
            torch.save([o.state_dict() for o in self.optimizers], extra[OPTIMIZER_FILE])
        save_checkpoint(run.settings.out, self.model, meta, extra_files=extra)
        self.tracker.summary({"final_loss": self.loss, "val_bpb": val, "step": self.step, "tokens": self.tokens, "flops": self.flops, "elapsed_s": self.elapsed})
        self.store.clear()
        print0(f"wrote {run.settings.out}" + (f" (val bpb {val:.4f})" if val is not None else ""))
        return meta
