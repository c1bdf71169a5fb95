"""Training throughput of the GPT in each precision and recipe: tokens/s and MFU of full optimizer
steps (forward, backward, Muon + AdamW) on random tokens, after warm-up, on the current device, with
fp32 and bf16 (snakechat.model.precision) and the nanochat-2025-11 and nanochat-2026-07 models
(snakechat.model.recipes) at the same depth measured in the same invocation and compared as ratios.

    python bench/train_throughput.py --depth 4 --seq-len 512 --device-batch 8 --vocab 32768 --floor
    python bench/train_throughput.py --depth 4 --seq-len 512 --device-batch 8 --vocab 8192 --grad-accum 8
    python bench/train_throughput.py --depth 20 --seq-len 2048 --device-batch 32 --vocab 65536 --compile 1 --precision bf16  # one GPU

Prints the model size, then per precision tokens/s and MFU (where the device's peak FLOP/s is
known) of the timed steps, the optimizers' share of a step, and on CPU the tokens per CPU-second;
then each run's speed relative to the first, and each 2026 run's relative to the 2025 run of its precision. The precisions' steps are timed in turns (one
step of each, then the next round), so a shared machine's load falls on all of them alike. Random
tokens leave data loading out. Each precision trains its own copy of the same initial model.

A step is `--grad-accum` micro-batches of forward + backward, then one optimizer step, as in
training, where the total batch (2^17 tokens at depth 4) is many micro-batches: the optimizers'
cost per token shrinks with the accumulation, and at 1 it is paid on every micro-batch.

`--floor` also times, on their own and in each precision's dtype, the kernels a step cannot do
without: every matmul of the forward and backward (each weight's three products, at this batch's
shapes), attention's forward and backward, and Muon's Newton–Schulz orthogonalisation of every
hidden matrix. Their sum bounds tokens/s from above on this device, whatever the implementation:
the fraction of it a step reaches is the overhead left to win.

Measured with torch 2.13 CPU, seq 512, batch 8, --grad-accum 1, eager, 2026-12-02, both
precisions in one invocation (`--floor`, 5 timed steps after 2 warm-up steps, the defaults):

On a 2-core Intel Xeon with AMX and AVX512-BF16 (bf16 native, so `auto` trains in bf16):

| model | fp32 tok/s (% of its floor) | bf16 tok/s (% of its floor) | bf16 / fp32 tok/s | floors' ratio |
|---|---|---|---|---|
| d4, vocab 32k | 2,210 (77%) | 4,818 (56%) | 2.18× | 2.99× |
| d4, vocab 8k | 4,152 (70%) | 8,083 (37%) | 1.95× | 3.73× |
| d6, vocab 32k | 1,131 (77%) | 2,739 (51%) | 2.42× | 3.69× |

bf16 trains 2–2.4× faster, and its floor is 3–3.7× higher than fp32's. What keeps a bf16 step at
37–56% of its floor is the elementwise work around the kernels (norms, rotary, relu², autocast's
casts, the head's per-row softmax in float32), which costs about the same CPU time in either
precision (0.6–1.5 CPU-s per step here) and is a larger share once the matmuls are 3–4× faster;
torch.compile fuses part of it (`base_train --compile`). The MLP's fused relu² (gpt.ReluSquared)
took 11% off a bf16 and 6% off an fp32 d4/8k forward + backward. The figures are one run each
on a shared VM; the floors themselves moved by up to 25% between two runs, the ratios by 0.1–0.2.

On a 2-core AMD EPYC with AVX2 only (no AVX512-BF16, no AMX), where bf16 is emulated
(`--depth 4 --vocab 32768 --floor --steps 3 --warmup 1`):

| model | fp32 tok/s (% of its floor) | bf16 tok/s | bf16 / fp32 |
|---|---|---|---|
| d4, vocab 32k | 1,305 (79%: floor 837 tok per CPU-s, the step 663) | 27 (Muon alone 9.9 s of a 151 s step) | 0.021 |

There bf16 is 48× slower than fp32, which is why `--precision auto` trains in fp32 on such a CPU.

The two recipes at depth 4 (fp32, `--threads 1 --steps 3 --warmup 1`, tokens per CPU-second, the
2-core AMD EPYC (AVX2), a busy machine, 2026-12-06):

| shape | nanochat-2025-11 | nanochat-2026-07 | 2026 / 2025 |
|---|---|---|---|
| seq 256, batch 16, vocab 4k, head_dim 64 (tiny's) | 1,866 | 1,387 | 0.74× |
| seq 512, batch 4, vocab 8k, head_dim 64 | 1,315 | 952 | 0.72× |

The gap is the head: the 2026 model computes its loss as the reference does (15·tanh(z/15), then
cross-entropy, bit for bit), while the 2025 model's CPU HeadLoss uses the sigmoid form in one
buffer; at N = 2048, C = 256, V = 8192 those take 0.91 and 0.39 CPU-s per forward + backward, the
whole difference between the two models' steps (1.72 and 1.21 CPU-s). The sliding windows cost
nothing measurable here (all-L windows: 1.71 CPU-s).
"""

