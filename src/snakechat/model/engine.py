"""Text generation: the one place tokens are sampled (chat eval, RL, the chat CLI and web chat).

`Engine(model, tokenizer).generate(prompt_ids, num_samples=N, ...)` runs the prompt through the
model once (prefill, batch 1), copies its key/value cache to N rows, then produces one token per
step for all N rows together, each step feeding only the new token. It yields, per step, the
token of every row and whether that token was sampled (1) or forced by the tool (0).
`generate_batch` runs that to the end; `generate_many` batches several *different* prompts
(evaluation); `snakechat.serve.reply` turns one reply into text and tool-call parts (chat CLI, web chat).

Tool use: when a row emits <|python_start|> expr <|python_end|>, the expression goes to
`snakechat.model.calculator.run` and the row's next tokens are forced to
<|output_start|> result <|output_end|>; then sampling resumes. A row stops at <|assistant_end|>
or <|bos|>, after `max_tokens` steps, or when the sequence reaches the last position the model has rotary angles for.

Precision: `Engine(..., precision=)` takes a snakechat.model.precision setting (default fp32, exact;
the stages pass their `--precision`, auto by default): under bf16 the forward passes run in bf16
autocast and the cache holds bf16 keys and values, while logits are sampled from in float32.
autocast casts the model's weights once per `generate_many` call (its whole loop is one autocast
region, under no_grad: autocast caches no casts in inference mode), but at every step of `generate`
(whose consumer runs between steps): a model that is only sampled from should be put
`precision.for_inference` first, as chat_model.load_engine does.

Sampling is deterministic for a given seed (a private torch.Generator): temperature 0 is greedy,
top_k keeps the k most likely tokens, top_p the fewest most likely tokens whose probabilities add
up to at least p (nucleus sampling); both may apply, top_k first.
"""

from collections import deque

import torch

from snakechat.model import calculator
from snakechat.model.precision import autocast, resolve


class KVCache:
    """Keys and values of every layer for the positions seen so far (the model's kv_cache protocol).

    The model calls `insert_kv(layer, k, v)` in each attention layer with the new positions'
    keys/values (B, n_kv_head, T, head_dim) and attends over what it returns (the cached positions
    it may need, then the new ones); `pos` is how many positions were seen (the rotary offset of the
    next token) and advances after the last layer. `prev_embedding` is per-row model state that must
    travel with the cache (the 2026 model's smear keeps the last token's embedding there); the model
    sets it, `expand` copies it to every row.

    Without `windows`, every position is kept: storage is allocated on the first insert, in the
    dtype and device of the keys, and grows if a sequence outlives the initial capacity. With
    `windows` (per layer, how many earlier positions a query may see: the 2026 model's sliding
    windows), a layer keeps only its last `window` positions, the most any later query reads.
    """

    def __init__(self, batch_size, n_layer, n_kv_head, head_dim, capacity, windows=None):
        self.batch_size, self.n_layer, self.n_kv_head, self.head_dim = batch_size, n_layer, n_kv_head, head_dim
        self.capacity = capacity
        self.windows = list(windows) if windows is not None else None
        if self.windows is not None and len(self.windows) != n_layer:
            raise ValueError(f"windows has {len(self.windows)} entries for {n_layer} layers")
        self.kv = None  # (n_layer, 2, B, H, capacity, D), without windows
        self.recent = [None] * n_layer  # per layer (k, v) of its last positions (B, H, <= window, D), with windows
        self.pos = 0
        self.prev_embedding = None  # (B, 1, C) or None

    def reset(self):
        self.pos = 0
        self.recent = [None] * self.n_layer
        self.prev_embedding = None

    def _allocate(self, like):
        shape = (self.n_layer, 2, self.batch_size, self.n_kv_head, self.capacity, self.head_dim)
        self.kv = torch.empty(shape, dtype=like.dtype, device=like.device)

    def _grow(self, needed):
        extra = max(needed, 2 * self.capacity) - self.capacity
        pad = self.kv.new_empty((*self.kv.shape[:4], extra, self.kv.shape[5]))
        self.kv = torch.cat([self.kv, pad], dim=4)
        self.capacity += extra

    def insert_kv(self, layer_idx, k, v):
        if k.shape[0] != self.batch_size or k.shape[1] != self.n_kv_head or k.shape[3] != self.head_dim:
            raise ValueError(f"kv cache holds (B={self.batch_size}, H={self.n_kv_head}, D={self.head_dim}), got keys of shape {tuple(k.shape)}")
        start, end = self.pos, self.pos + k.shape[2]
        if layer_idx == self.n_layer - 1:
            self.pos = end
        if self.windows is not None:
            return self._insert_windowed(layer_idx, k, v)
        if self.kv is None:
            self._allocate(k)
        if end > self.capacity:
            self._grow(end)
        self.kv[layer_idx, 0, :, :, start:end] = k
        self.kv[layer_idx, 1, :, :, start:end] = v
        return self.kv[layer_idx, 0, :, :, :end], self.kv[layer_idx, 1, :, :, :end]

    def _insert_windowed(self, layer_idx, k, v):
        kept = self.recent[layer_idx]
        if kept is not None:
            k, v = torch.cat([kept[0], k], dim=2), torch.cat([kept[1], v], dim=2)
        window = self.windows[layer_idx]
        # a copy where the tail is a small part of a long chunk, so the chunk itself is not kept alive
        tail = (lambda t: t[:, :, -window:].clone()) if k.shape[2] > 2 * window else (lambda t: t[:, :, -window:])
        self.recent[layer_idx] = (tail(k), tail(v))
        return k, v

    def cached_positions(self, layer_idx):
        """How many positions layer `layer_idx` holds."""
        if self.windows is not None:
            return 0 if self.recent[layer_idx] is None else self.recent[layer_idx][0].shape[2]
        return self.pos if self.kv is not None else 0

    def expand(self, batch_size, capacity=None):
        """A new cache with `batch_size` rows, each a copy of this (single-row) cache."""
        if self.batch_size != 1:
            raise ValueError("only a single-row cache can be expanded")
        out = KVCache(batch_size, self.n_layer, self.n_kv_head, self.head_dim, max(capacity or 0, self.pos, 1), self.windows)
        if self.kv is not None:
            out._allocate(self.kv)
            out.kv[:, :, :, :, : self.pos] = self.kv[:, :, :, :, : self.pos]
        out.recent = [None if kept is None else tuple(t.expand(batch_size, -1, -1, -1).clone() for t in kept) for kept in self.recent]
        if self.prev_embedding is not None:
            out.prev_embedding = self.prev_embedding.expand(batch_size, -1, -1).clone()
        out.pos = self.pos
        return out


