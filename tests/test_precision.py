"""Precision: what `auto` resolves to with and without native bf16 (detection faked both ways, so
both paths are checked on any CPU), and the bf16 recipe's numerics against float64 references:
the CPU head loss, the model's loss and gradients, logits and the KV-cache engine."""

import pytest
import torch
import torch.nn.functional as F

from snakechat.model import precision
from snakechat.model.engine import KVCache, Engine
from snakechat.model.gpt import LOGIT_SOFTCAP, HeadLoss, LogitBuffer
from tiny_chat_model import perturbed_gpt

# bf16 keeps 8 significant bits: one rounding is up to 2^-9 relative, and a matmul's inputs are
# each rounded once, so products carry ~0.3% relative error, and results after several bf16
# layers ~1% (measured here: head 0.07-0.3%, logits 0.6%, the model's gradients up to 1.3%).
BF16_REL = 1e-2


def relative_error(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_only_where_the_cpu_multiplies_bf16_natively(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "cpu_has_bf16_matmul", lambda: native)
    assert precision.resolve("auto", "cpu") == expected
    assert precision.resolve("fp32", "cpu") == "fp32" and precision.resolve("bf16", "cpu") == "bf16"  # forced either way
    layer = torch.nn.Linear(4, 4)
    with precision.autocast("cpu", "auto"):
        assert layer(torch.randn(2, 4)).dtype == precision.DTYPES[expected]


def test_an_unknown_precision_is_named():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, not 'fp16'"):
        precision.resolve("fp16", "cpu")


def head_inputs(rows=70, width=64, vocab=500, scale=0.3):
    """float64 hidden states, head weight and targets (two ignored); 70 rows: a last, partial chunk."""
    torch.manual_seed(0)
    x = torch.randn(rows, width, dtype=torch.float64)
    weight = scale * torch.randn(vocab, width, dtype=torch.float64)
    targets = torch.randint(0, vocab, (rows,))
    targets[[3, 40]] = -1
    return x, weight, targets


def reference(x, weight, targets, row_weights):
    """Losses and (d x, d weight) of softcapped cross-entropy, in float64."""
    x, weight = x.double().requires_grad_(), weight.double().requires_grad_()
    losses = F.cross_entropy(LOGIT_SOFTCAP * torch.tanh(x @ weight.T / LOGIT_SOFTCAP), targets, ignore_index=-1, reduction="none")
    return (losses.detach(), *torch.autograd.grad((losses * row_weights).sum(), (x, weight)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_loss_matches_float64_in_each_precision(dtype):
    """HeadLoss on float32 inputs with its matmuls in `dtype`: float32 losses and float32 gradients
    within float32's or bf16's rounding of the float64 result; in bf16 its logit buffer is bf16."""
    x, weight, targets = head_inputs()
    row_weights = torch.rand(len(targets), dtype=torch.float64)
    xf, wf = x.float().requires_grad_(), weight.float().requires_grad_()
    buffers = LogitBuffer()
    losses = HeadLoss.apply(xf, wf, targets, buffers, True, dtype)
    assert losses.dtype == torch.float32 and buffers.free is None
    grads = torch.autograd.grad((losses * row_weights.float()).sum(), (xf, wf))
    assert buffers.free.dtype == dtype and all(g.dtype == torch.float32 for g in grads)
    exact = reference(x, weight, targets, row_weights)
    tolerance = 1e-6 if dtype == torch.float32 else BF16_REL
    for ours, ref in zip((losses, *grads), exact):
        assert relative_error(ours, ref) < tolerance
    if dtype == torch.bfloat16:
        assert relative_error(losses, exact[0]) > 1e-5  # really computed in bf16
    assert (losses[[3, 40]] == 0).all()


def test_model_under_bf16_autocast_is_the_float64_model_within_bf16_rounding():
    """The loss, every weight's gradient and the logits under bf16 autocast, against the same model
    in float64; weights and gradients stay float32 and logits leave in float32."""
    gpt = perturbed_gpt(vocab_size=211)
    idx = torch.randint(0, 211, (3, 24))
    targets = torch.randint(0, 211, (3, 24))
    targets[0, :5] = -1
    exact = perturbed_gpt(vocab_size=211).double()
    loss64 = exact(idx, targets)
    loss64.backward()
    with precision.autocast("cpu", "bf16"):
        loss = gpt(idx, targets)
        logits = gpt(idx)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.dtype == torch.float32
    assert abs(loss.item() - loss64.item()) < BF16_REL * loss64.item()
    assert relative_error(logits, exact(idx)) < BF16_REL
    for (name, p), p64 in zip(gpt.named_parameters(), exact.parameters()):
        assert p.dtype == p.grad.dtype == torch.float32, name
        assert relative_error(p.grad, p64.grad) < 3 * BF16_REL, name
    with torch.no_grad():
        fp32 = gpt(idx, targets)
    assert abs(fp32.item() - loss64.item()) < 1e-5 * loss64.item()  # no autocast: float32 as before
    assert fp32.item() != loss.item()


def test_engine_in_bf16_caches_bf16_and_samples_from_float32_logits():
    """The cached bf16 decode gives the uncached bf16 forward's logits (within bf16 rounding, in float32);
    the fp32 engine stays exact."""
    gpt = perturbed_gpt(vocab_size=211).eval()
    prompt = torch.randint(0, 211, (1, 10))
    for name, tolerance in (("bf16", BF16_REL), ("fp32", 1e-5)):
        engine = Engine(gpt, tokenizer=None, precision=name)
        cache = KVCache(1, 2, 2, 16, capacity=16)
        steps = [engine._forward(prompt[:, :6], cache)] + [engine._forward(prompt[:, t:t + 1], cache) for t in range(6, 10)]
        assert cache.kv.dtype == precision.DTYPES[name] and all(s.dtype == torch.float32 for s in steps)
        with torch.no_grad():
            full = gpt.double()(prompt)[0, 5:].float()
            gpt.float()
        assert relative_error(torch.cat(steps), full) < tolerance, name


def test_a_model_for_inference_computes_what_autocast_computes():
    """for_inference's bf16 weights give bitwise the logits and losses of autocast over the float32
    weights, and the same greedy generations; such a model refuses to generate in fp32."""
    import copy

    gpt = perturbed_gpt(vocab_size=211).eval()
    cast = precision.for_inference(copy.deepcopy(gpt), "bf16")
    assert cast.lm_head.weight.dtype == torch.bfloat16 and cast.wte.weight.dtype == torch.float32
    assert not any(p.requires_grad for p in cast.parameters())
    assert precision.for_inference(gpt, "fp32") is gpt and gpt.lm_head.weight.dtype == torch.float32
    idx = torch.randint(0, 211, (2, 20))
    with torch.no_grad(), precision.autocast("cpu", "bf16"):
        assert torch.equal(cast(idx), gpt(idx))
        assert torch.equal(cast(idx, idx, loss_reduction="none"), gpt(idx, idx, loss_reduction="none"))

    class Tok:
        bos_id = 0

        def special_id(self, name):
            return 200 + ["<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>", "<|assistant_end|>"].index(name)

    prompts = [[0, 5, 9, 14], [0, 7, 3, 3, 8, 1]]
    outputs = [Engine(m, Tok(), precision="bf16").generate_many(prompts, max_tokens=12, temperature=0.0) for m in (gpt, cast)]
    assert outputs[0] == outputs[1] and all(len(tokens) == 12 for tokens, _ in outputs[0])
    with pytest.raises(ValueError, match="precision bf16"):
        Engine(cast, Tok(), precision="fp32")


def test_fp8_is_refused_before_any_work(tmp_path):
    """fp8 is a GPU-only part of nanochat's 2026 speedrun that snakechat leaves as a named hook: asking
    for it stops base_train before it reads anything (the manifest here does not exist), saying why."""
    from snakechat import base_train

    args = ["--manifest", str(tmp_path / "missing.json"), "--tokenizer", str(tmp_path), "--out", str(tmp_path / "out"),
            "--state", str(tmp_path / "state"), "--depth", "2", "--device", "cpu", "--fp8", "true"]
    with pytest.raises(SystemExit, match=r"--fp8 true: nanochat's fp8 Linear layers are GPU-only: it needs a CUDA GPU .* this run is on cpu\. Set models.<model>.base.fp8: false"):
        base_train.main(args)
    with pytest.raises(SystemExit, match="snakechat does not implement it yet"):
        precision.refuse_fp8("cuda")
    assert not any(tmp_path.iterdir())
