"""Mid-training: the base model trained further on the chat mixture, packed like pretraining.

    python -m snakechat.mid_train --start results/base/tiny --chat-data results/chat_data/tinyworld \\
        --state results/state/mid/tiny --out results/mid/tiny \\
        --mixture '{"world_chat": {"epochs": 1}, "identity": {"weight": 500}}' [--steps 60 ...]
    torchrun --nproc_per_node=8 -m snakechat.mid_train --start results/base/d20 ...

Needs a base checkpoint (`--start`) and a chat data directory (tasks.json plus one jsonl per
task and split). Conversations are rendered with the chat special tokens and concatenated into
rows of `--sequence-len` tokens like pretraining documents; the loss covers every token, so the
model learns the special tokens, tool calls and the multiple-choice format. A step takes
`--step-tokens` tokens. The lr follows nanochat b399e43's progress through the data (flat, then
linear to 0 over the last `--warmdown-frac`) and Muon's momentum its warm-up, as in base_train. Validation bits per byte (assistant tokens and prompts alike) come from
the test splits of the mixture's tasks. The loop, resumable state under `--state`, signals and
the checkpoint in `--out` (model.pt, meta.json, train_log.csv) are snakechat.train.trainer's.
"""

from dataclasses import dataclass

from snakechat.train import chat_stage
from snakechat.model import sizing
from snakechat.evaluate import tasks
from snakechat.evaluate.bpb import bits_per_byte
from snakechat.train.chat_batches import PackedChatLoader, render
from snakechat.runtime.common import all_reduce, cleanup_distributed, init_distributed, print0
from snakechat.runtime.settings import json_arg, option, parse
from snakechat.model.tokenizer import load_token_bytes
from snakechat.train.trainer import TokenRecipe, Trainer

MAX_CONVERSATION_TOKENS = 1 << 20  # conversations are packed whole, cut only by the row boundaries


@dataclass(kw_only=True)
class MidSettings(chat_stage.ChatSettings):
    mixture: dict = option(help='JSON: task -> {"weight": n} or {"epochs": e}', parse=json_arg)
    steps: int = option(0, "optimizer steps; 0: one pass over the mixture")
    device_batch_rows: int = option(32, "rows per process per forward/backward pass")
    step_tokens: int = option(524288, "tokens per optimizer step, all processes")
    sequence_len: int = option(2048, "tokens per row (capped at the model's)")
    lr_mult: float = option(1.0, "multiplier on the base model's learning rates")
    warmdown_frac: float = option(0.2, "last fraction of the progress over which the lr decays linearly to 0")
    muon_momentum_warmup: int = option(300, "steps over which Muon's momentum rises from 0.85 to 0.95 (0: 0.95 throughout)")
    eval_every: int = option(150, "steps between validation bpb (0: only at the end)", identity=False)
    eval_tokens: int = option(10 * 2**20, "tokens of the test split the validation reads", identity=False)
    save_every: int = option(200, "steps between resumable states (0: only at the end)", identity=False)


def packed_loader(tok, conversations, rank, world_size, device_batch_rows, sequence_len, device):
    rendered = [r for r in (render(tok, c, MAX_CONVERSATION_TOKENS) for c in conversations[rank::world_size]) if r is not None]
    return PackedChatLoader(rendered, device_batch_rows, sequence_len, device)


def fewest_over_ranks(count):
    return int(all_reduce([count], "min")[0])


def main(argv=None):
    s = parse(MidSettings, argv, __doc__)
    chat_stage.check_chat_data(s.chat_data, list(s.mixture), "train")
    rank, _, world_size, device = init_distributed(s.device)
    start = chat_stage.load_start(s.start, device)
    sequence_len = min(s.sequence_len, start.model.config.sequence_len)

    conversations = tasks.mixture(s.chat_data, s.mixture, "train", s.seed)
    loader = packed_loader(start.tok, conversations, rank, world_size, s.device_batch_rows, sequence_len, device)
    try:
        micro_steps = sizing.grad_accum_steps(s.step_tokens, s.device_batch_rows, sequence_len, world_size)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    one_pass = fewest_over_ranks(loader.micro_batches_per_pass()) // micro_steps
    steps = s.steps or max(1, one_pass)
    print0(f"mid-training: {len(conversations):,} conversations, {len(loader.tokens):,} tokens on rank 0, "
           f"{one_pass} steps per pass, {steps} steps of {s.step_tokens:,} tokens ({micro_steps} micro-steps)")

    val_conversations = chat_stage.validation_conversations(s.chat_data, s.mixture, s.seed)
    validate = None
    if val_conversations:
        token_bytes = load_token_bytes(start.meta["tokenizer"])

        def validate(model):
            val_loader = packed_loader(start.tok, val_conversations, rank, world_size, s.device_batch_rows, sequence_len, device)
            micro_batches = max(1, min(s.eval_tokens // val_loader.window, fewest_over_ranks(val_loader.micro_batches_per_pass())))
            return bits_per_byte(model, val_loader, micro_batches, token_bytes)

    recipe = TokenRecipe(loader, micro_steps, s.step_tokens, start.model.flops_per_token(), validate, meta={"conversations": len(conversations)})
    schedule = chat_stage.schedule(s, start, steps, "progress", compile=device.type == "cuda", micro_steps=micro_steps,
                                   momentum_warmup=s.muon_momentum_warmup)
    Trainer(start.model, recipe, schedule, chat_stage.run("mid", "snakechat.mid_train", s, start), device).train()
    cleanup_distributed()


if __name__ == "__main__":
    main()