class ToolState:
    """One row's state: stopped or not, inside a python call or not, tokens the tool must force.

    `next_forced()` is the token the tool forces at this step (or None to sample); `observe(t)`
    updates the state with the token the row really got.
    """

    def __init__(self, tokenizer, tool=calculator.run):
        self.tokenizer = tokenizer
        self.tool = tool
        self.ids = {name: tokenizer.special_id(name) for name in ("<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>", "<|assistant_end|>")}
        self.stop_ids = {self.ids["<|assistant_end|>"], tokenizer.bos_id}
        self.forced = deque()
        self.expression = None  # token ids of the python call being written, or None outside one
        self.done = False
        self.calls = []  # (expression, result) pairs, for inspection

    def next_forced(self):
        return self.forced.popleft() if self.forced else None

    def observe(self, token):
        if token in self.stop_ids:
            self.done = True
        elif token == self.ids["<|python_start|>"]:
            self.expression = []
        elif token == self.ids["<|python_end|>"] and self.expression is not None:
            expr = self.tokenizer.decode(self.expression)
            result = self.tool(expr)
            self.calls.append((expr, result))
            self.forced.extend([self.ids["<|output_start|>"], *self.tokenizer.encode(result), self.ids["<|output_end|>"]])
            self.expression = None
        elif self.expression is not None:
            self.expression.append(token)


