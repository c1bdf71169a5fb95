"""Reinforcement learning on GSM8K-form problems: sample a group of answers per problem, reward
the correct ones, and push the policy towards the better-than-average samples.

    python -m snakechat.chat_rl --start results/sft/tiny --chat-data results/chat_data/tinyworld \
        --state results/state/rl/tiny --out results/rl/tiny --tasks '["word_problems"]' [--num-samples 8 ...]
    torchrun --nproc_per_node=8 -m snakechat.chat_rl --start results/sft/d20 ...

Needs the SFT checkpoint and a chat data directory whose `--tasks` are of kind gsm8k (a
question and an answer ending in `#### N`).

Each step takes `--step-prompts` training problems (split over the processes), samples
`--num-samples` completions of each with the engine (calculator tool calls allowed; the tool's
output tokens are not trained on), rewards 1 for the right final answer and 0 otherwise (the check
chat_eval scores with, `tasks.gsm8k_correct`), and uses reward minus the group's mean reward as
the advantage of every sampled token: a simple on-policy policy gradient with a group baseline,
with no ratio clipping or KL term. The optimizers, schedule, resumable state, signals and log
format are the shared training loop's; train_log.csv adds the mean reward and pass@k of the
step's groups. Every `--eval-every` steps (and at the first and last) the held-out test problems
give pass@1 and pass@k, kept in meta.json.

Writes `--out` (model.pt, meta.json, train_log.csv); resumable state under `--state`.
"""

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from snakechat import chat_stage, rl_math, tasks
from snakechat.common import all_reduce, cleanup_distributed, init_distributed, print0
from snakechat.conversation import render_for_completion
from snakechat.engine import Engine
from snakechat.checkpoint import load_model
from snakechat.precision import autocast
from snakechat.train_loop import (LOG_COLUMNS, StateStore, StopSignals, TrainConfig, TrainLog, build_optimizers,
                                  lr_multiplier, restore, rng_state, set_lr)