import argparse
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from snakechat.runtime.common import device_type, keep_freed_memory
from snakechat.model import recipes
from snakechat.train.optim import Schedule, build_optimizers
from snakechat.model.precision import DTYPES, SETTINGS, autocast, configure, resolve
from snakechat.model.sizing import config_from_depth
from snakechat.train.trainer import peak_flops


def best_time(fn, device, repeats=3):
    """The shortest of `repeats` timed calls after one untimed: wall seconds on GPU, this
    process's CPU seconds on CPU (what a shared machine's load disturbs least)."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time

    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()
    times = []
    for _ in range(repeats):
        start = clock()
        run()
        times.append(clock() - start)
    return min(times)


def micro_batch_floor(model, tokens, batch, seq_len, device, dtype):
    """Seconds per micro-batch of the matmuls (forward, input grad, weight grad of every linear
    layer) and of attention forward + backward, each timed alone at this micro-batch's shapes, in `dtype`."""
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
    (in its precision: torch's bf16 iteration or the float32 one)."""
    newton_schulz = muon.newton_schulz()
    group = muon.param_groups[0]
    seconds = 0.0
    for shape, count in Counter(p.shape for p in group["params"]).items():
        grad = torch.randn(shape, device=device)
        seconds += count * best_time(lambda: newton_schulz(grad, group["ns_coefficients"], group["ns_steps"], group["eps"]), device)
    return seconds


@dataclass
class Run:
    """One (recipe, precision)'s model, optimizers and timings."""

    recipe: str
    precision: str
    model: torch.nn.Module
    optimizers: list
    train_model: object
    times: list = field(default_factory=list)
    cpu_times: list = field(default_factory=list)
    optimizer_times: list = field(default_factory=list)

    @property
    def label(self):
        return f"{self.recipe} {self.precision}"

    @property
    def muon(self):
        return next(opt for opt in self.optimizers if isinstance(opt, torch.optim.Muon))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--device-batch", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--precision", nargs="+", choices=SETTINGS, default=["fp32", "bf16"], help="precisions to compare (the first is the baseline)")
    p.add_argument("--recipe", nargs="+", choices=recipes.RECIPES, default=list(recipes.RECIPES), help="models to compare at this depth")
    p.add_argument("--compile", type=int, choices=[0, 1], default=0)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (the first one compiles)")
    p.add_argument("--steps", type=int, default=5, help="timed steps of each precision")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--floor", action="store_true", help="also time the step's matmuls, attention and orthogonalisation alone (see above)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(device_type())
    configure(device)
    if device.type == "cpu":
        keep_freed_memory()  # as the training stages do (through init_distributed)
    runs = []
    for recipe in args.recipe:
        for setting in args.precision:
            precision = resolve(setting, device)
            torch.manual_seed(0)
            model = recipes.build(config_from_depth(args.depth, args.vocab, args.seq_len, head_dim=args.head_dim, recipe=recipe)).to(device)
            optimizers = build_optimizers(model, Schedule(steps=1), precision)
            runs.append(Run(recipe, precision, model, optimizers, torch.compile(model) if args.compile else model))
    step_tokens = args.grad_accum * args.device_batch * args.seq_len
    tokens = torch.randint(0, args.vocab, (args.device_batch, args.seq_len + 1), device=device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    model = runs[0].model
    c = model.config
    print(f"device {device} ({torch.get_num_threads()} threads) | depth {args.depth} width {c.n_embd} heads {c.n_head} vocab {args.vocab} | "
          f"params {model.num_params() / 1e6:.1f}M | {model.flops_per_token() / 1e6:.1f} MFLOP/token | seq {args.seq_len} batch {args.device_batch} "
          f"× {args.grad_accum} micro-batches | compile {bool(args.compile)} | runs {', '.join(r.label for r in runs)}")
    for run in runs[1:]:
        if run.recipe != runs[0].recipe and run.precision == runs[0].precision:
            print(f"{run.recipe}: params {run.model.num_params() / 1e6:.1f}M | {run.model.flops_per_token() / 1e6:.1f} MFLOP/token")

    def step(run):
        """One optimizer step; returns the seconds its optimizers took."""
        for _ in range(args.grad_accum):
            with autocast(device, run.precision):
                loss = run.train_model(inputs, targets)
            (loss / args.grad_accum).backward()
        loss.item()
        start = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
        for opt in run.optimizers:
            opt.step()
        run.model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for run in runs:
        for i in range(args.warmup):
            start = time.perf_counter()
            step(run)
            print(f"{run.label} warm-up step {i + 1}: {time.perf_counter() - start:.1f}s")
    for _ in range(args.steps):
        for run in runs:  # in turns, so that the machine's load falls on every run alike
            start, cpu_start = time.perf_counter(), time.process_time()
            run.optimizer_times.append(step(run))
            run.times.append(time.perf_counter() - start)
            run.cpu_times.append(time.process_time() - cpu_start)

    peak = peak_flops(device)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    rates, floors = [], []
    for run in runs:
        per_step = mean(run.times)
        tok_s = step_tokens / per_step
        rates.append(tok_s)
        mfu = f"{100 * run.model.flops_per_token() * tok_s / peak:.1f}%" if peak else "n/a"
        line = (f"{run.label}: {per_step:.3f}s/step (best {min(run.times):.3f}s) | {tok_s:,.0f} tokens/s (best {step_tokens / min(run.times):,.0f}) | "
                f"MFU {mfu} | optimizers {mean(run.optimizer_times):.3f}s of each step")
        if device.type == "cpu":
            # On a shared machine wall time measures the neighbours too; CPU time per step does much
            # less so (exactly so with one thread, where no thread waits for another).
            line += f" | {step_tokens / mean(run.cpu_times):,.0f} tokens per CPU-second"
        print(line)
    if args.floor:
        unit = "s" if device.type == "cuda" else "CPU-s"  # on CPU the floor and the step compare in CPU time
        for run in runs:
            floor = args.grad_accum * micro_batch_floor(run.model, args.device_batch * args.seq_len, args.device_batch, args.seq_len, device, DTYPES[run.precision])
            floor += orthogonalisation_seconds(run.muon, device)
            floors.append(step_tokens / floor)
            step_seconds = mean(run.times if device.type == "cuda" else run.cpu_times)
            print(f"{run.label} kernel floor: matmuls, attention and Muon's orthogonalisation alone take {floor:.3f} {unit}/step = at most "
                  f"{step_tokens / floor:,.0f} tokens per {unit} (the step's {step_tokens / step_seconds:,.0f} reach {100 * floor / step_seconds:.0f}% of it)")
    for i, run in enumerate(runs[1:], 1):
        print(f"{run.label} / {runs[0].label}: {rates[i] / rates[0]:.2f}× tokens/s" + (f", {floors[i] / floors[0]:.2f}× kernel floor" if floors else ""))
    for i, run in enumerate(runs):
        base = next((j for j, r in enumerate(runs) if r.recipe == recipes.NANOCHAT_2025 and r.precision == run.precision), None)
        if run.recipe != recipes.NANOCHAT_2025 and base is not None and base != 0:
            print(f"{run.label} / {runs[base].label}: {rates[i] / rates[base]:.2f}× tokens/s")


if __name__ == "__main__":
    main()
