"""Reinforcement learning on GSM8K-form problems: sample a group of answers per problem, reward
the correct ones, and push the policy towards the better-than-average samples.

    python -m snakechat.chat_rl --start results/sft/tiny --chat-data results/chat_data/tinyworld \\
        --state results/state/rl/tiny --out results/rl/tiny --tasks '["word_problems"]' [--num-samples 8 ...]
    torchrun --nproc_per_node=8 -m snakechat.chat_rl --start results/sft/d20 ...

Needs the SFT checkpoint and a chat data directory whose `--tasks` are of kind gsm8k (a
question and an answer ending in `#### N`).

Each step takes `--step-prompts` training problems (split over the processes), samples
`--num-samples` completions of each with the engine (calculator tool calls allowed; the tool's
output tokens are not trained on), rewards 1 for the right final answer and 0 otherwise (the check
chat_eval scores with, `tasks.gsm8k_correct`), and uses reward minus the group's mean reward as
the advantage of every sampled token: a simple on-policy policy gradient with a group baseline,
with no ratio clipping or KL term. As nanochat b399e43, each forward/backward pass's loss is a
per-token mean over its own sampled tokens, divided by the process's number of passes, and the
processes are averaged; the lr × 1 - s/N at step s of N. The samples
go through the model `--device-batch-rows` rows at a time. Before the first step, every
`--eval-every` steps and after the last, the held-out test problems give pass@1 and pass@k (in
meta.json under "evals"); train_log.csv adds the mean reward and pass@k of each step's groups.
The loop, resumable state under `--state` (a resumed run gives the same weights, bit for bit),
signals and the checkpoint in `--out` (model.pt, meta.json, train_log.csv) are snakechat.train.trainer's.
"""

import random
from dataclasses import dataclass

import torch

from snakechat.train import chat_stage
from snakechat.train import rl_math
from snakechat.evaluate import tasks
from snakechat.runtime.common import all_reduce, cleanup_distributed, init_distributed, print0
from snakechat.model.conversation import render_for_completion
from snakechat.model.engine import Engine
from snakechat.runtime.settings import json_arg, option, parse
from snakechat.train.trainer import Recipe, Step, Trainer


@dataclass(kw_only=True)
class RLSettings(chat_stage.ChatSettings):
    tasks: list = option(["gsm8k"], "JSON list of gsm8k-kind tasks", parse=json_arg)
    epochs: int = option(1, "passes over the training problems (when --steps is 0)")
    steps: int = option(0, "optimizer steps; 0: from --epochs")
    step_prompts: int = option(16, "prompts (problems) per optimizer step, all processes")
    num_samples: int = option(16, "completions sampled per prompt")
    device_batch_rows: int = option(8, "rows (sampled sequences) per process per forward/backward pass")
    max_new_tokens: int = option(256, "tokens sampled per completion at most")
    temperature: float = option(1.0, "sampling temperature")
    top_k: int = option(50, "0: no top-k filter")
    pass_k: int = option(8, "k of the logged pass@k (at most --num-samples)")
    lr_mult: float = option(0.05, "multiplier on the base model's learning rates")
    warmdown_frac: float = option(1.0, "last fraction of steps over which the lr decays linearly to 0")
    eval_every: int = option(60, "steps between held-out pass@k (0: first and last only)", identity=False)
    eval_prompts: int = option(400, "held-out prompts (problems) per evaluation", identity=False)
    save_every: int = option(60, "steps between resumable states (0: only at the end and on signals)", identity=False)

    def __post_init__(self):
        super().__post_init__()
        if self.pass_k > self.num_samples:
            raise ValueError(f"--pass-k {self.pass_k} exceeds --num-samples {self.num_samples}")


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

    def __init__(self, model, tok, s):
        self.engine, self.tok, self.s = Engine(model, tok, precision=s.precision), tok, s

    def groups(self, problems, num_samples, seed):
        """Per problem: (sequences = prompt + completion, masks = 1 on sampled tokens, rewards)."""
        prompts = [render_for_completion(self.tok, conversation) for conversation, _ in problems]
        rows = self.engine.generate_many([p for p in prompts for _ in range(num_samples)], max_tokens=self.s.max_new_tokens,
                                         temperature=self.s.temperature, top_k=self.s.top_k or None, seed=seed)
        out = []
        for i, (prompt, (_, gold)) in enumerate(zip(prompts, problems)):
            group = rows[i * num_samples:(i + 1) * num_samples]
            sequences = [prompt + tokens for tokens, _ in group]
            masks = [[0] * len(prompt) + list(m) for _, m in group]
            rewards = [float(tasks.gsm8k_correct(self.tok.decode(tokens), gold)) for tokens, _ in group]
            out.append((sequences, masks, rewards))
        return out


