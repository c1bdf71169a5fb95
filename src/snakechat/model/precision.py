"""The numeric precision a model computes in, decided here and nowhere else.

A stage's `--precision` (config: a model's `precision`) is one of:

- `bf16`: the mixed-precision recipe GPUs train with, the same on CPU and CUDA: forward passes
  under `torch.autocast(dtype=bfloat16)` (matmuls and attention in bf16; the residual stream,
  norms of it, softmax and losses in float32), master weights, gradients and optimizer state in
  float32, and Muon's Newton–Schulz orthogonalisation in bf16 (torch's own).
- `fp32`: float32 throughout, Muon included (TF32 matmuls on CUDA).
- `auto`: bf16 where the device multiplies bf16 natively — CUDA GPUs with bf16, CPUs with
  AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake) or AMX (Intel Sapphire Rapids and later) —
  and fp32 where bf16 would be emulated (there it runs up to 50× slower than float32).

`resolve(setting, device)` turns a setting into `bf16` or `fp32`; a stage resolves once, records
the result (meta.json, sidecars) and hands it to `autocast`, `snakechat.train.optim` and the engine.
Logits leave the model in float32 in both precisions, so evaluations compare them in float32.
A model that only runs forward passes is put `for_inference`: under bf16 its matmul weights are
cast once instead of at every call (decoding makes one call per token).
"""

import contextlib
import functools

import torch

SETTINGS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.cache
def cpu_has_bf16_matmul():
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); without it torch emulates
    bf16 matmuls, 50× slower than float32 on an AVX2 EPYC, while with it (a Xeon with AMX) the
    kernels of a training step run 3–3.7× faster than in float32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def native_bf16(device):
    """Whether `device` multiplies bf16 natively."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16_matmul()


def resolve(setting, device):
    """`bf16` or `fp32`: what `setting` (auto, fp32 or bf16) means on `device`."""
    if setting not in SETTINGS:
        raise ValueError(f"precision must be one of {', '.join(SETTINGS)}, not {setting!r}")
    if setting == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return setting


def configure(device):
    """Once per process: TF32 matmuls on CUDA for what stays float32."""
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")


def for_inference(model, precision):
    """`model` for forward passes only, in `precision` (resolved). Under bf16 its nn.Linear weights
    are cast to bf16 once, in place: autocast casts them to the same values at every call, which in
    decoding (one call per token) costs as much as the small matmuls themselves. Such a model then
    runs only under `autocast(device, "bf16")`, and is no longer trained (no gradients)."""
    if precision == "bf16":
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(torch.bfloat16)
        model.requires_grad_(False)
    return model


def autocast(device, precision):
    """The context forward passes run in: bf16 autocast for `bf16`, nothing for `fp32`."""
    if resolve(precision, device) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def refuse_fp8(device_kind):
    """The hook for nanochat's fp8 training (recipe nanochat-2026-07 §7: Float8Linear on every Linear
    with both sides >= 128 and divisible by 16, tensorwise-scaled e4m3 inputs and weights, e5m2
    gradients, plain Linear again for evaluation). It needs fp8 tensor cores (Hopper or later) and
    snakechat does not implement it, so asking for it stops the run before any work, saying which."""
    why = ("snakechat does not implement it yet (it would replace the Linear layers of snakechat.model.gpt)" if device_kind == "cuda"
           else f"it needs a CUDA GPU with fp8 tensor cores (Hopper or later), and this run is on {device_kind}")
    raise SystemExit(f"--fp8 true: nanochat's fp8 Linear layers are GPU-only: {why}. Set models.<model>.base.fp8: false "
                     "(nanochat's speedrun passes --fp8; without it the same matmuls run in the model's precision)")
