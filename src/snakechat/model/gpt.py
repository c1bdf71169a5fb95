"""The GPT model (its shape from a depth: snakechat.model.sizing).

A modern decoder-only transformer: rotary position embeddings, RMSNorm without learned
parameters (also on queries and keys), ReLU² MLP, no biases, separate token embedding and
output head, logits soft-capped with tanh, attention through
`F.scaled_dot_product_attention` (flash kernel on GPU), grouped-query attention when
`n_kv_head < n_head`.

`model(idx, targets=None, kv_cache=None, loss_reduction="mean")`:
- no targets: float32 logits (B, T, vocab);
- targets (B, T), -1 ignored: the cross-entropy loss ("mean"/"sum"; "none" gives (B, T)).
- kv_cache (see snakechat.model.engine): has `pos` (tokens already cached, the rotary offset) and
  `insert_kv(layer_idx, k, v) -> (k_all, v_all)`; the cache advances `pos` itself.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

LOGIT_SOFTCAP = 15.0
ROPE_BASE = 10000.0
ROPE_LENGTH_FACTOR = 4  # rotary tables cover this many times sequence_len, for long generations
LOSS_CHUNK_ROWS = 32  # rows of logits the CPU loss handles at a time (a few MB: stays in cache)


@dataclass
class GPTConfig:
    sequence_len: int = 1024
    vocab_size: int = 32768
    n_layer: int = 12
    n_head: int = 6
    n_kv_head: int = 6
    n_embd: int = 768

    def to_dict(self):
        return asdict(self)


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(length, head_dim, base=ROPE_BASE):
    """cos and sin of shape (1, length, 1, head_dim // 2), laid out for (B, T, H, D) tensors."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]


def apply_rotary(x, cos, sin):
    """Rotate pairs (first half, second half) of the head dimension by position-dependent angles."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def softcap(h):
    return LOGIT_SOFTCAP * torch.tanh(h / LOGIT_SOFTCAP)


class LogitBuffer:
    """One reusable (rows, vocab) buffer for HeadLoss.

    At a 32k vocabulary the head's logits for a 4096-token step take 512 MB; a fresh tensor of that
    size comes from mmap and is page-faulted in on every step, about 0.2 s each time on a 2-core
    VM, and the plain loss made three such tensors per step. A HeadLoss call takes the buffer and its backward gives it back, so a
    forward whose graph is dropped without backward only costs a new allocation next time.
    """

    def __init__(self):
        self.free = None

    def take(self, rows, cols, dtype):
        buf, self.free = self.free, None
        if buf is None or buf.shape != (rows, cols) or buf.dtype != dtype:
            buf = torch.empty(rows, cols, dtype=dtype)
        return buf

    def give_back(self, buf):
        self.free = buf


class HeadLoss(torch.autograd.Function):
    """Per-row cross-entropy of the soft-capped head logits, from the final hidden states x (N, C)
    and the head weight W (V, C): the CPU form of F.cross_entropy(softcap(x @ W.T)).

    The head's matmuls run in `dtype` (bf16 under bf16 autocast, as nn.Linear's would; else x's
    dtype), and the (N, V) logits live in one buffer of that dtype from a LogitBuffer: the head
    matmul writes into it, and a few rows at a time (while they are in cache) the forward turns
    them, in float32 (float64 for float64 inputs), into the losses and, when a backward will
    follow, into the gradient of each row's loss with respect to its logits, stored back in the
    buffer. The backward is then two matmuls, with the upstream gradient applied to the small
    (N, C) sides. No other (N, V) tensor is made. Losses are float32 (float64 for float64 inputs)
    and gradients come back in the dtypes of x and W.

    The softcap is computed as cap × tanh(h / cap) = cap × (2σ(2h / cap) − 1): on CPU torch's
    sigmoid is about four times faster than its tanh, and the softmax of cap × (2σ − 1) is that of
    2·cap·σ. The softcap also bounds every probability below by e^(−2·cap) / V, so the loss can
    be read as −log p[target] without underflow. On GPU the plain expression is used, and fused
    by inductor under torch.compile.
    """

    @staticmethod
    def forward(ctx, x, weight, targets, buffers, keep_for_backward, dtype=None):
        dtype = dtype or x.dtype
        acc = torch.promote_types(dtype, torch.float32)  # what the per-row arithmetic runs in
        n, vocab = x.size(0), weight.size(0)
        buf = buffers.take(n, vocab, dtype)  # holds 2h / cap, then (in acc) σ of it, then d loss / d h
        weight_as = weight.to(dtype)  # weight itself where it is in dtype already
        torch.mm((x * (2.0 / LOGIT_SOFTCAP)).to(dtype), weight_as.t(), out=buf)
        losses = torch.empty(n, dtype=acc)
        safe = targets.clamp(min=0).unsqueeze(1)
        rows_at_once = min(n, LOSS_CHUNK_ROWS)
        scaled, probs = (torch.empty(rows_at_once, vocab, dtype=acc) for _ in range(2))
        upcast = torch.empty(rows_at_once, vocab, dtype=acc) if dtype != acc else None
        for start in range(0, n, LOSS_CHUNK_ROWS):
            end = min(start + LOSS_CHUNK_ROWS, n)
            rows, chunk = safe[start:end], buf[start:end]
            sig = (chunk if upcast is None else upcast[: end - start].copy_(chunk)).sigmoid_()
            p = torch.softmax(torch.mul(sig, 2 * LOGIT_SOFTCAP, out=scaled[: end - start]), dim=1, out=probs[: end - start])
            losses[start:end] = p.gather(1, rows).log_().neg_().squeeze(1)
            if keep_for_backward:
                # d loss / d h = (p − one-hot) × d softcap / d h = (p − one-hot) × 4σ(1 − σ); the 4 waits for backward
                p.scatter_add_(1, rows, torch.full_like(rows, -1, dtype=p.dtype))
                sig.addcmul_(sig, sig, value=-1.0).mul_(p)
                if upcast is not None:
                    chunk.copy_(sig)
        losses.masked_fill_(targets < 0, 0.0)
        if keep_for_backward:
            ctx.save_for_backward(x, weight_as, targets)
            ctx.grad_logits, ctx.buffers, ctx.weight_dtype = buf, buffers, weight.dtype
        else:
            buffers.give_back(buf)
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        x, weight_as, targets = ctx.saved_tensors
        grad_logits, buffers = ctx.grad_logits, ctx.buffers
        del ctx.grad_logits
        rows = (4.0 * grad_losses * (targets >= 0)).unsqueeze(1)
        grad_x = (grad_logits @ weight_as).to(x.dtype).mul_(rows) if ctx.needs_input_grad[0] else None
        grad_weight = (grad_logits.t() @ (x * rows).to(grad_logits.dtype)).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        buffers.give_back(grad_logits)
        return grad_x, grad_weight, None, None, None, None


class ReluSquared(torch.autograd.Function):
    """relu(h)², whose backward is one product, 2·relu(h)·grad, from the one saved tensor.

    Autograd's own chain (clamp_min, then pow, each with its backward) makes three more passes
    over the MLP's widest activation, a tenth of a bf16 CPU step at depth 4. The values are
    bitwise those of `F.relu(h).square()` and its gradient (a doubling is exact)."""

    @staticmethod
    def forward(ctx, h):
        r = F.relu(h)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad):
        (r,) = ctx.saved_tensors
        return (grad * r).mul_(2.0)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        kv_dim = self.n_kv_head * self.head_dim
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, kv_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, kv_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos, sin, kv_cache=None):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)).to(v.dtype), norm(apply_rotary(k, cos, sin)).to(v.dtype)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        Tk = k.size(2)
        gqa = self.n_kv_head != self.n_head
        if Tk == T:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        else:
            # New queries see the whole cached prefix and, causally, each other.
            prefix = Tk - T
            mask = torch.ones(T, Tk, dtype=torch.bool, device=q.device).tril(diagonal=prefix)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(ReluSquared.apply(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, kv_cache=None):
        x = x + self.attn(norm(x), cos, sin, kv_cache)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.n_embd % config.n_head or config.n_head % config.n_kv_head:
            raise ValueError(f"inconsistent GPTConfig {config}: n_head must divide n_embd and n_kv_head must divide n_head")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.logit_buffer = LogitBuffer()  # for the CPU loss; not part of the state
        cos, sin = rotary_tables(config.sequence_len * ROPE_LENGTH_FACTOR, config.n_embd // config.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """nanochat b399e43's init, in its order of random draws (module order): unit-normal
        embedding; every linear normal with std 1/√fan_in · min(1, √(fan_out/fan_in)); then the
        output projections zeroed (each block starts as the identity) and the head zeroed (uniform
        predictions, and a first step that moves the head only). `build` makes its RNG state b399e43's."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=1.0)
            elif isinstance(module, nn.Linear):
                fan_out, fan_in = module.weight.shape
                nn.init.normal_(module.weight, std=1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in)))
        nn.init.zeros_(self.lm_head.weight)
        for block in self.blocks:
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
        cos, sin = rotary_tables(self.cos.size(1), self.config.n_embd // self.config.n_head)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    @classmethod
    def build(cls, config, device, seed):
        """A model initialised as b399e43's base_train does it: seed, build on the meta device (no
        random draws), allocate on `device`, init_weights. Same seed, same weights as b399e43's."""
        torch.manual_seed(seed)
        with torch.device("meta"):
            model = cls(config)
        model.to_empty(device=device)
        model.init_weights()
        return model

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward): 6 per weight of every matmul (the
        embedding lookup is no matmul) plus attention's score and value products."""
        c = self.config
        matmul_params = self.num_params() - self.wte.weight.numel()
        attention = 12 * c.n_layer * c.n_embd * c.sequence_len
        return 6 * matmul_params + attention

    def matrix_params(self):
        """The hidden 2-D weight matrices (the ones Muon optimizes)."""
        return [p for p in self.blocks.parameters()]

    @torch.compiler.disable
    def cpu_head_loss(self, x, targets):
        """HeadLoss, left out of torch.compile's graph: inductor's fused version of the plain
        expression still makes several (N, V) tensors, slower on CPU than HeadLoss's one buffer.
        Its matmuls run in bf16 under bf16 autocast, as the head's nn.Linear would."""
        weight = self.lm_head.weight
        keep = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        return HeadLoss.apply(x, weight, targets, self.logit_buffer, keep, dtype)

    def forward(self, idx, targets=None, kv_cache=None, loss_reduction="mean"):
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.cos.size(1):
            raise ValueError(f"position {start + T} exceeds the rotary table ({self.cos.size(1)} positions)")
        cos, sin = self.cos[:, start:start + T], self.sin[:, start:start + T]
        if torch.is_autocast_enabled(idx.device.type):  # queries and keys come out of autocast's matmuls in its dtype: cast the angles once, not per layer
            dtype = torch.get_autocast_dtype(idx.device.type)
            cos, sin = cos.to(dtype), sin.to(dtype)
        x = norm(self.wte(idx))
        for block in self.blocks:
            x = block(x, cos, sin, kv_cache)
        x = norm(x)
        if targets is None:
            return softcap(self.lm_head(x).float())
        if loss_reduction not in ("mean", "sum", "none"):
            raise ValueError(f"loss_reduction must be mean, sum or none, not {loss_reduction!r}")
        targets = targets.reshape(-1)
        if x.device.type == "cpu" and x.dtype == torch.float32:  # the residual stream stays float32 under autocast
            losses = self.cpu_head_loss(x.reshape(-1, x.size(-1)), targets)
        else:
            h = self.lm_head(x).float()
            losses = F.cross_entropy(softcap(h).view(-1, h.size(-1)), targets, ignore_index=-1, reduction="none")
        if loss_reduction == "none":
            return losses.view(B, T)
        if loss_reduction == "sum":
            return losses.sum()
        return losses.sum() / (targets >= 0).sum()
