"""Small pieces every stage needs: atomic outputs, distributed set-up and reductions, device choice, rank-0 printing."""

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Readers never see a half-written output, and a crash leaves nothing where a later run
    would take it as done.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def umask():
    """The process's file-creation mask (outputs get the mode the user's umask gives)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path):
    """Yield an empty temporary directory beside `path`; it replaces `path` (a directory or
    nothing) only if the block succeeds. A reader sees the old directory or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700; outputs get the usual mode
        if path.is_dir():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def dist_info():
    """(rank, local_rank, world_size) from the torchrun environment, or (0, 0, 1) for plain python."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"])
    return 0, 0, 1


def is_master():
    return dist_info()[0] == 0


def print0(*args, **kwargs):
    if is_master():
        print(*args, **kwargs, flush=True)


def device_type(requested="auto"):
    """'cuda' when a GPU is really usable, else 'cpu'.

    Decided from torch.cuda.is_available(), never from CUDA_VISIBLE_DEVICES: Slurm sets that
    for GPUs that may be fake on a test cluster.
    """
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def keep_freed_memory():
    """Have glibc keep freed memory for reuse rather than hand it back to the OS.

    Every training step frees and re-allocates the same tens of MB of activations. By default
    glibc returns them above its trim threshold, and the next step page-faults them in again:
    18-24k faults and 0.05 s of system time a step at depth 4 (vocab 32k, 8 rows of 512; kept:
    1.5-2k and 0.02 s) on a 2-core VM. PyTorch caches
    freed memory itself on GPU but not on CPU; this is the CPU counterpart. Blocks of up to
    32 MB (glibc's largest mmap threshold) then come from the heap, which is never trimmed below
    1 GB. Returns False where libc has no mallopt (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30))


def init_distributed(requested_device="auto"):
    """Set up torch.distributed under torchrun (NCCL on GPU, gloo on CPU); a no-op for one process.
    On CPU, freed memory is kept for reuse (keep_freed_memory).

    Returns (rank, local_rank, world_size, device).
    """
    rank, local_rank, world_size = dist_info()
    kind = device_type(requested_device)
    if kind == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        keep_freed_memory()
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo", device_id=device if kind == "cuda" else None)
        if int(os.environ.get("LOCAL_WORLD_SIZE", world_size)) < world_size:
            # Several nodes: every rank says where it runs, so the job's log shows the nodes it spanned.
            print(f"rank {rank} of {world_size} on {socket.gethostname()}", flush=True)
    return rank, local_rank, world_size, device


def cleanup_distributed():
    if dist.is_initialized():
        dist.destroy_process_group()


def _reduce_device():
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce(values, op="sum"):
    """Element-wise sum, min or max of a list of numbers over all processes, as floats (float64 on
    the wire); the list itself for one process. Every process must call it with as many values."""
    if not dist.is_initialized():
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return t.tolist()


def all_reduce_tensor(tensor):
    """A tensor summed over all processes (in place where there are several), back on the CPU."""
    if dist.is_initialized():
        tensor = tensor.to(_reduce_device())
        dist.all_reduce(tensor)
    return tensor.cpu()


def gather(obj):
    """Every process's `obj` (picklable), in rank order, on every process."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
