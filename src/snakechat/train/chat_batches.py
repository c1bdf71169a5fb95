"""Batches for the chat stages, built from rendered conversations.

Mid-training packs conversations back to back into fixed rows, as pretraining packs documents,
and trains on every token. SFT keeps one conversation per row, pads the rows of a micro-batch
to the longest one and trains only on assistant tokens.

Both loaders have the pretraining loader's interface (`next_batch()`, `state_dict()`,
`load_state_dict()`), so the shared training loop drives them alike. Micro-batch k is a pure
function of k, so the position is one number and a resumed run sees exactly the batches an
uninterrupted run would have seen.
"""

import array

import torch

IGNORE = -1  # target id the model's loss skips


def render(tok, conversation, max_tokens):
    """(ids, mask) of a conversation cut to max_tokens, or None when no assistant token is left
    to learn from (its row would carry no loss)."""
    from snakechat.model.conversation import render_conversation

    ids, mask = render_conversation(tok, conversation, max_tokens=max_tokens)
    ids, mask = list(ids)[:max_tokens], list(mask)[:max_tokens]
    return (ids, mask) if any(mask[1:]) else None


class _Counted:
    """The position bookkeeping both loaders share: micro-batch k, next_batch() = micro_batch(k++)."""

    kind = None
    k = 0

    def next_batch(self):
        batch = self.micro_batch(self.k)
        self.k += 1
        return batch

    def state_dict(self):
        return {"kind": self.kind, "micro": self.k, "fingerprint": self.fingerprint}

    def load_state_dict(self, state):
        if state.get("kind") != self.kind or state.get("fingerprint") != self.fingerprint:
            raise ValueError(f"loader state {state.get('kind')}/{state.get('fingerprint')} belongs to another data or batch setup than this run's {self.kind}/{self.fingerprint}")
        self.k = state["micro"]

    def _to(self, x, y):
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)


class PackedChatLoader(_Counted):
    """Mid-training rows: this rank's conversations rendered back to back into one token stream.

    Micro-batch k is the window of B*T+1 tokens starting at k*B*T (wrapping round for more than
    one pass), shifted by one for the targets. Every token is trained on, as in pretraining.
    """

    kind = "packed_chat"

    def __init__(self, rendered, device_batch_rows, sequence_len, device="cpu"):
        buf = array.array("i")
        for ids, _ in rendered:
            buf.extend(ids)
        self.tokens = torch.frombuffer(buf, dtype=torch.int32).clone() if len(buf) else torch.zeros(0, dtype=torch.int32)
        self.device_batch_rows, self.sequence_len = device_batch_rows, sequence_len
        self.window = device_batch_rows * sequence_len
        self.device = torch.device(device)
        if len(self.tokens) < self.window + 1:
            raise ValueError(f"the chat mixture gives only {len(self.tokens)} tokens per process, fewer than one micro-batch of {device_batch_rows}x{sequence_len}+1")
        self.fingerprint = [len(self.tokens), device_batch_rows, sequence_len]
        self.k = 0

    def micro_batches_per_pass(self):
        return (len(self.tokens) - 1) // self.window

    def micro_batch(self, k):
        start = (k * self.window) % (len(self.tokens) - 1)
        idx = (torch.arange(self.window + 1) + start) % len(self.tokens)
        chunk = self.tokens[idx].long()
        x = chunk[:-1].view(self.device_batch_rows, self.sequence_len)
        y = chunk[1:].view(self.device_batch_rows, self.sequence_len)
        return self._to(x, y)


def pad_rows(rows, pad_id):
    """Inputs and targets for (ids, mask) rows, padded on the right to the longest row.

    A target is the next token where that token is an assistant token (mask 1), else IGNORE;
    padding is never a target.
    """
    width = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (ids, mask) in enumerate(rows):
        ids_t = torch.tensor(ids, dtype=torch.long)
        keep = torch.tensor(mask, dtype=torch.bool)
        n = len(ids) - 1
        x[i, :n] = ids_t[:-1]
        y[i, :n] = torch.where(keep[1:], ids_t[1:], torch.full_like(ids_t[1:], IGNORE))
    return x, y


class ConversationLoader(_Counted):
    """SFT rows: one conversation per row, reshuffled every pass, padded per micro-batch.

    Step s takes conversations [s*step_conversations, (s+1)*step_conversations) of the pass's
    order; rank r of W takes its contiguous share of those, in micro-batches of device_batch_rows.
    The rows of a step therefore do not depend on the number of processes. Conversations are
    rendered (cut to sequence_len) when a micro-batch needs them; rows without any assistant token
    left are left out.
    """

    kind = "conversation_rows"

    def __init__(self, tok, conversations, device_batch_rows, step_conversations, sequence_len, seed, rank=0, world_size=1, device="cpu"):
        per_rank, rest = divmod(step_conversations, world_size)
        if rest or per_rank % device_batch_rows:
            raise ValueError(f"step_conversations {step_conversations} must split evenly over {world_size} processes and micro-batches of {device_batch_rows} rows")
        if len(conversations) < step_conversations:
            raise ValueError(f"the chat mixture has {len(conversations)} conversations, fewer than one step of {step_conversations}")
        self.tok, self.conversations, self.sequence_len, self.seed = tok, conversations, sequence_len, seed
        self.device_batch_rows, self.step_conversations, self.rank = device_batch_rows, step_conversations, rank
        self.micro_steps = per_rank // device_batch_rows
        self.device = torch.device(device)
        self.fingerprint = [len(conversations), step_conversations, device_batch_rows, world_size, sequence_len, seed]
        self._orders = {}
        self.k = 0

    def steps_per_pass(self):
        return len(self.conversations) // self.step_conversations

    def _order(self, epoch):
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._orders = {epoch: torch.randperm(len(self.conversations), generator=g).tolist()}
        return self._orders[epoch]

    def micro_batch(self, k):
        step, micro = divmod(k, self.micro_steps)
        epoch, s = divmod(step, self.steps_per_pass())
        first = s * self.step_conversations + (self.rank * self.micro_steps + micro) * self.device_batch_rows
        order = self._order(epoch)
        picked = order[first:first + self.device_batch_rows]
        rows = [r for r in (render(self.tok, self.conversations[i], self.sequence_len) for i in picked) if r is not None]
        if not rows:  # all were cut off: borrow the next usable conversation so the loss has a target
            rows = next(([r] for i in order[first + self.device_batch_rows:] + order[:first] if (r := render(self.tok, self.conversations[i], self.sequence_len))), None)
            if rows is None:
                raise ValueError(f"no conversation of the mixture keeps an assistant token within sequence_len={self.sequence_len}")
        return self._to(*pad_rows(rows, self.tok.bos_id))
