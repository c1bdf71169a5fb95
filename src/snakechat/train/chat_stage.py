"""What the chat training stages (mid_train, chat_sft, chat_rl) share before the trainer takes over.

- The settings every chat stage has (`ChatSettings`; a stage adds its own).
- Early checks of the chat data and the mixture, so a typo fails before a model is loaded.
- The start checkpoint and the learning rates it carries: the base model's, kept in every
  checkpoint's meta.json under "base_lrs"; a stage trains at them × its lr_mult, with no warm-up
  and a linear decay to 0 over its last warmdown_frac, each stage computing it as nanochat
  b399e43's script does (snakechat.train.optim.lr_multiplier), and no gradient clipping by default
  (b399e43 clips in base_train only).
  A nanochat-2026-07 model (whose base_lrs add scalar_lr) trains with MuonAdamW; its SFT has a
  schedule of its own (snakechat.train.schedules2026, see chat_sft).
"""

from dataclasses import dataclass
from pathlib import Path

from snakechat.evaluate import tasks
import torch

from snakechat.model import recipes
from snakechat.model.checkpoint import load_model
from snakechat.train.optim import NEWTON_SCHULZ, Schedule
from snakechat.train.schedules2026 import ChatSchedule2026
from snakechat.train.trainer import OPTIMIZER_FILE
from snakechat.runtime.settings import option
from snakechat.train.trainer import Run, RunSettings

LR_KEYS = ("matrix_lr", "embedding_lr", "unembedding_lr")


@dataclass(kw_only=True)
class ChatSettings(RunSettings):
    start: str = option(help="checkpoint directory to start from", identity=False)
    chat_data: str = option(help="chat data directory (tasks.json)", identity=False)
    weight_decay: float = option(0.0, "AdamW's decoupled weight decay of the embedding and head (Muon's matrices have none)")
    grad_clip: float = option(0.0, "max gradient norm (0: no clipping, as nanochat's chat stages)")
    newton_schulz: str = option("auto", "Muon's orthogonalisation: nanochat (b399e43's bf16 ops), precision (snakechat's, in the run's precision), auto (nanochat under bf16, else precision)",
                                choices=list(NEWTON_SCHULZ))
    log_every: int = option(1, "steps between progress lines", identity=False)
    seed: int = option(0, "seeds the order of the data")


def check_chat_data(chat_dir, task_names, split, kinds=None):
    """Raise SystemExit naming the file and task unless every task exists with `split` (and of `kinds`)."""
    path = Path(chat_dir) / "tasks.json"
    if not path.exists():
        raise SystemExit(f"no chat data: {path} is missing")
    known = tasks.load_tasks(chat_dir)
    if not task_names:
        raise SystemExit(f"the mixture is empty: name at least one task of {path} ({', '.join(sorted(known))})")
    for name in task_names:
        if name not in known:
            raise SystemExit(f"{path}: no task {name!r} (tasks: {', '.join(sorted(known))})")
        if split not in known[name]["splits"]:
            raise SystemExit(f"{path}: task {name!r} has no {split!r} split")
        if kinds and known[name]["kind"] not in kinds:
            raise SystemExit(f"{path}: task {name!r} is of kind {known[name]['kind']!r}, this stage needs {' or '.join(kinds)}")


@dataclass
class Start:
    """The checkpoint a chat stage starts from: model, tokenizer, meta.json and its base learning rates."""

    directory: str
    model: object
    tok: object
    meta: dict
    lrs: dict


def load_start(directory, device):
    model, tok, meta = load_model(directory, device)
    source = meta.get("base_lrs") or meta.get("derived", {})  # base checkpoints written before base_lrs kept them in "derived"
    missing = [k for k in LR_KEYS if k not in source]
    if missing:
        raise SystemExit(f"{directory}/meta.json has no learning rates {missing} (neither in base_lrs nor in derived)")
    keys = LR_KEYS + (("scalar_lr",) if recipes.recipe_of_model(model) == recipes.NANOCHAT_2026 else ())
    if "scalar_lr" in keys and "scalar_lr" not in source:
        raise SystemExit(f"{directory}/meta.json base_lrs has no scalar_lr, which a {recipes.NANOCHAT_2026} model needs")
    return Start(str(directory), model, tok, meta, {k: float(source[k]) for k in keys})


def load_optimizer_state(start):
    """The optimizer states the start checkpoint kept (a nanochat-2026-07 base run keeps them), on the CPU."""
    path = Path(start.directory) / OPTIMIZER_FILE
    if not path.exists():
        raise SystemExit(f"{path} is missing: a {recipes.NANOCHAT_2026} SFT continues the base run's optimizer state, which only "
                         f"its base checkpoint keeps (stage {start.meta.get('stage')!r} here): start it from the base checkpoint, "
                         f"made by this snakechat's base_train")
    return torch.load(path, map_location="cpu", weights_only=True)


def schedule(s, start, steps, decay, compile=False, **extra):
    """The Schedule of a chat stage from its settings `s` (ChatSettings with the stage's lr_mult,
    warmdown_frac, eval_every and save_every), its start checkpoint and its `decay`
    (snakechat.train.optim.lr_multiplier); `extra`: further Schedule fields. A nanochat-2026-07
    start (its lrs include scalar_lr) gets that recipe's chat schedule."""
    kind = ChatSchedule2026 if "scalar_lr" in start.lrs else Schedule
    return kind(
        steps=steps, **{k: v * s.lr_mult for k, v in start.lrs.items()}, weight_decay=s.weight_decay, warmup_frac=0.0,
        warmdown_frac=s.warmdown_frac, final_lr_frac=0.0, decay=decay, newton_schulz=s.newton_schulz, grad_clip=s.grad_clip,
        eval_every=s.eval_every, save_every=s.save_every, log_every=s.log_every, compile=compile, seed=s.seed, **extra,
    )


def run(stage, module, s, start):
    """The trainer's Run of a chat stage: what it reads, and the fields its checkpoint carries forward from the start."""
    meta = {"tokenizer": start.meta["tokenizer"], "derived": start.meta.get("derived", {}), "base_lrs": start.lrs, "start": start.directory}
    return Run(stage, module, s, inputs=[Path(s.start) / "meta.json", Path(s.chat_data) / "tasks.json"], meta=meta)


def validation_conversations(chat_dir, mixture, seed):
    """One pass over the test split of each mixture task that has one, or None where none has (for validation losses)."""
    known = tasks.load_tasks(chat_dir)
    spec = {name: {"epochs": 1} for name in mixture if "test" in known[name]["splits"]}
    return tasks.mixture(chat_dir, spec, "test", seed) if spec else None
