"""Mid-training: the base model trained further on the chat mixture, packed like pretraining.

    python -m snakechat.mid_train --start results/base/tiny --chat-data results/chat_data/tinyworld \
        --state results/state/mid/tiny --out results/mid/tiny \
        --mixture '{"world_chat": {"epochs": 1}, "identity": {"weight": 500}}' [--steps 60 ...]
    torchrun --nproc_per_node=8 -m snakechat.mid_train --start results/base/d20 ...

Needs a base checkpoint (`--start`) and a chat data directory (tasks.json plus one jsonl per
task and split). Conversations are rendered with the chat special tokens and concatenated into
rows like pretraining documents; the loss covers every token, so the model learns the special
tokens, tool calls and the multiple-choice format. Validation bits per byte (assistant tokens
and prompts alike) come from the test splits of the mixture's tasks.

Writes `--out` (model.pt, meta.json, train_log.csv); resumable state under `--state`.
"""

import argparse

from snakechat import chat_stage, tasks
from snakechat.bpb import bits_per_byte
from snakechat.chat_batches import PackedChatLoader, render
from snakechat.common import all_reduce, cleanup_distributed, print0
from snakechat.train_loop import TrainConfig, grad_accum_steps

MAX_CONVERSATION_TOKENS = 1 << 20  # conversations are packed whole, cut only by the row boundaries


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", required=True, help="base checkpoint directory")
    p.add_argument("--chat-data", required=True, help="chat data directory (tasks.json)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--state", required=True, help="resumable state directory (not a Snakemake output)")
    p.add_argument("--mixture", type=chat_stage.json_arg, required=True, help='JSON: task -> {"weight": n} or {"epochs": e}')
    p.add_argument("--steps", type=int, default=0, help="optimizer steps; 0: one pass over the mixture")
    p.add_argument("--device-batch-rows", type=int, default=32, help="rows per process per forward/backward pass")
    p.add_argument("--step-tokens", type=int, default=524288, help="tokens per optimizer step, all processes")
    p.add_argument("--sequence-len", type=int, default=2048, help="tokens per row (capped at the model's)")
    p.add_argument("--lr-mult", type=float, default=1.0, help="multiplier on the base model's learning rates")
    p.add_argument("--warmdown-frac", type=float, default=0.2)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--eval-every", type=int, default=150, help="steps between validation bpb (0: only at the end)")
    p.add_argument("--eval-tokens", type=int, default=10 * 2**20)
    p.add_argument("--save-every", type=int, default=200, help="steps between resumable states (0: only at the end)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    p.add_argument("--log-every", type=int, default=1, help="steps between progress lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return p.parse_args(argv)


def packed_loader(tok, conversations, rank, world_size, device_batch, sequence_len, device):
    rendered = [r for r in (render(tok, c, MAX_CONVERSATION_TOKENS) for c in conversations[rank::world_size]) if r is not None]
    return PackedChatLoader(rendered, device_batch, sequence_len, device)


def min_over_ranks(value):
    return int(all_reduce([value], "min")[0])


def main(argv=None):
    args = parse_args(argv)
    rank, world_size, device, model, tok, start_meta, lrs = chat_stage.begin(args)
    sequence_len = min(args.sequence_len, model.config.sequence_len)

    conversations = tasks.mixture(args.chat_data, args.mixture, "train", args.seed)
    loader = packed_loader(tok, conversations, rank, world_size, args.device_batch_rows, sequence_len, device)
    cfg = TrainConfig(
        num_iterations=1, total_batch_size=args.step_tokens, device_batch_size=args.device_batch_rows, sequence_len=sequence_len,
        compile=device.type == "cuda", **chat_stage.schedule(args, lrs),
    )
    accum = grad_accum_steps(cfg, world_size)
    one_pass = min_over_ranks(loader.micro_batches_per_pass()) // accum
    cfg.num_iterations = args.steps if args.steps > 0 else max(1, one_pass)
    print0(f"mid-training: {len(conversations):,} conversations, {len(loader.tokens):,} tokens on rank 0, "
           f"{one_pass} steps per pass, {cfg.num_iterations} steps of {args.step_tokens:,} tokens ({accum} micro-steps)")

    val_conversations, token_bytes = chat_stage.validation_set(args, start_meta)
    evaluate = None
    if val_conversations:

        def evaluate(model):
            val_loader = packed_loader(tok, val_conversations, rank, world_size, args.device_batch_rows, sequence_len, device)
            steps = max(1, min(args.eval_tokens // val_loader.window, min_over_ranks(val_loader.micro_batches_per_pass())))
            return bits_per_byte(model, val_loader, steps, token_bytes)

    chat_stage.train_and_save("snakechat.mid_train", "mid", args, model, loader, cfg, device, world_size, evaluate, start_meta, lrs, len(conversations))
    cleanup_distributed()


if __name__ == "__main__":
    main()
