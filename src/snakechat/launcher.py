"""Command-line prefixes that start a stage on the processes its rule was given.

`prefix(...)` returns what goes before `-m snakechat.<stage>` in a GPU rule's shell command:

- one process:            `python`
- several on one node:    `torchrun --standalone --nproc_per_node=G`
- several nodes (Slurm):  one torchrun per node under `srun`, meeting at a c10d rendezvous on
  the allocation's first host:
  `srun --overlap --nodes=N --ntasks-per-node=1 ... torchrun --nnodes=N --nproc_per_node=G
  --rdzv_backend=c10d --rdzv_endpoint=$(first host):29500 --rdzv_id=$SLURM_JOB_ID`

G is the rule's GPUs per node (its `gpu` resource, or the count in `gres: gpu:G`); a rule that asks
for none uses the GPUs this machine has (nvidia-smi), and on a machine without GPUs
the config's `launch.cpu_processes` CPU processes (gloo). Whether a process then uses NCCL or gloo
is decided inside it by torch.cuda.is_available() (snakechat.common.init_distributed).

Slurm's warning signal before the time limit (`--signal=USR1@...` in profiles/slurm) reaches
every process of a job step. `ignore_warning_signal()` makes Snakemake and the shells between it
and the training processes ignore it (children inherit that); the training processes install
their own handler, save their state and exit. The per-node processes `srun` starts get fresh
signal settings, so the multi-node prefix starts torchrun through a shell that ignores it again.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess

WARNING_SIGNAL = "USR1"
RENDEZVOUS_PORT = 29500


def prefix(gpus=0, nodes=1, cpu_processes=1):
    """The launch prefix for `gpus` GPUs per node on `nodes` nodes (0 GPUs: `cpu_processes` CPU processes)."""
    if nodes < 1 or gpus < 0 or cpu_processes < 1:
        raise ValueError(f"launch needs nodes >= 1, gpus >= 0, cpu_processes >= 1; got nodes={nodes}, gpus={gpus}, cpu_processes={cpu_processes}")
    nproc = gpus if gpus > 0 else cpu_processes
    if nodes > 1:
        return multi_node(nodes, nproc)
    if nproc == 1:
        return "python"
    return f"torchrun --standalone --nproc_per_node={nproc}"


def multi_node(nodes, nproc_per_node, port=RENDEZVOUS_PORT):
    """One torchrun per node of the Slurm allocation, started by srun from the first node.

    `--overlap` lets this step share the CPUs the Slurm plugin's own job step holds on the first
    node; `--kill-on-bad-exit` stops the other nodes when one fails.
    """
    first_host = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    shield = shlex.quote(f"trap '' {WARNING_SIGNAL}; exec \"$@\"")
    return (
        f"srun --overlap --nodes={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c {shield} torchrun "
        f"torchrun --nnodes={nodes} --nproc_per_node={nproc_per_node} --rdzv_backend=c10d "
        f"--rdzv_endpoint={first_host}:{port} --rdzv_id=$SLURM_JOB_ID"
    )


def prefix_for(resources, cpu_processes=1):
    """The prefix for a rule's resources: its GPUs per node and `nodes`. A rule that asks for no GPUs
    (`gpu=0`, the rules' own setting; profiles/slurm sets the count) uses the GPUs this machine has:
    all of them on a workstation, none on a laptop."""
    gpus = gpus_per_node(resources) or local_gpu_count()
    return prefix(gpus=gpus, nodes=int(resources.get("nodes", 1) or 1), cpu_processes=cpu_processes)


def gpus_per_node(resources):
    """GPUs per node a rule asked for: its `gpu` resource, else the count in a `gres` like `gpu:8` or `gpu:h100:8`."""
    gpu = int(resources.get("gpu", 0) or 0)
    if gpu:
        return gpu
    match = re.fullmatch(r"gpu(?::[A-Za-z0-9_.]+)?:(\d+)", str(resources.get("gres", "") or ""))
    return int(match.group(1)) if match else 0


def local_gpu_count():
    """GPUs on this machine per nvidia-smi (0 without it), no more than CUDA_VISIBLE_DEVICES names:
    what a GPU rule uses under the local profile."""
    if shutil.which("nvidia-smi") is None:
        return 0
    result = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True)
    count = sum(line.startswith("GPU ") for line in result.stdout.splitlines()) if result.returncode == 0 else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return count if visible is None else min(count, len([d for d in visible.split(",") if d.strip()]))


def ignore_warning_signal():
    signal.signal(getattr(signal, f"SIG{WARNING_SIGNAL}"), signal.SIG_IGN)
