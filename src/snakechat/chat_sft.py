"""Supervised fine-tuning: one conversation per row, padded, loss on the assistant's tokens only.

    python -m snakechat.chat_sft --start results/mid/tiny --chat-data results/chat_data/tinyworld \
        --state results/state/sft/tiny --out results/sft/tiny \
        --mixture '{"world_chat": {"weight": 800}, "world_mc": {"epochs": 1}}' [--epochs 1 ...]
    torchrun --nproc_per_node=8 -m snakechat.chat_sft --start results/mid/d20 ...

Needs the mid checkpoint (or the base one where mid is skipped) as `--start`, and a chat data
directory. A step takes `--step-conversations` conversations (all processes together), each its own
row cut to `--sequence-len`, padded to the longest row of its micro-batch; only assistant tokens
(tool calls included, tool outputs not) are targets. The learning rates are the base model's
times `--lr-mult`, decaying linearly to 0 over the last `--warmdown-frac` of the steps.
Validation bits per byte over the assistant tokens of the mixture tasks' test splits.

The tokens column of train_log.csv counts rows × sequence_len per step (an upper bound: rows are
padded only to their micro-batch's longest conversation).

Writes `--out` (model.pt, meta.json, train_log.csv); resumable state under `--state`.
"""

import argparse

from snakechat import chat_stage, tasks
from snakechat.bpb import bits_per_byte
from snakechat.chat_batches import ConversationLoader
from snakechat.common import cleanup_distributed, print0
from snakechat.train_loop import TrainConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", required=True, help="mid (or base) checkpoint directory")
    p.add_argument("--chat-data", required=True, help="chat data directory (tasks.json)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--state", required=True, help="resumable state directory (not a Snakemake output)")
    p.add_argument("--mixture", type=chat_stage.json_arg, required=True, help='JSON: task -> {"weight": n} or {"epochs": e}')
    p.add_argument("--epochs", type=int, default=1, help="passes over the mixture (when --steps is 0)")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps; 0: from --epochs")
    p.add_argument("--device-batch-rows", type=int, default=4, help="rows (one conversation each) per process per forward/backward pass")
    p.add_argument("--step-conversations", type=int, default=32, help="conversations per optimizer step, all processes")
    p.add_argument("--sequence-len", type=int, default=2048, help="tokens kept of each conversation (capped at the model's sequence length)")
    p.add_argument("--lr-mult", type=float, default=0.02, help="multiplier on the base model's learning rates")
    p.add_argument("--warmdown-frac", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--eval-every", type=int, default=100, help="steps between validation bpb (0: only at the end)")
    p.add_argument("--eval-conversations", type=int, default=1024, help="test conversations the validation reads")
    p.add_argument("--save-every", type=int, default=200, help="steps between resumable states (0: only at the end)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    p.add_argument("--log-every", type=int, default=1, help="steps between progress lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rank, world_size, device, model, tok, start_meta, lrs = chat_stage.begin(args)
    max_tokens = min(args.sequence_len, model.config.sequence_len)

    conversations = tasks.mixture(args.chat_data, args.mixture, "train", args.seed)
    loader = ConversationLoader(tok, conversations, args.device_batch_rows, args.step_conversations, max_tokens, args.seed, rank, world_size, device)
    steps = args.steps if args.steps > 0 else max(1, args.epochs * loader.steps_per_pass())
    cfg = TrainConfig(
        num_iterations=steps, total_batch_size=args.step_conversations * max_tokens, device_batch_size=args.device_batch_rows, sequence_len=max_tokens,
        compile=False, **chat_stage.schedule(args, lrs),
    )
    print0(f"SFT: {len(conversations):,} conversations, {loader.steps_per_pass()} steps per pass, {steps} steps of {args.step_conversations} conversations")

    val_conversations, token_bytes = chat_stage.validation_set(args, start_meta)
    evaluate = None
    if val_conversations:
        per_step = args.device_batch_rows * world_size
        val_steps = max(1, min(args.eval_conversations, len(val_conversations)) // per_step)

        def evaluate(model):
            val_loader = ConversationLoader(tok, val_conversations, args.device_batch_rows, per_step, max_tokens, args.seed, rank, world_size, device)
            return bits_per_byte(model, val_loader, val_steps, token_bytes)

    chat_stage.train_and_save("snakechat.chat_sft", "sft", args, model, loader, cfg, device, world_size, evaluate, start_meta, lrs, len(conversations))
    cleanup_distributed()


if __name__ == "__main__":
    main()
