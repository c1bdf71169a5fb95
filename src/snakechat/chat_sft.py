"""Supervised fine-tuning: one conversation per row, padded, loss on the assistant's tokens only.

    python -m snakechat.chat_sft --start results/mid/tiny --chat-data results/chat_data/tinyworld \\
        --state results/state/sft/tiny --out results/sft/tiny \\
        --mixture '{"world_chat": {"weight": 800}, "world_mc": {"epochs": 1}}' [--epochs 1 ...]
    torchrun --nproc_per_node=8 -m snakechat.chat_sft --start results/mid/d20 ...

Needs the mid checkpoint (or the base one where mid is skipped) as `--start`, and a chat data
directory. A step takes `--step-conversations` conversations (all processes together), each its
own row cut to `--sequence-len`, padded to the longest row of its micro-batch; only assistant
tokens (tool calls included, tool outputs not) are targets. The learning rates are the base
model's times `--lr-mult`, decaying linearly to 0 over the last `--warmdown-frac` of the steps.
As nanochat b399e43, a horizon of N steps (`--steps`, or a pass over the mixture times `--epochs`)
trains N-1 optimizer steps, the lr × 1 - s/N at step s (a nanochat-2026-07 model trains all N).
Validation bits per byte over the assistant tokens of the mixture tasks' test splits.

A nanochat-2026-07 model trains as that recipe's SFT (§6.5): it starts from the base checkpoint
(the config disables mid), continues the base run's optimizer state (its optimizer.pt) with every
group's lr reset to the base run's unscaled lr × `--lr-mult` (the recipe's init_lr_frac, 0.8), the
lr multiplier 1 until 1 − `--warmdown-frac` (0.5) of the conversations and then linear to 0, Muon's
momentum 0.85 → 0.95 over 300 steps and its weight decay as the base run left it (`--weight-decay`
does not apply), clipping per `--grad-clip` (the recipe: 0).

The tokens column of train_log.csv counts rows × sequence_len per step (an upper bound: rows are
padded only to their micro-batch's longest conversation). The loop, resumable state under
`--state`, signals and the checkpoint in `--out` (model.pt, meta.json, train_log.csv) are
snakechat.train.trainer's.
"""

from dataclasses import dataclass

from snakechat.model import recipes
from snakechat.train import chat_stage
from snakechat.train.schedules2026 import SFTSchedule2026, warm_start
from snakechat.evaluate import tasks
from snakechat.evaluate.bpb import bits_per_byte
from snakechat.train.chat_batches import ConversationLoader
from snakechat.runtime.common import cleanup_distributed, init_distributed, print0
from snakechat.runtime.settings import json_arg, option, parse
from snakechat.model.tokenizer import load_token_bytes
from snakechat.train.trainer import TokenRecipe, Trainer


@dataclass(kw_only=True)
class SFTSettings(chat_stage.ChatSettings):
    mixture: dict = option(help='JSON: task -> {"weight": n} or {"epochs": e}', parse=json_arg)
    epochs: int = option(1, "passes over the mixture (when --steps is 0)")
    steps: int = option(0, "the lr horizon N (0: from --epochs): N-1 optimizer steps at lr × (1 - s/N), as nanochat b399e43")
    device_batch_rows: int = option(4, "rows (one conversation each) per process per forward/backward pass")
    step_conversations: int = option(32, "conversations per optimizer step, all processes")
    sequence_len: int = option(2048, "tokens kept of each conversation (capped at the model's sequence length)")
    lr_mult: float = option(0.02, "multiplier on the base model's learning rates")
    warmdown_frac: float = option(1.0, "last fraction of steps over which the lr decays linearly to 0")
    eval_every: int = option(100, "steps between validation bpb (0: only at the end)", identity=False)
    eval_conversations: int = option(1024, "test conversations the validation reads", identity=False)
    save_every: int = option(200, "steps between resumable states (0: only at the end)", identity=False)


def main(argv=None):
    s = parse(SFTSettings, argv, __doc__)
    chat_stage.check_chat_data(s.chat_data, list(s.mixture), "train")
    rank, _, world_size, device = init_distributed(s.device)
    start = chat_stage.load_start(s.start, device)
    sequence_len = min(s.sequence_len, start.model.config.sequence_len)

    conversations = tasks.mixture(s.chat_data, s.mixture, "train", s.seed)
    loader = ConversationLoader(start.tok, conversations, s.device_batch_rows, s.step_conversations, sequence_len, s.seed, rank, world_size, device)
    horizon = s.steps or max(1, s.epochs * loader.steps_per_pass())
    nanochat_2026 = recipes.recipe_of_model(start.model) == recipes.NANOCHAT_2026
    steps = horizon if nanochat_2026 else max(1, horizon - 1)  # b399e43 stops one step short of its horizon; the 2026 SFT runs it all
    print0(f"SFT: {len(conversations):,} conversations, {loader.steps_per_pass()} steps per pass, horizon {horizon}: "
           f"{steps} steps of {s.step_conversations} conversations")

    val_conversations = chat_stage.validation_conversations(s.chat_data, s.mixture, s.seed)
    validate = None
    if val_conversations:
        token_bytes = load_token_bytes(start.meta["tokenizer"])
        per_pass = s.device_batch_rows * world_size
        val_micro_batches = max(1, min(s.eval_conversations, len(val_conversations)) // per_pass)

        def validate(model):
            val_loader = ConversationLoader(start.tok, val_conversations, s.device_batch_rows, per_pass, sequence_len, s.seed, rank, world_size, device)
            return bits_per_byte(model, val_loader, val_micro_batches, token_bytes)

    step_tokens = s.step_conversations * sequence_len
    recipe = TokenRecipe(loader, loader.micro_steps, step_tokens, start.model.flops_per_token(), validate, meta={"conversations": len(conversations)})
    run = chat_stage.run("sft", "snakechat.chat_sft", s, start)
    if nanochat_2026:
        optimizer_state = chat_stage.load_optimizer_state(start)
        schedule = SFTSchedule2026(steps=steps, **start.lrs, warmdown_frac=s.warmdown_frac, grad_clip=s.grad_clip, eval_every=s.eval_every,
                                   save_every=s.save_every, log_every=s.log_every, seed=s.seed)
        trainer = Trainer(start.model, recipe, schedule, run, device)
        for optimizer, state in zip(trainer.optimizers, optimizer_state, strict=True):
            warm_start(optimizer, state, s.lr_mult)
    else:
        trainer = Trainer(start.model, recipe, chat_stage.schedule(s, start, steps, "linear", horizon=horizon), run, device)
    trainer.train()
    cleanup_distributed()


if __name__ == "__main__":
    main()
