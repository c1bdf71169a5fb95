"""Bits per byte: a loss that does not depend on the tokenizer, so models with different
vocabularies (and stages on different data) can be compared. Used by base_loss and by the
validation of base, mid and SFT training."""

import math

import torch

from snakechat.runtime.common import all_reduce


@torch.no_grad()
def bits_per_byte(model, loader, steps, token_bytes):
    """Bits per byte of `model` over `steps` micro-batches of `loader`, summed over all processes.

    Summed cross-entropy (in bits) of the predicted tokens / summed byte length of those tokens;
    ignored targets (-1) and special tokens (0 bytes) are left out of both.
    """
    nats, nbytes = 0.0, 0
    token_bytes = token_bytes.to(next(model.parameters()).device)
    for _ in range(steps):
        inputs, targets = loader.next_batch()
        loss = model(inputs, targets, loss_reduction="none")
        lengths = torch.where(targets >= 0, token_bytes[targets.clamp(min=0)], 0)
        nats += (loss.double() * (lengths > 0)).sum().item()
        nbytes += lengths.sum().item()
    nats, nbytes = all_reduce([nats, nbytes])
    return nats / (math.log(2) * nbytes)
