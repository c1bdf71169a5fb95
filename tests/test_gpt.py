"""The model: shapes, causality, KV-cache protocol, GQA, depth -> shape, checkpoint round trip."""

import json

import pytest
import torch

from snakechat.model import checkpoint
from snakechat.model.gpt import GPT
from snakechat.model.sizing import config_from_depth
from tiny_chat_model import perturbed_gpt


class ListCache:
    """The smallest object that follows the kv_cache protocol in the contract."""

    def __init__(self, n_layer):
        self.pos = 0
        self.n_layer = n_layer
        self.k = [None] * n_layer
        self.v = [None] * n_layer

    def insert_kv(self, layer_idx, k, v):
        if self.k[layer_idx] is not None:
            k = torch.cat([self.k[layer_idx], k], dim=2)
            v = torch.cat([self.v[layer_idx], v], dim=2)
        self.k[layer_idx], self.v[layer_idx] = k, v
        if layer_idx == self.n_layer - 1:
            self.pos = k.size(2)
        return k, v


def test_shapes_and_loss():
    model = perturbed_gpt()
    idx = torch.randint(0, 97, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, 97) and logits.dtype == torch.float32
    assert logits.abs().max() <= 15.0  # soft-capped
    targets = torch.randint(0, 97, (3, 16))
    targets[0, :5] = -1
    per_token = model(idx, targets, loss_reduction="none")
    assert per_token.shape == (3, 16)
    assert (per_token[0, :5] == 0).all()
    mean = model(idx, targets)
    assert torch.allclose(mean, per_token.sum() / (targets != -1).sum(), atol=1e-6)


def test_causal():
    model = perturbed_gpt()
    idx = torch.randint(0, 97, (1, 20))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 97
    a, b = model(idx), model(changed)
    assert torch.allclose(a[0, :12], b[0, :12], atol=1e-5)
    assert not torch.allclose(a[0, 12:], b[0, 12:], atol=1e-3)


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_kv_cache_matches_full_forward(n_kv_head):
    """Prefill of a prompt, then a chunk of 3 and single tokens, equals one full forward pass."""
    model = perturbed_gpt(n_kv_head=n_kv_head)
    idx = torch.randint(0, 97, (2, 14))
    full = model(idx)
    cache = ListCache(model.config.n_layer)
    parts = [model(idx[:, :8], kv_cache=cache), model(idx[:, 8:11], kv_cache=cache)]
    parts += [model(idx[:, t:t + 1], kv_cache=cache) for t in range(11, 14)]
    assert cache.pos == 14
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_config_from_depth():
    c = config_from_depth(20, vocab_size=65536, sequence_len=2048)
    assert (c.n_embd, c.n_head, c.n_kv_head, c.n_layer) == (1280, 10, 10, 20)
    c = config_from_depth(3, vocab_size=100, sequence_len=64, head_dim=128)
    assert c.n_embd == 256 and c.n_head == 2  # 192 rounded up to a multiple of head_dim
    c = config_from_depth(4, vocab_size=100, sequence_len=64, head_dim=64, n_kv_head=2)
    assert (c.n_embd, c.n_head, c.n_kv_head) == (256, 4, 2)
    with pytest.raises(ValueError, match="n_kv_head"):
        config_from_depth(4, vocab_size=100, sequence_len=64, head_dim=64, n_kv_head=3)


def test_param_and_flop_count():
    model = GPT(config_from_depth(4, vocab_size=32768, sequence_len=512))
    d, v = 256, 32768
    assert model.num_params() == 2 * v * d + 4 * 12 * d * d
    assert model.flops_per_token() == 6 * (v * d + 4 * 12 * d * d) + 12 * 4 * d * 512


def test_checkpoint_round_trip(tmp_path):
    model = perturbed_gpt()
    meta = {"model_config": model.config.to_dict(), "step": 7}
    out = tmp_path / "ckpt"
    checkpoint.save_checkpoint(out, torch.compile(model, backend="eager"), meta)
    checkpoint.save_checkpoint(out, model, meta)  # overwriting an existing checkpoint works too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left behind
    loaded, meta2 = checkpoint.load_gpt(out)
    assert meta2 == json.loads(json.dumps(meta))
    idx = torch.randint(0, 97, (2, 10))
    assert torch.equal(loaded(idx), model(idx))


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        checkpoint.load_gpt(tmp_path)
    model = perturbed_gpt()
    checkpoint.save_checkpoint(tmp_path / "c", model, {"model_config": model.config.to_dict()})
    (tmp_path / "c" / "model.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="model.pt"):
        checkpoint.load_gpt(tmp_path / "c")


def test_cpu_head_loss_matches_plain_cross_entropy():
    """HeadLoss gives F.cross_entropy's losses and gradients, also when its buffer is reused and
    when a forward's graph is dropped without backward (its buffer must not be shared then)."""
    from snakechat.model.gpt import LOGIT_SOFTCAP, HeadLoss, LogitBuffer

    torch.manual_seed(0)
    x = torch.randn(70, 16, dtype=torch.float64, requires_grad=True)  # 70 rows: a last, partial chunk
    weight = (3 * torch.randn(50, 16, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, 50, (70,))
    targets[[3, 40]] = -1
    row_weights = torch.rand(70, dtype=torch.float64)
    plain = torch.nn.functional.cross_entropy(LOGIT_SOFTCAP * torch.tanh(x @ weight.T / LOGIT_SOFTCAP), targets, ignore_index=-1, reduction="none")
    grads_plain = torch.autograd.grad((plain * row_weights).sum(), (x, weight))
    buffers = LogitBuffer()
    for _ in range(2):
        dropped = HeadLoss.apply(x, weight, targets, buffers, True)  # graph never used: its buffer stays taken
        fused = HeadLoss.apply(x, weight, targets, buffers, True)
        grads_fused = torch.autograd.grad((fused * row_weights).sum(), (x, weight))
        assert torch.allclose(fused, plain) and torch.allclose(dropped, plain)
        assert all(torch.allclose(a, b) for a, b in zip(grads_fused, grads_plain))
        assert buffers.free is not None  # backward gave its buffer back for the next call
    with torch.no_grad():
        assert torch.allclose(HeadLoss.apply(x, weight, targets, buffers, False), plain)


def test_model_loss_on_cpu_is_the_plain_loss():
    model = perturbed_gpt()
    idx = torch.randint(0, model.config.vocab_size, (2, 12))
    targets = torch.randint(0, model.config.vocab_size, (2, 12))
    targets[0, :3] = -1
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    loss = model(idx, targets)
    loss.backward()
    fused_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    logits = model(idx)
    plain = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
    plain.backward()
    assert torch.allclose(loss, plain, atol=1e-6)
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(fused_grads, model.parameters()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu_squared_is_bitwise_the_plain_expression(dtype):
    """The MLP's fused relu² gives exactly F.relu(h).square() and its gradient, zeros included."""
    from snakechat.model.gpt import ReluSquared

    torch.manual_seed(0)
    h = torch.randn(33, 70, dtype=dtype)
    h[0, :4] = 0.0
    grad = torch.randn(33, 70, dtype=dtype)
    plain, fused = h.clone().requires_grad_(), h.clone().requires_grad_()
    torch.nn.functional.relu(plain).square().backward(grad)
    out = ReluSquared.apply(fused)
    out.backward(grad)
    assert torch.equal(out, torch.nn.functional.relu(h).square())
    assert torch.equal(fused.grad, plain.grad) and fused.grad[h <= 0].abs().sum() == 0
