"""The numeric precision a model runs in, decided here and nowhere else: bf16 autocast on CUDA (with
TF32 matmuls for what stays float32), plain float32 on CPU. Training, evaluation and RL sampling
all enter `autocast(device)`; a stage calls `configure(device)` once at start."""

import contextlib

import torch


def configure(device):
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")


def autocast(device):
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
