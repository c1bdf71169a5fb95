"""The prepared GPU check: one command that measures what only a GPU shows, within a time budget.

    python bench/gpu_check.py                          # on a CUDA machine: 8 minutes, writes gpu_check.json
    python bench/gpu_check.py --budget-s 300 --out $OUT/gpu_check.json
    python bench/gpu_check.py --cpu                    # the same code paths at tiny shapes, in seconds (the tests run it)

Parts, in order (each runs in a child process of its own session, killed with everything it
started when the budget runs out, so nothing is left behind; a part that no longer fits the budget
is skipped with a note, and the JSON is written whatever happened):

- `env`: GPU name, memory, driver, CUDA and torch versions.
- `train` (per recipe): d20 at sequence 2048 in bf16 under torch.compile, attention through SDPA's
  flash kernel, at the largest device batch that fits (powers of two, tried eagerly; an OOM ends
  the search): tokens/s, MFU against the GPU's dense bf16 peak (the table in
  snakechat.train.trainer, looked up by device name), peak memory, compile time, and the share of
  a step the optimizers take.
- `max_depth` (per recipe): the largest depth whose eager step (forward, backward, optimizers) fits
  at device batch 1, sequence 2048.
- `precision`: a small model trained 20 steps from one seed on the same batches in fp32 and in bf16
  (float32 master weights): both loss curves and their largest difference.
- `decode` (per recipe): the KV-cache engine's decode tokens/s at batch 1 and 32 for d20-sized random
  weights (prefill once, copy the cache to every row, one token per row per step), bf16.

No data, no tokenizer training, no downloads: random tokens and freshly initialised weights. It
installs nothing; the machine needs a CUDA build of torch and this project (`pip install -e .`).
docs/gpu.md has the command for a lent GPU machine and the table of measured figures.
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from snakechat.model import recipes
from snakechat.model.engine import Engine, sample_next
from snakechat.model.precision import autocast, configure, for_inference
from snakechat.model.sizing import config_from_depth
from snakechat.runtime.common import write_json_atomic
from snakechat.train.optim import Schedule, build_optimizers
from snakechat.train.schedules2026 import SCALAR_LR, ChatSchedule2026
from snakechat.train.trainer import peak_flops

RECIPES = recipes.RECIPES
MIN_PART_S = 5  # a part is not started with less time than this left

# The shapes of a run: what the GPU measures, and the tiny ones the CPU mode runs the same code at
# (compiled by dynamo alone there: inductor's CPU code generation would take minutes of the seconds
# the test suite can spend, and it is torch's code, not this script's).
SHAPES = {
    "cuda": dict(compile_backend="inductor", depth=20, seq=2048, vocab={recipes.NANOCHAT_2025: 65536, recipes.NANOCHAT_2026: 32768}, max_batch=128, depths=(20, 24, 26, 28, 32, 36, 40, 48, 56, 64), steps=5,
                 small=dict(depth=4, seq=512, vocab=32768, batch=16), prompt=16, new_tokens=64, decode_rows=(1, 32)),
    "cpu": dict(compile_backend="eager", depth=2, seq=64, vocab={recipe: 512 for recipe in recipes.RECIPES}, max_batch=4, depths=(1, 2, 3), steps=2,
                small=dict(depth=1, seq=32, vocab=256, batch=2), prompt=8, new_tokens=8, decode_rows=(1, 32)),
}


def build(recipe, depth, vocab, seq, device, precision="bf16"):
    """A freshly initialised model of `recipe` at `depth` (nanochat's shape rule: width 64·depth in
    heads of 128), and its recipe's optimizers (float32 state; Muon's orthogonalisation in `precision`)."""
    shape = config_from_depth(depth, vocab, seq)
    config = recipes.make_config(recipe, sequence_len=seq, vocab_size=vocab, n_layer=depth, n_head=shape.n_head,
                                 n_kv_head=shape.n_kv_head, n_embd=shape.n_embd)
    torch.manual_seed(0)
    with torch.device(device):
        model = recipes.build(config)
    model.init_weights()
    schedule = ChatSchedule2026(steps=1, scalar_lr=SCALAR_LR) if recipe == recipes.NANOCHAT_2026 else Schedule(steps=1)
    return model, build_optimizers(model, schedule, precision)


def attention_kernels(recipe, device):
    """SDPA restricted to its flash kernel on CUDA (what the check measures; a windowed layer's masked
    attention, which flash cannot take, may use the memory-efficient kernel); the default choice on CPU."""
    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = [SDPBackend.FLASH_ATTENTION] + ([SDPBackend.EFFICIENT_ATTENTION] if recipe == recipes.NANOCHAT_2026 else [])
    return sdpa_kernel(kernels)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(recipe, model, forward, optimizers, batch, seq, vocab, device):
    """One optimizer step on random tokens; returns (loss, seconds the optimizers took)."""
    tokens = torch.randint(0, vocab, (batch, seq + 1), device=device)
    with autocast(device, "bf16"), attention_kernels(recipe, device):
        loss = forward(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    sync(device)
    start = time.perf_counter()
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    sync(device)
    return loss.item(), time.perf_counter() - start


def fits(run, device):
    """Whether `run()` completes without running out of device memory."""
    try:
        run()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(recipe, shape, device):
    """The largest power-of-two device batch whose eager step fits (up to the shape's cap), and the tries."""
    tried, best = {}, 0
    batch = 1
    while batch <= shape["max_batch"]:
        def step():
            model, optimizers = build(recipe, shape["depth"], shape["vocab"][recipe], shape["seq"], device)
            train_step(recipe, model, model, optimizers, batch, shape["seq"], shape["vocab"][recipe], device)

        tried[batch] = fits(step, device)
        if not tried[batch]:
            break
        best, batch = batch, batch * 2
    return best, tried


def part_train(recipe, shape, device):
    best, tried = largest_batch(recipe, shape, device)
    if not best:
        return {"status": "failed", "note": "not even device batch 1 fits", "tried": tried}
    vocab = shape["vocab"][recipe]
    model, optimizers = build(recipe, shape["depth"], vocab, shape["seq"], device)
    compiled = torch.compile(model, dynamic=False, backend=shape["compile_backend"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train_step(recipe, model, compiled, optimizers, best, shape["seq"], vocab, device)
    first = time.perf_counter() - start
    train_step(recipe, model, compiled, optimizers, best, shape["seq"], vocab, device)  # warm-up
    times, opt_times = [], []
    for _ in range(shape["steps"]):
        start = time.perf_counter()
        _, opt_s = train_step(recipe, model, compiled, optimizers, best, shape["seq"], vocab, device)
        times.append(time.perf_counter() - start)
        opt_times.append(opt_s)
    step_s = sorted(times)[len(times) // 2]
    tokens_per_s = best * shape["seq"] / step_s
    peak = peak_flops(device)
    flops_per_token = model.flops_per_token()
    return {
        "status": "ok", "depth": shape["depth"], "sequence_len": shape["seq"], "vocab": vocab,
        "params": model.num_params(), "device_batch": best, "batches_tried": tried, "compile_backend": shape["compile_backend"],
        "attention": ("SDPA flash" + (" (+ memory-efficient for windowed layers)" if recipe == recipes.NANOCHAT_2026 else "")) if device.type == "cuda" else "SDPA (CPU default)",
        "step_s": step_s, "tokens_per_s": tokens_per_s, "flops_per_token": flops_per_token,
        "mfu": flops_per_token * tokens_per_s / peak if peak else None, "peak_flops": peak,
        "compile_s": first - step_s, "optimizer_share": sum(opt_times) / sum(times),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


def part_max_depth(recipe, shape, device):
    tried, best = {}, None
    for depth in shape["depths"]:
        def step():
            model, optimizers = build(recipe, depth, shape["vocab"][recipe], shape["seq"], device)
            train_step(recipe, model, model, optimizers, 1, shape["seq"], shape["vocab"][recipe], device)

        tried[depth] = fits(step, device)
        if not tried[depth]:
            break
        best = depth
    last = shape["depths"][-1]
    return {"status": "ok", "largest_depth": best, "tried": tried, "sequence_len": shape["seq"],
            "note": f"every tried depth fits (the list ends at {last})" if best == last else "the next depth ran out of memory"}


def part_precision(shape, device):
    small = shape["small"]
    # token frequencies ∝ 1/rank, as in text, so that 20 steps have something to learn
    generator = torch.Generator().manual_seed(1)
    zipf = 1.0 / torch.arange(1, small["vocab"] + 1, dtype=torch.float64)
    shape = (small["batch"], small["seq"] + 1)
    batches = [torch.multinomial(zipf, shape[0] * shape[1], replacement=True, generator=generator).view(shape).to(device) for _ in range(20)]
    curves = {}
    for precision in ("fp32", "bf16"):
        model, optimizers = build(recipes.DEFAULT, small["depth"], small["vocab"], small["seq"], device, precision)
        losses = []
        for tokens in batches:
            with autocast(device, precision):
                loss = model(tokens[:, :-1], tokens[:, 1:])
            loss.backward()
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
            losses.append(loss.item())
        curves[precision] = losses
    diffs = [abs(a - b) for a, b in zip(curves["fp32"], curves["bf16"])]
    return {"status": "ok", "depth": small["depth"], "steps": len(batches), "loss_fp32": curves["fp32"], "loss_bf16": curves["bf16"],
            "max_abs_diff": max(diffs), "final_rel_diff": diffs[-1] / curves["fp32"][-1]}


@torch.no_grad()
def decode_rate(model, rows, prompt_len, new_tokens, vocab, device):
    """Tokens/s of the engine's cached decoding: prefill one row, copy its cache to `rows` rows, then
    one sampled token per row per step (as Engine.generate runs it, without the calculator's
    bookkeeping, which needs a trained tokenizer)."""
    engine = Engine(model, tokenizer=None, precision="bf16")
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    prompt = torch.randint(0, vocab, (1, prompt_len), device=device)
    with autocast(device, "bf16"):
        prefill = engine._new_cache(1, prompt_len)
        logits = engine._forward(prompt, prefill).expand(rows, -1)
        cache = prefill.expand(rows, capacity=prompt_len + new_tokens)
        sync(device)
        start = time.perf_counter()
        for _ in range(new_tokens):
            token = sample_next(logits, generator, temperature=1.0)
            logits = engine._forward(token.unsqueeze(1), cache)
        sync(device)
    return rows * new_tokens / (time.perf_counter() - start)


def part_decode(recipe, shape, device):
    vocab = shape["vocab"][recipe]
    model, _ = build(recipe, shape["depth"], vocab, shape["seq"], device)
    model = for_inference(model, "bf16")
    decode_rate(model, 1, shape["prompt"], 2, vocab, device)  # warm-up
    rates = {str(rows): decode_rate(model, rows, shape["prompt"], shape["new_tokens"], vocab, device) for rows in shape["decode_rows"]}
    return {"status": "ok", "depth": shape["depth"], "params": model.num_params(), "prompt_tokens": shape["prompt"],
            "new_tokens": shape["new_tokens"], "tokens_per_s": rates}


def env_info(device):
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(), "device": device.type,
            "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=props.total_memory / 2**30, capability=f"{props.major}.{props.minor}",
                    gpu_count=torch.cuda.device_count(), peak_bf16_flops=peak_flops(device))
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = None
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return {"status": "ok", **info}


def run_part(name, recipe, shape, device):
    configure(device)
    if name == "env":
        return env_info(device)
    if name == "train":
        return part_train(recipe, shape, device)
    if name == "max_depth":
        return part_max_depth(recipe, shape, device)
    if name == "precision":
        return part_precision(shape, device)
    if name == "decode":
        return part_decode(recipe, shape, device)
    raise ValueError(f"unknown part {name!r}")


def plan(recipes):
    """The parts in the order they run, each (key, part, recipe or None)."""
    parts = [("env", "env", None)]
    parts += [(f"train:{r}", "train", r) for r in recipes]
    parts += [("precision", "precision", None)]
    parts += [(f"decode:{r}", "decode", r) for r in recipes]
    parts += [(f"max_depth:{r}", "max_depth", r) for r in recipes]
    return parts


class Child:
    """A part running in its own session; `stop()` kills the session's every process."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def wait(self, timeout):
        try:
            out, err = self.proc.communicate(timeout=timeout)
            return self.proc.returncode, out, err
        except subprocess.TimeoutExpired:
            self.stop()
            out, err = self.proc.communicate()
            return None, out, err

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_all(args, device):
    deadline = time.monotonic() + args.budget_s
    results = {"mode": "cpu" if args.cpu else "cuda", "budget_s": args.budget_s, "parts": {}}
    current = {}

    def on_signal(signum, frame):
        if "child" in current:
            current["child"].stop()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for key, part, recipe in plan(args.recipes):
        left = deadline - time.monotonic()
        if left < MIN_PART_S:
            results["parts"][key] = {"status": "skipped", "note": f"the budget of {args.budget_s:g}s ran out before this part"}
            continue
        argv = [sys.executable, __file__, "--part", part, "--device", device.type, "--tag", args.tag]
        if recipe:
            argv += ["--recipe", recipe]
        started = time.monotonic()
        current["child"] = child = Child(argv)
        code, out, err = child.wait(left)
        del current["child"]
        seconds = time.monotonic() - started
        if code is None:
            result = {"status": "timed out", "note": f"killed after {seconds:.0f}s when the budget ran out"}
        elif code != 0:
            result = {"status": "failed", "note": (err.strip().splitlines() or ["no output"])[-1]}
        else:
            result = json.loads(out.strip().splitlines()[-1])
        result["seconds"] = round(seconds, 1)
        results["parts"][key] = result
        print(summary_line(key, result), flush=True)
    return results


def summary_line(key, r):
    if r["status"] != "ok":
        return f"{key:32s} {r['status']}: {r.get('note', '')}"
    if key.startswith("train"):
        mfu = f"MFU {r['mfu']:.1%}" if r["mfu"] is not None else "MFU n/a"
        memory = f"peak {r['peak_memory_gb']:.1f} GB" if r["peak_memory_gb"] is not None else ""
        return (f"{key:32s} d{r['depth']} batch {r['device_batch']} x {r['sequence_len']}: {r['tokens_per_s']:,.0f} tok/s, {mfu}, "
                f"{memory}, compile {r['compile_s']:.0f}s, optimizers {r['optimizer_share']:.0%} of a step")
    if key.startswith("max_depth"):
        return f"{key:32s} largest depth at batch 1: d{r['largest_depth']} (tried {r['tried']})"
    if key == "precision":
        return f"{key:32s} final loss fp32 {r['loss_fp32'][-1]:.4f} bf16 {r['loss_bf16'][-1]:.4f}, max |diff| {r['max_abs_diff']:.4f}"
    if key.startswith("decode"):
        rates = ", ".join(f"batch {b}: {v:,.0f} tok/s" for b, v in r["tokens_per_s"].items())
        return f"{key:32s} d{r['depth']} {rates}"
    return f"{key:32s} " + ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("status", "seconds"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=480, help="total seconds for all parts (default 8 minutes)")
    p.add_argument("--out", default="gpu_check.json", help="where the JSON goes")
    p.add_argument("--cpu", action="store_true", help="run on the CPU at tiny shapes (the test suite's mode)")
    p.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    p.add_argument("--part", help=argparse.SUPPRESS)  # a child runs one part and prints its JSON
    p.add_argument("--device", help=argparse.SUPPRESS)
    p.add_argument("--recipe", help=argparse.SUPPRESS)
    p.add_argument("--tag", default=f"gpu-check-{os.getpid()}", help="marks this run's child processes (for finding them)")
    args = p.parse_args()
    if args.part:
        device = torch.device(args.device)
        if device.type == "cpu":
            torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        print(json.dumps(run_part(args.part, args.recipe, SHAPES[device.type], device)))
        return
    if args.budget_s <= 0:
        p.error(f"--budget-s must be positive, got {args.budget_s}")
    if not args.cpu and not torch.cuda.is_available():
        p.error("no CUDA device here (torch sees none): run it on a GPU machine with a CUDA build of torch, or use --cpu")
    device = torch.device("cpu" if args.cpu else "cuda")
    started = time.monotonic()
    results = run_all(args, device)
    results["wall_s"] = round(time.monotonic() - started, 1)
    write_json_atomic(Path(args.out), results)
    print(f"wrote {args.out} ({results['wall_s']:.0f}s)")


if __name__ == "__main__":
    main()
