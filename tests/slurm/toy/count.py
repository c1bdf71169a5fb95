"""A stand-in training job: counts steps, saves its state on SIGUSR1/SIGTERM and exits with
128 + signal; a rerun resumes from the saved step. Every process takes part (gloo all_reduce)."""

import argparse
import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist

from snakechat.common import init_distributed, write_json_atomic

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, required=True)
p.add_argument("--state", type=Path, required=True)
p.add_argument("--out", type=Path, required=True)
args = p.parse_args()

got = {"signum": 0}
for sig in (signal.SIGUSR1, signal.SIGTERM):
    signal.signal(sig, lambda signum, frame: got.update(signum=signum))

rank, _, world_size, device = init_distributed()
state_file = args.state / "state.json"
start = json.loads(state_file.read_text())["step"] if state_file.exists() else 0
if rank == 0:
    print(f"resumed from step {start}" if start else "starting at step 0", flush=True)
for step in range(start + 1, args.steps + 1):
    time.sleep(0.25)
    flag = torch.tensor([got["signum"]])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if rank == 0:
        print(f"step {step} job {os.environ.get('SLURM_JOB_ID')}", flush=True)
    if flag.item():
        if rank == 0:
            write_json_atomic(state_file, {"step": step})
            print(f"signal {flag.item()}: saved state at step {step}", flush=True)
        dist.barrier()
        raise SystemExit(128 + int(flag.item()))
if rank == 0:
    write_json_atomic(args.out, {"steps": args.steps, "resumed_from": start, "world_size": world_size})
dist.destroy_process_group()
