"""Batches for the chat stages, built from rendered conversations.

Mid-training packs conversations back to back into fixed rows, as pretraining packs documents,
and trains on every token. SFT keeps one conversation per row, pads the rows of a batch to the
longest one and trains only on assistant tokens.

Both are pure functions of (rendered conversations, step, rank), so a resumed run only needs the
step number to continue with exactly the batches an uninterrupted run would have seen.
"""

import array

import torch

IGNORE = -1  # target id the model's loss skips


def rank_share(items, rank, world_size):
    """The items a rank trains on: every world_size-th one, starting at its rank."""
    return items[rank::world_size]


def render_all(tok, conversations, max_tokens):
    """Render conversations to (ids, mask) pairs of at most max_tokens tokens each.

    Conversations with no assistant token left inside the window are dropped: they would give a
    row with nothing to learn from.
    """
    from snakechat.conversation import render_conversation

    rendered = []
    for conv in conversations:
        ids, mask = render_conversation(tok, conv, max_tokens=max_tokens)
        ids, mask = list(ids)[:max_tokens], list(mask)[:max_tokens]
        if any(mask[1:]):
            rendered.append((ids, mask))
    return rendered


class PackedStream:
    """Mid-training rows: a rank's conversations concatenated into one token stream, cut into rows.

    Micro-batch k is the window of B*T+1 tokens starting at k*B*T (wrapping around for more than
    one pass), shifted by one for the targets. Every token is trained on, as in pretraining.
    """

    def __init__(self, rendered, batch_size, seq_len):
        buf = array.array("i")
        for ids, _ in rendered:
            buf.extend(ids)
        self.tokens = torch.frombuffer(buf, dtype=torch.int32).clone() if len(buf) else torch.zeros(0, dtype=torch.int32)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rows_per_batch = batch_size * seq_len
        if len(self.tokens) < self.rows_per_batch + 1:
            raise ValueError(f"the chat mixture gives only {len(self.tokens)} tokens per rank, fewer than one batch of {batch_size}x{seq_len}+1")

    def micro_batches_per_pass(self):
        """Micro-batches in one pass over the stream without wrapping."""
        return (len(self.tokens) - 1) // self.rows_per_batch

    def micro_batch(self, k, device="cpu"):
        n = len(self.tokens) - 1
        start = (k * self.rows_per_batch) % n
        idx = (torch.arange(self.rows_per_batch + 1) + start) % len(self.tokens)
        window = self.tokens[idx].long()
        x = window[:-1].view(self.batch_size, self.seq_len)
        y = window[1:].view(self.batch_size, self.seq_len)
        return x.to(device), y.to(device)


def pad_rows(rows, pad_id):
    """Inputs and targets for a list of (ids, mask) rows, padded to the longest row.

    Targets are the next token where that token is an assistant token (mask 1), else IGNORE;
    padding is never a target.
    """
    width = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (ids, mask) in enumerate(rows):
        ids_t = torch.tensor(ids, dtype=torch.long)
        mask_t = torch.tensor(mask, dtype=torch.bool)
        n = len(ids) - 1
        x[i, :n] = ids_t[:-1]
        y[i, :n] = torch.where(mask_t[1:], ids_t[1:], torch.full_like(ids_t[1:], IGNORE))
    return x, y


class ConversationRows:
    """SFT rows: one conversation per row, reshuffled every pass, padded per micro-batch."""

    def __init__(self, rendered, batch_size, pad_id, seed):
        if len(rendered) < batch_size:
            raise ValueError(f"the chat mixture gives only {len(rendered)} conversations per rank, fewer than one batch of {batch_size}")
        self.rendered, self.batch_size, self.pad_id, self.seed = rendered, batch_size, pad_id, seed
        self._orders = {}

    def micro_batches_per_pass(self):
        return len(self.rendered) // self.batch_size

    def _order(self, epoch):
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._orders = {epoch: torch.randperm(len(self.rendered), generator=g).tolist()}
        return self._orders[epoch]

    def micro_batch(self, k, device="cpu"):
        per_pass = self.micro_batches_per_pass()
        epoch, i = divmod(k, per_pass)
        order = self._order(epoch)
        rows = [self.rendered[j] for j in order[i * self.batch_size:(i + 1) * self.batch_size]]
        x, y = pad_rows(rows, self.pad_id)
        return x.to(device), y.to(device)
