"""nanochat's July-2026 model (recipe `nanochat-2026-07`, spec: shared/recipes/nanochat-2026-07.md §1).

The 2025 trunk (snakechat.model.gpt: rotary, parameter-free RMSNorm, QK-norm, relu² MLP, tanh
softcap) plus:
- value embeddings on every other layer (always the last), mixed into the values through a
  per-kv-head gate 3·σ(W_g · h[:12]);
- per-layer scalars on the residual stream and on the first layer's input x0;
- smear: each normed token embedding gets λ_s·σ(w_s · e_t[:24]) times the previous token's added;
- backout: the stream after block ⌊L/2⌋, times λ_b, is subtracted before the head;
- queries and keys × 1.2 each after QK-norm, RoPE base 100,000 rotating by −θ;
- sliding-window attention per layer from a pattern (default SSSL, last layer always full), the
  short window a quarter of the context rounded up to 128;
- vocabulary padded to a multiple of 64, logits cropped back.

The op order follows the spec's §1.4 and §1.8, so float32 CPU results equal the reference
fixtures bit for bit (tests/test_gpt2026.py). Parameter names are snakechat's (`wte`, `blocks.{i}`)
for master's (`transformer.wte`, `transformer.h.{i}`). The model honours the same interface as
snakechat.model.gpt.GPT (forward with targets / loss_reduction / kv_cache, flops_per_token,
matrix_params, num_params, init_weights), so training, evaluation and the engine treat both alike.
A kv_cache may carry `prev_embedding` (the last token's normed embedding, for the smear of the
next one); the model reads and updates it.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from snakechat.model.gpt import MLP, ROPE_LENGTH_FACTOR, GPTConfig, norm, rotary_tables, softcap

RECIPE = "nanochat-2026-07"
ROPE_BASE = 100000.0
VOCAB_MULTIPLE = 64
QK_SCALE = 1.2
SMEAR_CHANNELS = 24  # channels of the current token's embedding that feed the smear gate
VE_GATE_CHANNELS = 12  # channels of the attention input that feed the value-embedding gate
VE_GATE_RANGE = 3.0


@dataclass
class GPT2026Config(GPTConfig):
    """The 2025 model's shape fields (a 2048-token context by default), its window pattern and recipe."""

    sequence_len: int = 2048
    window_pattern: str = "SSSL"
    recipe: str = RECIPE


def padded_vocab(vocab_size):
    return VOCAB_MULTIPLE * math.ceil(vocab_size / VOCAB_MULTIPLE)


def has_value_embedding(layer, n_layer):
    """Every other layer, always including the last."""
    return layer % 2 == (n_layer - 1) % 2