RL_COLUMNS = LOG_COLUMNS + ["reward", "pass_at_k"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", required=True, help="SFT checkpoint directory")
    p.add_argument("--chat-data", required=True, help="chat data directory (tasks.json)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--state", required=True, help="resumable state directory (not a Snakemake output)")
    p.add_argument("--tasks", type=chat_stage.json_arg, default=["gsm8k"], help="JSON list of gsm8k-kind tasks")
    p.add_argument("--epochs", type=int, default=1, help="passes over the training problems (when --steps is 0)")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps; 0: from --epochs")
    p.add_argument("--step-prompts", type=int, default=16, help="prompts (problems) per optimizer step, all processes")
    p.add_argument("--num-samples", type=int, default=16, help="completions sampled per problem")
    p.add_argument("--device-batch-rows", type=int, default=8, help="rows (sampled sequences) per process per forward/backward pass")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50, help="0: no top-k filter")
    p.add_argument("--pass-k", type=int, default=8, help="k of the logged pass@k (at most --num-samples)")
    p.add_argument("--lr-mult", type=float, default=0.05, help="multiplier on the base model's learning rates")
    p.add_argument("--warmdown-frac", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--eval-every", type=int, default=60, help="steps between held-out pass@k (0: first and last only)")
    p.add_argument("--eval-prompts", type=int, default=400, help="held-out prompts (problems) per evaluation")
    p.add_argument("--save-every", type=int, default=60, help="steps between resumable states (0: only at the end and on signals)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    p.add_argument("--log-every", type=int, default=1, help="steps between progress lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = p.parse_args(argv)
    if args.pass_k > args.num_samples:
        p.error(f"--pass-k {args.pass_k} exceeds --num-samples {args.num_samples}")
    return args


def load_problems(chat_dir, task_names, split):
    """(question conversation, gold answer) for every problem of the tasks' split."""
    problems = []
    for name in task_names:
        kind, records = tasks.load_split(chat_dir, name, split)
        problems += [(tasks.to_conversation(r, kind), tasks.gsm8k_gold(r["answer"])) for r in records]
    return problems


class Sampler:
    """Groups of completions for problems, with their rewards (1 for the right final answer).

    All samples of a batch of problems are drawn together in one engine batch.
    """

    def __init__(self, model, tok, args):
        self.engine, self.tok, self.args = Engine(model, tok), tok, args

    def groups(self, problems, num_samples, seed):
        """Per problem: (sequences = prompt + completion, masks = 1 on sampled tokens, rewards)."""
        prompts = [render_for_completion(self.tok, conversation) for conversation, _ in problems]
        rows = self.engine.generate_many([p for p in prompts for _ in range(num_samples)], max_tokens=self.args.max_new_tokens,
                                         temperature=self.args.temperature, top_k=self.args.top_k or None, seed=seed)
        out = []
        for i, (prompt, (_, gold)) in enumerate(zip(prompts, problems)):
            group = rows[i * num_samples:(i + 1) * num_samples]
            sequences = [prompt + tokens for tokens, _ in group]
            masks = [[0] * len(prompt) + list(m) for _, m in group]
            rewards = [float(tasks.gsm8k_correct(self.tok.decode(tokens), gold)) for tokens, _ in group]
            out.append((sequences, masks, rewards))
        return out


def evaluate(sampler, problems, args, rank, world_size, device):
    """pass@1 and pass@k on held-out problems (this process takes every world_size-th one)."""
    k = args.pass_k
    mine = list(range(rank, min(args.eval_prompts, len(problems)), world_size))
    per_call = max(1, args.step_prompts * args.num_samples // (world_size * k))  # as many rows as a training step samples
    sums = [0.0, 0.0, 0.0]
    for start in range(0, len(mine), per_call):
        chunk = mine[start:start + per_call]
        for _, _, rewards in sampler.groups([problems[i] for i in chunk], k, seed=args.seed * 7919 + chunk[0]):
            sums = [sums[0] + sum(rewards) / k, sums[1] + rl_math.pass_at_k(k, int(sum(rewards)), k), sums[2] + 1]
    pass1, passk, count = all_reduce(sums)
    return {"pass_at_1": pass1 / count, f"pass_at_{k}": passk / count, "n": int(count)}


def step_problems(problems, step, args, rank, world_size, seed):
    """This process's share of the step's problems: a seeded order per pass over the problems."""
    per_rank = args.step_prompts // world_size
    first = step * args.step_prompts + rank * per_rank
    picked = []
    for g in range(first, first + per_rank):
        epoch, i = divmod(g, len(problems))
        order = list(range(len(problems)))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        picked.append((g, problems[order[i]]))
    return picked


def main(argv=None):
    args = parse_args(argv)
    for split in ("train", "test"):
        chat_stage.check_chat_data(args.chat_data, args.tasks, split, kinds=("gsm8k",))
    rank, _, world_size, device = init_distributed(args.device)
    if args.step_prompts % world_size:
        raise SystemExit(f"--step-prompts {args.step_prompts} must be a multiple of the {world_size} processes")
    model, tok, start_meta = load_model(args.start, device)
    lrs = chat_stage.base_lrs(start_meta, args.start)
    train_problems = load_problems(args.chat_data, args.tasks, "train")
    test_problems = load_problems(args.chat_data, args.tasks, "test")
    random.Random(args.seed).shuffle(test_problems)
    steps = args.steps if args.steps > 0 else max(1, args.epochs * len(train_problems) // args.step_prompts)
    cfg = TrainConfig(
        num_iterations=steps, total_batch_size=args.step_prompts * args.num_samples, device_batch_size=args.device_batch_rows,
        sequence_len=model.config.sequence_len, matrix_lr=lrs["matrix_lr"] * args.lr_mult, embedding_lr=lrs["embedding_lr"] * args.lr_mult,
        unembedding_lr=lrs["unembedding_lr"] * args.lr_mult, weight_decay=args.weight_decay,
        warmup_ratio=0.0, warmdown_ratio=args.warmdown_frac, final_lr_frac=0.0,
        grad_clip=args.grad_clip, eval_every=args.eval_every, save_every=args.save_every, log_every=args.log_every, seed=args.seed,
    )
    print0(f"RL: {len(train_problems):,} training problems, {len(test_problems):,} held out; {steps} steps of "
           f"{args.step_prompts} problems x {args.num_samples} samples")

    settings = {**{k: v for k, v in vars(args).items() if k not in ("out", "state")}, "world_size": world_size}
    state_dir = chat_stage.run_state_dir(args.state, settings, args.start)
    optimizers = build_optimizers(model, cfg)
    store, log = StateStore(state_dir), TrainLog(Path(state_dir) / "train_log.csv", RL_COLUMNS)
    identity = {"train": cfg.identity(), "model": model.config.to_dict(), "world_size": world_size}
    step, tokens, flops, elapsed, evals, resumed_from = 0, 0, 0, 0.0, [], None
    found = store.load_latest()
    if found:
        path, state = found
        restore(state, path, identity, model, optimizers, device)
        step, tokens, flops, elapsed, evals = (state[k] for k in ("step", "tokens", "flops", "elapsed_s", "evals"))
        resumed_from = str(path)
    else:
        torch.manual_seed(args.seed)
    if rank == 0:
        log.start(step)

    def save_state():
        if rank == 0:
            state = {"step": step, "tokens": tokens, "flops": flops, "elapsed_s": elapsed, "evals": evals, "model": model.state_dict(),
                     "optimizers": [o.state_dict() for o in optimizers], "rng": rng_state(device), "identity": identity}
            print0(f"saved training state {store.save(state)}")
        if dist.is_initialized():
            dist.barrier()

    def run_eval():
        model.eval()
        result = {"step": step, **evaluate(sampler, test_problems, args, rank, world_size, device)}
        evals.append(result)
        print0("held-out: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))

    sampler = Sampler(model, tok, args)
    signals = StopSignals()
    flops_per_token = model.flops_per_token()
    if step == 0:
        run_eval()
    while step < steps:
        t0 = time.perf_counter()
        mult = lr_multiplier(step, cfg)
        set_lr(optimizers, mult)
        model.eval()
        sequences, masks, rewards, passes = [], [], [], []
        picked = step_problems(train_problems, step, args, rank, world_size, args.seed)
        for seqs, msks, rws in sampler.groups([problem for _, problem in picked], args.num_samples, seed=args.seed * 1_000_003 + picked[0][0]):
            sequences += seqs
            masks += msks
            rewards.append(rws)
            passes.append(rl_math.pass_at_k(args.num_samples, int(sum(rws)), args.pass_k))
        advantages = rl_math.group_advantages(torch.tensor(rewards)).flatten()
        sampled, trained = sum(sum(m) for m in masks), sum(len(s) for s in sequences)
        sampled_all, trained_all, reward_sum, pass_sum, groups = all_reduce(
            [sampled, trained, float(sum(map(sum, rewards))), sum(passes), len(rewards)])

        model.train()
        loss_sum = 0.0
        for i in range(0, len(sequences), args.device_batch_rows):
            x, y = rl_math.sample_rows(sequences[i:i + args.device_batch_rows], masks[i:i + args.device_batch_rows], tok.bos_id)
            with autocast(device):
                loss = rl_math.policy_gradient_loss(model, x.to(device), y.to(device), advantages[i:i + args.device_batch_rows].to(device), max(sampled_all, 1))
            loss.backward()
            loss_sum += loss.item()
        if dist.is_initialized():
            for p in model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)  # the loss is already normalized by the step's tokens on all processes
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)

        dt = time.perf_counter() - t0
        step += 1
        tokens += int(sampled_all)
        flops += int(flops_per_token * trained_all)
        elapsed += dt
        reward, pass_k = reward_sum / (groups * args.num_samples), pass_sum / groups
        loss_all = all_reduce([loss_sum])[0]
        if rank == 0:
            log.write(dict(step=step, tokens=tokens, flops=flops, loss=f"{loss_all:.6f}", lr_mult=f"{mult:.6f}", tokens_per_s=f"{sampled_all / dt:.1f}",
                           mfu=None, elapsed_s=f"{elapsed:.3f}", val_bpb=None, reward=f"{reward:.4f}", pass_at_k=f"{pass_k:.4f}"))
        print0(f"step {step:5d}/{steps} | reward {reward:.3f} | pass@{args.pass_k} {pass_k:.3f} | pg loss {loss_all:+.5f} | "
               f"lr× {mult:.3f} | {sampled_all / dt:,.0f} sampled tok/s | {elapsed:.1f}s")
        if step == steps or (args.eval_every and step % args.eval_every == 0):
            run_eval()
        signum = signals.received(device)
        if signum or step == steps or (args.save_every and step % args.save_every == 0):
            save_state()
        if signum:
            print0(f"stopping after step {step} on signal {signum}; re-run to resume")
            sys.exit(128 + signum)

    if rank == 0:
        summary = {"step": step, "tokens": tokens, "flops": flops, "elapsed_s": elapsed, "world_size": world_size,
                   "log_path": str(log.path), "resumed_from": resumed_from}
        meta = chat_stage.checkpoint_meta("snakechat.chat_rl", args, model, start_meta, lrs, summary, device, {
            "stage": "rl", "schedule": cfg.identity(), "train_problems": len(train_problems), "evals": evals,
        })
        chat_stage.finish(args.out, model, meta, summary, args.state)
    cleanup_distributed()


if __name__ == "__main__":
    main()