def sample_next(logits, generator, temperature=1.0, top_k=None, top_p=None):
    """One token per row from (B, V) logits: greedy at temperature 0, else softmax sampling (top-k, top-p)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more likely tokens
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the first token always stays
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


class Engine:
    """Batched, cached, seeded sampling from a GPT, with the calculator tool."""

    def __init__(self, model, tokenizer, tool=calculator.run, precision="fp32"):
        self.model = model
        self.tokenizer = tokenizer
        self.tool = tool
        self.config = model.config
        self.device = next(model.parameters()).device
        self.precision = resolve(precision, self.device)
        if self.precision == "fp32" and any(p.dtype != torch.float32 for p in model.parameters()):
            raise ValueError("the model's weights are not float32 (cast for bf16 inference?): generate from it with precision bf16")
        # positions the model has rotary angles for (snakechat.model.gpt covers a multiple of sequence_len)
        self.max_len = model.cos.size(1) if hasattr(model, "cos") else model.config.sequence_len

    def _forward(self, ids, kv_cache=None):
        with autocast(self.device, self.precision):
            return self.model(ids, kv_cache=kv_cache)[:, -1, :].float()

    def _new_cache(self, batch_size, capacity):
        """A cache for the model; a model with sliding windows (`model.windows`) keeps only what they need."""
        c = self.config
        return KVCache(batch_size, c.n_layer, c.n_kv_head, c.n_embd // c.n_head, capacity, getattr(self.model, "windows", None))

    @torch.inference_mode()
    def generate(self, tokens, num_samples=1, max_tokens=256, temperature=1.0, top_k=None, top_p=None, seed=42, use_cache=True):
        """Yield (tokens, masks) each step: one token per row, mask 1 if sampled and 0 if forced.

        A row that has stopped keeps receiving (meaningless) tokens until every row has stopped;
        read a row only up to its first stop token (generate_batch does this).
        """
        tokens = list(tokens)
        if not tokens:
            raise ValueError("the prompt must have at least one token")
        limit = self.max_len
        if len(tokens) >= limit:
            raise ValueError(f"prompt has {len(tokens)} tokens; the model handles at most {limit} positions")
        max_tokens = min(max_tokens, limit - len(tokens))
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        rows = [ToolState(self.tokenizer, self.tool) for _ in range(num_samples)]
        prompt = torch.tensor([tokens], dtype=torch.long, device=self.device)
        if use_cache:
            prefill = self._new_cache(1, len(tokens))
            logits = self._forward(prompt, prefill).expand(num_samples, -1)
            cache = prefill.expand(num_samples, capacity=len(tokens) + max_tokens)
        else:
            seqs = prompt.expand(num_samples, -1)
            logits = self._forward(seqs)
        for step in range(max_tokens):
            sampled = sample_next(logits, generator, temperature, top_k, top_p).tolist()
            column, masks = [], []
            for row, token in zip(rows, sampled):
                forced = row.next_forced()
                column.append(token if forced is None else forced)
                masks.append(1 if forced is None else 0)
                if not row.done:
                    row.observe(column[-1])
            yield column, masks
            if all(row.done for row in rows) or step == max_tokens - 1:
                return
            new = torch.tensor(column, dtype=torch.long, device=self.device).unsqueeze(1)
            if use_cache:
                logits = self._forward(new, cache)
            else:
                seqs = torch.cat([seqs, new], dim=1)
                logits = self._forward(seqs)

    def generate_batch(self, tokens, num_samples=1, **kwargs):
        """Run `generate` to the end: (sequences, masks), prompt included, stop tokens left out.

        masks are 0 on the prompt and on tool-forced tokens, 1 on sampled tokens.
        """
        stop_ids = {self.tokenizer.special_id("<|assistant_end|>"), self.tokenizer.bos_id}
        sequences = [list(tokens) for _ in range(num_samples)]
        masks = [[0] * len(tokens) for _ in range(num_samples)]
        finished = [False] * num_samples
        for column, column_masks in self.generate(tokens, num_samples=num_samples, **kwargs):
            for i, (token, mask) in enumerate(zip(column, column_masks)):
                if finished[i]:
                    continue
                if token in stop_ids:
                    finished[i] = True
                    continue
                sequences[i].append(token)
                masks[i].append(mask)
            if all(finished):
                break
        return sequences, masks

    @torch.no_grad()  # not inference_mode, where autocast would cast every weight again at every step
    def generate_many(self, prompts, max_tokens=256, temperature=1.0, top_k=None, seed=42):
        """Completions of several different prompts in one batch: [(tokens, masks)] per prompt.

        The prompts are prefilled together up to the shortest one's length; after that each row
        reads the rest of its own prompt one token per step (while other rows already sample),
        so all rows share one position and the cache needs no padding or masks. Greedy results
        equal those of one prompt at a time. Stop tokens are left out; masks as in generate_batch.
        """
        prompts = [list(p) for p in prompts]
        if not prompts or not all(prompts):
            raise ValueError("give at least one prompt, each with at least one token")
        longest = max(len(p) for p in prompts)
        if longest >= self.max_len:
            raise ValueError(f"a prompt has {longest} tokens; the model handles at most {self.max_len} positions")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        rows = [ToolState(self.tokenizer, self.tool) for _ in prompts]
        with autocast(self.device, self.precision):  # one region: each weight is cast once, not at every step
            return self._generate_many(prompts, rows, longest, max_tokens, temperature, top_k, generator)

    def _generate_many(self, prompts, rows, longest, max_tokens, temperature, top_k, generator):
        outputs = [([], []) for _ in prompts]
        pos = min(len(p) for p in prompts)
        cache = self._new_cache(len(prompts), min(longest + max_tokens, self.max_len))
        logits = self._forward(torch.tensor([p[:pos] for p in prompts], dtype=torch.long, device=self.device), cache)
        while True:
            sampled = sample_next(logits, generator, temperature, top_k).tolist()
            column = []
            for prompt, row, (tokens, masks), token in zip(prompts, rows, outputs, sampled):
                if pos < len(prompt):  # still reading its prompt
                    column.append(prompt[pos])
                    continue
                forced = row.next_forced()
                column.append(token if forced is None else forced)
                if row.done:
                    continue
                row.observe(column[-1])
                if not row.done:
                    tokens.append(column[-1])
                    masks.append(1 if forced is None else 0)
                    row.done = len(tokens) >= max_tokens
            pos += 1
            if all(row.done for row in rows) or pos >= self.max_len:
                return outputs
            logits = self._forward(torch.tensor(column, dtype=torch.long, device=self.device).unsqueeze(1), cache)