class RolloutRecipe(Recipe):
    """A step's batches are this process's share of the step's problems, sampled and rewarded;
    the loss is the policy gradient over the sampled tokens (snakechat.train.rl_math). The position is
    the step itself: a step's problems and sampling seeds are functions of its number."""

    log_columns = ("reward", "pass_at_k")
    evaluates_first = True  # the held-out score of the SFT model RL starts from

    def __init__(self, model, tok, s, train_problems, test_problems, rank, world_size):
        self.model, self.tok, self.s, self.sampler = model, tok, s, Sampler(model, tok, s)
        self.train_problems, self.test_problems, self.rank, self.world_size = train_problems, test_problems, rank, world_size
        self.flops_per_token, self.passes = model.flops_per_token(), 1

    def my_problems(self, step):
        """This process's share of the step's problems: a seeded order per pass over the problems."""
        per_rank = self.s.step_prompts // self.world_size
        first = step * self.s.step_prompts + self.rank * per_rank
        picked = []
        for g in range(first, first + per_rank):
            epoch, i = divmod(g, len(self.train_problems))
            order = list(range(len(self.train_problems)))
            random.Random(self.s.seed * 100_003 + epoch).shuffle(order)
            picked.append((g, self.train_problems[order[i]]))
        return picked

    def step(self, step):
        s = self.s
        self.model.eval()
        sequences, masks, rewards, pass_ks = [], [], [], []
        picked = self.my_problems(step)
        for seqs, msks, rws in self.sampler.groups([problem for _, problem in picked], s.num_samples, seed=s.seed * 1_000_003 + picked[0][0]):
            sequences, masks = sequences + seqs, masks + msks
            rewards.append(rws)
            pass_ks.append(rl_math.pass_at_k(s.num_samples, int(sum(rws)), s.pass_k))
        advantages = rl_math.group_advantages(torch.tensor(rewards)).flatten()
        sampled, trained, reward_sum, pass_sum, groups = all_reduce(
            [sum(map(sum, masks)), sum(map(len, sequences)), sum(map(sum, rewards)), sum(pass_ks), len(rewards)])
        batches, device = [], next(self.model.parameters()).device
        for i in range(0, len(sequences), s.device_batch_rows):
            x, y = rl_math.sample_rows(sequences[i:i + s.device_batch_rows], masks[i:i + s.device_batch_rows], self.tok.bos_id)
            batches.append((x.to(device), y.to(device), advantages[i:i + s.device_batch_rows].to(device)))
        self.passes = len(batches)  # each pass a per-token mean, the passes weighed equally (b399e43's chat_rl)
        log = {"reward": f"{reward_sum / (groups * s.num_samples):.4f}", "pass_at_k": f"{pass_sum / groups:.4f}"}
        return Step(batches, int(sampled), int(self.flops_per_token * trained), log)

    def loss(self, model, batch):
        x, y, advantages = batch
        return rl_math.policy_gradient_loss(model, x, y, advantages, self.passes)  # DDP averages the processes, as b399e43's optimizers do

    def evaluate(self, model):
        """pass@1 and pass@k on held-out problems (this process takes every world_size-th one)."""
        s, k = self.s, self.s.pass_k
        mine = list(range(self.rank, min(s.eval_prompts, len(self.test_problems)), self.world_size))
        per_call = max(1, s.step_prompts * s.num_samples // (self.world_size * k))  # as many rows as a training step samples
        sums = [0.0, 0.0, 0.0]
        for first in range(0, len(mine), per_call):
            chunk = mine[first:first + per_call]
            for _, _, rewards in self.sampler.groups([self.test_problems[i] for i in chunk], k, seed=s.seed * 7919 + chunk[0]):
                sums = [sums[0] + sum(rewards) / k, sums[1] + rl_math.pass_at_k(k, int(sum(rewards)), k), sums[2] + 1]
        pass1, passk, count = all_reduce(sums)
        return {"pass_at_1": pass1 / count, f"pass_at_{k}": passk / count, "n": int(count)}

    def meta(self):
        return {"train_problems": len(self.train_problems)}


def main(argv=None):
    s = parse(RLSettings, argv, __doc__)
    for split in ("train", "test"):
        chat_stage.check_chat_data(s.chat_data, s.tasks, split, kinds=("gsm8k",))
    rank, _, world_size, device = init_distributed(s.device)
    if s.step_prompts % world_size:
        raise SystemExit(f"--step-prompts {s.step_prompts} must be a multiple of the {world_size} processes")
    start = chat_stage.load_start(s.start, device)
    train_problems = load_problems(s.chat_data, s.tasks, "train")
    test_problems = load_problems(s.chat_data, s.tasks, "test")
    random.Random(s.seed).shuffle(test_problems)
    steps = s.steps or max(1, s.epochs * len(train_problems) // s.step_prompts)
    print0(f"RL: {len(train_problems):,} training problems, {len(test_problems):,} held out; {steps} steps of "
           f"{s.step_prompts} problems x {s.num_samples} samples")

    recipe = RolloutRecipe(start.model, start.tok, s, train_problems, test_problems, rank, world_size)
    Trainer(start.model, recipe, chat_stage.schedule(s, start, steps, "linear"), chat_stage.run("rl", "snakechat.chat_rl", s, start), device).train()
    cleanup_distributed()


if __name__ == "__main__":
    main()
