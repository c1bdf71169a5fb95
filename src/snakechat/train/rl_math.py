"""The arithmetic of on-policy RL with group baselines: advantages, pass@k, the policy-gradient loss.

Kept apart from the stage so it can be checked by hand.
"""

from math import comb

import torch

from snakechat.train.chat_batches import IGNORE


def group_advantages(rewards):
    """Reward minus the mean reward of its prompt's group. rewards: (prompts, samples)."""
    return rewards - rewards.mean(dim=-1, keepdim=True)


def pass_at_k(n, correct, k):
    """Chance that at least one of k samples drawn without replacement from n (correct of them right) is right."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 - comb(n - correct, k) / comb(n, k)


def sample_rows(sequences, masks, pad_id):
    """Inputs and targets for sampled sequences (prompt + completion): targets only on sampled tokens.

    masks: per token, 1 where the model sampled it, 0 where the prompt or a forced tool output put
    it (as the engine's generate_batch returns them).
    """
    width = max(len(s) for s in sequences) - 1
    x = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    y = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    for i, (seq, mask) in enumerate(zip(sequences, masks)):
        seq_t = torch.tensor(seq, dtype=torch.long)
        keep = torch.tensor(mask, dtype=torch.bool)
        x[i, :len(seq) - 1] = seq_t[:-1]
        y[i, :len(seq) - 1] = torch.where(keep[1:], seq_t[1:], torch.full_like(seq_t[1:], IGNORE))
    return x, y


def policy_gradient_loss(model, x, y, advantages, passes):
    """-(sum over the pass's sampled tokens of advantage x log-prob) / (its sampled tokens x passes).

    Its gradient raises the log-probability of tokens in better-than-average samples and lowers it
    in worse ones. As nanochat b399e43's chat_rl, each forward/backward pass is a per-token mean
    of its own, and the step's `passes` (on this process) weigh equally, whatever their token counts.
    """
    logp = -model(x, targets=y, loss_reduction="none")  # (B, T); ignored targets give 0
    sampled = (y >= 0).sum().clamp(min=1)
    return -(logp * advantages[:, None].to(logp.dtype)).sum() / (sampled * passes)
