"""Training throughput of the GPT: tokens/s and MFU of full optimizer steps (forward, backward,
Muon + AdamW) on random tokens, after warm-up, on the current device.

    python bench/train_throughput.py --depth 4 --seq-len 512 --device-batch 8 --vocab 32768 --compile 0
    python bench/train_throughput.py --depth 4 --seq-len 512 --device-batch 8 --vocab 8192 --grad-accum 8
    python bench/train_throughput.py --depth 20 --seq-len 2048 --device-batch 32 --vocab 65536 --compile 1  # one GPU

Prints the model size, the first (compiling) step's time, then tokens/s and MFU (where the
device's peak FLOP/s is known) of the timed steps, the optimizers' share of a step, and on CPU
the tokens per CPU-second (with `--threads 1` a figure that a busy shared machine hardly
disturbs). Random tokens leave data loading out.

A step is `--grad-accum` micro-batches of forward + backward, then one optimizer step, as in
training, where the total batch (2^17 tokens at depth 4) is many micro-batches: the optimizers'
cost per token shrinks with the accumulation, and at 1 it is paid on every micro-batch.

`--floor` also times, on their own, the kernels a step cannot do without: every matmul of the
forward and backward (each weight's three products, at this batch's shapes), attention's
forward and backward, and Muon's Newton–Schulz orthogonalisation of every hidden matrix. Their
sum bounds tokens/s from above on this device, whatever the implementation: the fraction of it
a step reaches is the overhead left to win.
"""

import argparse
import time
from collections import Counter

import torch

from snakechat.common import device_type, keep_freed_memory
from snakechat.gpt import GPT
from snakechat.sizing import config_from_depth
from snakechat.optim import Schedule, build_optimizers
from snakechat.precision import autocast, configure
from snakechat.trainer import peak_flops


def best_time(fn, device, repeats=3):
    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def micro_batch_floor(model, tokens, batch, seq_len, device):
    """Seconds per micro-batch of the matmuls (forward, input grad, weight grad of every linear
    layer) and of attention forward + backward, each timed alone at this micro-batch's shapes."""
    import torch.nn.functional as F

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # what autocast computes in
    seconds = 0.0
    shapes = Counter(module.weight.shape for module in model.modules() if isinstance(module, torch.nn.Linear))
    for (n_out, n_in), count in shapes.items():
        x, w = torch.randn(tokens, n_in, device=device, dtype=dtype), torch.randn(n_out, n_in, device=device, dtype=dtype)
        g = torch.randn(tokens, n_out, device=device, dtype=dtype)
        seconds += count * sum(best_time(fn, device) for fn in (lambda: x @ w.t(), lambda: g @ w, lambda: g.t() @ x))
    c = model.config
    q, k, v = (torch.randn(batch, c.n_head, seq_len, c.n_embd // c.n_head, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad_out = torch.randn_like(q)
    attention = best_time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad_out), device)
    return seconds + c.n_layer * attention


def orthogonalisation_seconds(muon, device):
    """Muon's Newton–Schulz iterations over every matrix it optimizes, as its step runs them
    (float32 on CPU, torch's bfloat16 elsewhere)."""
    newton_schulz = muon.newton_schulz()
    group = muon.param_groups[0]
    seconds = 0.0
    for shape, count in Counter(p.shape for p in group["params"]).items():
        grad = torch.randn(shape, device=device)
        seconds += count * best_time(lambda: newton_schulz(grad, group["ns_coefficients"], group["ns_steps"], group["eps"]), device)
    return seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--device-batch", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--compile", type=int, choices=[0, 1], default=0)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (the first one compiles)")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--floor", action="store_true", help="also time the step's matmuls and attention alone (see above)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(device_type())
    configure(device)
    if device.type == "cpu":
        keep_freed_memory()  # as the training stages do (through init_distributed)
    torch.manual_seed(0)
    model = GPT(config_from_depth(args.depth, args.vocab, args.seq_len, head_dim=args.head_dim)).to(device)
    step_tokens = args.grad_accum * args.device_batch * args.seq_len
    optimizers = build_optimizers(model, Schedule(steps=1))
    muon = next(opt for opt in optimizers if isinstance(opt, torch.optim.Muon))
    train_model = torch.compile(model) if args.compile else model
    tokens = torch.randint(0, args.vocab, (args.device_batch, args.seq_len + 1), device=device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    c = model.config
    print(f"device {device} ({torch.get_num_threads()} threads) | depth {args.depth} width {c.n_embd} heads {c.n_head} vocab {args.vocab} | "
          f"params {model.num_params() / 1e6:.1f}M | {model.flops_per_token() / 1e6:.1f} MFLOP/token | seq {args.seq_len} batch {args.device_batch} "
          f"× {args.grad_accum} micro-batches | compile {bool(args.compile)}")

    def step():
        """One optimizer step; returns the seconds its optimizers took."""
        for _ in range(args.grad_accum):
            with autocast(device):
                loss = train_model(inputs, targets)
            (loss / args.grad_accum).backward()
        loss.item()
        start = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for i in range(args.warmup):
        start = time.perf_counter()
        step()
        print(f"warm-up step {i + 1}: {time.perf_counter() - start:.1f}s")
    times, cpu_times, optimizer_times = [], [], []
    for _ in range(args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        optimizer_times.append(step())
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    per_step = sum(times) / len(times)
    tok_s = step_tokens / per_step
    peak = peak_flops(device)
    mfu = f"{100 * model.flops_per_token() * tok_s / peak:.1f}%" if peak else "n/a (peak FLOP/s unknown for this device)"
    print(f"{per_step:.3f}s/step (best {min(times):.3f}s) | {tok_s:,.0f} tokens/s (best {step_tokens / min(times):,.0f}) | MFU {mfu} | "
          f"optimizers {sum(optimizer_times) / len(optimizer_times):.3f}s of each step")
    if args.floor:
        floor = args.grad_accum * micro_batch_floor(model, args.device_batch * args.seq_len, args.device_batch, args.seq_len, device)
        floor += orthogonalisation_seconds(muon, device)
        print(f"kernel floor: matmuls, attention and Muon's orthogonalisation alone take {floor:.3f}s/step = at most "
              f"{step_tokens / floor:,.0f} tokens/s (this step reaches {100 * floor / per_step:.0f}% of it)")
    if device.type == "cpu":
        # On a shared machine wall time measures the neighbours too; CPU time per step does much
        # less so (exactly so with one thread, where no thread waits for another).
        cpu_per_step = sum(cpu_times) / len(cpu_times)
        print(f"CPU time {cpu_per_step:.3f}s/step = {step_tokens / cpu_per_step:,.0f} tokens per CPU-second")


if __name__ == "__main__":
    main()
