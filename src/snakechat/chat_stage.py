"""What the chat training stages (mid_train, chat_sft, chat_rl) share around the training loop.

- Early checks of the chat data and the mixture, so a typo fails before a model is loaded.
- The learning rates a stage starts from: the base model's, carried forward in every chat
  checkpoint's meta.json under "base_lrs", times the stage's lr_mult.
- A state directory per run setting: results/state/<stage>/<model>/<hash of settings and start
  checkpoint>/. An interrupted run resumes; a run with other settings or another start checkpoint
  starts afresh instead of resuming someone else's state; a finished run removes its states.
- Writing the checkpoint with the meta.json fields every checkpoint has.
"""

import json
import shutil
from pathlib import Path

from snakechat import provenance, tasks
from snakechat.checkpoint import load_model, save_checkpoint
from snakechat.common import init_distributed, is_master, print0
from snakechat.tokenizer import load_token_bytes
from snakechat.train_loop import train

LR_KEYS = ("matrix_lr", "embedding_lr", "unembedding_lr")


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


def begin(args):
    """The first steps of mid and SFT: check the chat data, join the process group, load the
    start checkpoint and its learning rates. Returns (rank, world_size, device, model, tok, meta, lrs)."""
    check_chat_data(args.chat_data, list(args.mixture), "train")
    rank, _, world_size, device = init_distributed(args.device)
    model, tok, meta = load_model(args.start, device)
    return rank, world_size, device, model, tok, meta, base_lrs(meta, args.start)


def schedule(args, lrs):
    """The TrainConfig fields mid and SFT set alike: the base learning rates × lr_mult, no warm-up,
    a linear warm-down over the last warmdown_frac to zero, and the eval/save intervals."""
    return dict(
        matrix_lr=lrs["matrix_lr"] * args.lr_mult, embedding_lr=lrs["embedding_lr"] * args.lr_mult,
        unembedding_lr=lrs["unembedding_lr"] * args.lr_mult, weight_decay=args.weight_decay,
        warmup_ratio=0.0, warmdown_ratio=args.warmdown_frac, final_lr_frac=0.0,
        grad_clip=args.grad_clip, eval_every=args.eval_every, save_every=args.save_every, log_every=args.log_every, seed=args.seed,
    )


def validation_set(args, meta):
    """(test conversations of the mixture's tasks or None where none has a test split, the start
    tokenizer's token byte lengths): what a bits-per-byte validation needs."""
    spec = validation_mixture(args.chat_data, args.mixture)
    conversations = tasks.mixture(args.chat_data, spec, "test", args.seed) if spec else None
    return conversations, load_token_bytes(meta["tokenizer"])


def validation_mixture(chat_dir, spec):
    """One pass over the test split of each mixture task that has one (for validation losses)."""
    known = tasks.load_tasks(chat_dir)
    return {name: {"epochs": 1} for name in spec if "test" in known[name]["splits"]}


def base_lrs(meta, directory):
    """The base model's learning rates: kept in "base_lrs" by chat checkpoints, in "derived" by base ones."""
    source = meta.get("base_lrs") or meta.get("derived", {})
    missing = [k for k in LR_KEYS if k not in source]
    if missing:
        raise SystemExit(f"{directory}/meta.json has no learning rates {missing} (neither in base_lrs nor in derived)")
    return {k: float(source[k]) for k in LR_KEYS}


def run_state_dir(state_root, settings, start_dir):
    """The state directory of this run's settings and start checkpoint (see the module docstring)."""
    start_meta = provenance.hash_file(Path(start_dir) / "meta.json")
    key = provenance.hash_obj({"settings": settings, "start": start_meta})
    return Path(state_root) / key


def finish(out, model, meta, summary, state_root):
    """Write the checkpoint (with train_log.csv), then drop the run's resumable states."""
    save_checkpoint(out, model, meta, extra_files={"train_log.csv": summary["log_path"]})
    shutil.rmtree(state_root, ignore_errors=True)
    print0(f"wrote {out}")


def checkpoint_meta(module, args, model, start_meta, lrs, summary, device, extra):
    """meta.json of a chat checkpoint: the base checkpoint's fields plus where it started from."""
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "state")}
    return {
        "model_config": model.config.to_dict(),
        "derived": start_meta.get("derived", {}),
        "base_lrs": lrs,
        "train": settings,
        "tokenizer": start_meta["tokenizer"],
        "start": str(args.start),
        "step": summary["step"],
        "tokens": summary["tokens"],
        "flops": summary["flops"],
        "elapsed_s": summary["elapsed_s"],
        "world_size": summary["world_size"],
        "device": str(device),
        "resumed_from": summary.get("resumed_from"),
        **extra,
        "provenance": provenance.record(module, settings, inputs=[Path(args.start) / "meta.json", Path(args.chat_data) / "tasks.json"]),
    }


def train_and_save(module, stage, args, model, loader, cfg, device, world_size, evaluate, start_meta, lrs, conversations):
    """Mid and SFT: the shared loop in this run's state directory, then the checkpoint (rank 0)."""
    settings = {**{k: v for k, v in vars(args).items() if k not in ("out", "state")}, "world_size": world_size}
    state_dir = run_state_dir(args.state, settings, args.start)
    summary = train(model, loader, cfg, state_dir, device, evaluate=evaluate, model_identity=model.config.to_dict())
    if is_master():
        meta = checkpoint_meta(module, args, model, start_meta, lrs, summary, device, {
            "stage": stage, "schedule": cfg.identity(), "conversations": conversations,
            "final_loss": summary["final_loss"], "val_bpb": summary["val_bpb"],
        })
        finish(args.out, model, meta, summary, args.state)


def json_arg(text):
    """argparse type for the mixture and task-list flags (the rules pass them as JSON)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {text!r} ({e})") from e