def window_sizes(sequence_len, n_layer, pattern):
    """Per layer, how many previous tokens a query sees besides itself: `sequence_len` for L, a
    quarter of it rounded up to a multiple of 128 for S; the last layer is always L."""
    pattern = pattern.upper()
    if not pattern or set(pattern) - {"S", "L"}:
        raise ValueError(f"window_pattern must be made of S and L, got {pattern!r}")
    short = -(-(-(-sequence_len // 4)) // 128) * 128
    windows = [sequence_len if pattern[i % len(pattern)] == "L" else short for i in range(n_layer)]
    windows[-1] = sequence_len
    return windows


def windowed_attention(q, k, v, window, gqa):
    """Causal attention (q (B, H, Tq, D), k/v (B, Hkv, Tk, D), the Tq queries last) where a query sees
    itself and at most `window` earlier keys, in the spec's three SDPA forms (§1.5)."""
    tq, tk = q.size(2), k.size(2)
    if window >= tq and tq == tk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if tq == 1:
        if window < tk:
            k, v = k[:, :, -(window + 1):], v[:, :, -(window + 1):]
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    row = (tk - tq) + torch.arange(tq, device=q.device).unsqueeze(1)
    col = torch.arange(tk, device=q.device).unsqueeze(0)
    mask = col <= row
    if window < tk:
        mask = mask & (row - col <= window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def apply_rotary(x, cos, sin):
    """Rotate pairs (first half, second half) of the head dimension by −θ (master's sign)."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx, window):
        super().__init__()
        self.layer_idx, self.window = layer_idx, window
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        kv_dim = self.n_kv_head * self.head_dim
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, kv_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, kv_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.ve_gate = nn.Linear(VE_GATE_CHANNELS, self.n_kv_head, bias=False) if has_value_embedding(layer_idx, config.n_layer) else None

    def forward(self, x, ve, cos, sin, kv_cache=None):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:
            gate = VE_GATE_RANGE * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim).to(v.dtype)
        q, k = norm(apply_rotary(q, cos, sin)).to(v.dtype), norm(apply_rotary(k, cos, sin)).to(v.dtype)
        q = q * QK_SCALE
        k = k * QK_SCALE
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        y = windowed_attention(q, k, v, self.window, self.n_kv_head != self.n_head)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, config, layer_idx, window):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx, window)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos, sin, kv_cache=None):
        x = x + self.attn(norm(x), ve, cos, sin, kv_cache)
        return x + self.mlp(norm(x))


class GPT2026(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.n_embd % config.n_head or config.n_head % config.n_kv_head:
            raise ValueError(f"inconsistent GPT2026Config {config}: n_head must divide n_embd and n_kv_head must divide n_head")
        if config.recipe != RECIPE:
            raise ValueError(f"GPT2026 builds recipe {RECIPE}, not {config.recipe!r}")
        self.config = config
        self.windows = window_sizes(config.sequence_len, config.n_layer, config.window_pattern)
        vp, head_dim = padded_vocab(config.vocab_size), config.n_embd // config.n_head
        # the modules' own default inits draw from a forked generator, so that init_weights alone
        # decides the weights from the global seed (the spec's order, §1.3)
        with torch.random.fork_rng(devices=[]):
            self.wte = nn.Embedding(vp, config.n_embd)
            self.blocks = nn.ModuleList(Block(config, i, w) for i, w in enumerate(self.windows))
            self.lm_head = nn.Linear(config.n_embd, vp, bias=False)
            self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(vp, config.n_kv_head * head_dim)
                                               for i in range(config.n_layer) if has_value_embedding(i, config.n_layer)})
            self.smear_gate = nn.Linear(SMEAR_CHANNELS, 1, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        self.smear_lambda = nn.Parameter(torch.zeros(1))
        self.backout_lambda = nn.Parameter(torch.zeros(1))
        self.backout_layer = config.n_layer // 2
        cos, sin = rotary_tables(config.sequence_len * ROPE_LENGTH_FACTOR, head_dim, base=ROPE_BASE)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """The spec's init (§1.3), drawing from the global generator in its order: wte, lm_head, each
        layer's matrices, the scalars, smear gate, value embeddings, value-embedding gates."""
        c = self.config
        s = 3**0.5 * c.n_embd**-0.5
        self.wte.weight.normal_(0.0, 0.8)
        self.lm_head.weight.normal_(0.0, 0.001)
        for block in self.blocks:
            block.attn.c_q.weight.uniform_(-s, s)
            block.attn.c_k.weight.uniform_(-s, s)
            block.attn.c_v.weight.uniform_(-s, s)
            block.attn.c_proj.weight.zero_()
            block.mlp.c_fc.weight.uniform_(-s * 0.4, s * 0.4)
            block.mlp.c_proj.weight.zero_()
        for i in range(c.n_layer):
            self.resid_lambdas[i] = 1.15 - 0.10 * i / max(c.n_layer - 1, 1)
            self.x0_lambdas[i] = 0.20 - 0.15 * i / max(c.n_layer - 1, 1)
        self.smear_lambda.fill_(0.0)
        self.backout_lambda.fill_(0.2)
        self.smear_gate.weight.uniform_(0.0, 0.02)
        for table in self.value_embeds.values():
            table.weight.uniform_(-s, s)
        for block in self.blocks:
            if block.attn.ve_gate is not None:
                block.attn.ve_gate.weight.uniform_(0.0, 0.02)
        cos, sin = rotary_tables(self.cos.size(1), c.n_embd // c.n_head, base=ROPE_BASE)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def matrix_params(self):
        """The hidden 2-D weight matrices, value-embedding gates included (Muon's in the recipe)."""
        return list(self.blocks.parameters())

    def num_scaling_params(self):
        """Parameters the recipe's horizon counts (§4.2): the transformer matrices and the head."""
        return sum(p.numel() for p in self.matrix_params()) + self.lm_head.weight.numel()

    def flops_per_token(self):
        """Training FLOPs per token (§1.7): 6 per weight of every matmul (the blocks, the head, the
        smear gate; not the embedding lookups) plus attention over each layer's window as computed."""
        c = self.config
        matmul_params = sum(p.numel() for p in self.matrix_params()) + self.lm_head.weight.numel() + self.smear_gate.weight.numel()
        head_dim = c.n_embd // c.n_head
        return 6 * matmul_params + sum(12 * c.n_head * head_dim * min(w, c.sequence_len) for w in self.windows)

    def _smear(self, e, kv_cache):
        """Each token's normed embedding plus gate × the previous token's (un-smeared) one; with a
        cache, the previous token of a chunk's first one is the cache's last."""
        prev = getattr(kv_cache, "prev_embedding", None) if kv_cache is not None else None
        if kv_cache is not None:
            kv_cache.prev_embedding = e[:, -1:]
        lam = self.smear_lambda.to(e.dtype)
        if e.size(1) > 1:
            gate = lam * torch.sigmoid(self.smear_gate(e[:, 1:, :SMEAR_CHANNELS]))
            smeared = torch.cat([e[:, :1], e[:, 1:] + gate * e[:, :-1]], dim=1)
        else:
            smeared = e
        if prev is not None:
            first = e[:, :1] + lam * torch.sigmoid(self.smear_gate(e[:, :1, :SMEAR_CHANNELS])) * prev.to(e.dtype)
            smeared = torch.cat([first, smeared[:, 1:]], dim=1)
        return smeared

    def forward(self, idx, targets=None, kv_cache=None, loss_reduction="mean"):
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.cos.size(1):
            raise ValueError(f"position {start + T} exceeds the rotary table ({self.cos.size(1)} positions)")
        cos, sin = self.cos[:, start:start + T], self.sin[:, start:start + T]
        if torch.is_autocast_enabled(idx.device.type):
            dtype = torch.get_autocast_dtype(idx.device.type)
            cos, sin = cos.to(dtype), sin.to(dtype)
        x = self._smear(norm(self.wte(idx)), kv_cache)
        x0, mid = x, None
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            table = self.value_embeds[str(i)] if block.attn.ve_gate is not None else None
            x = block(x, None if table is None else table(idx).to(x.dtype), cos, sin, kv_cache)
            if i == self.backout_layer:
                mid = x
        x = x - self.backout_lambda.to(x.dtype) * mid
        logits = softcap(self.lm_head(norm(x))[..., : self.config.vocab_size].float())
        if targets is None:
            return logits
        if loss_reduction not in ("mean", "sum", "none"):
            raise ValueError(f"loss_reduction must be mean, sum or none, not {loss_reduction!r}")
        if loss_reduction == "mean":
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        losses = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1, reduction="none")
        return losses.view(B, T) if loss_reduction == "none" else losses.sum()
