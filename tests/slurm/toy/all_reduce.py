"""Every process adds rank + 1 with an all_reduce and shares its host name; rank 0 writes what it
saw as JSON to argv[1]."""

import json
import os
import socket
import sys

import torch
import torch.distributed as dist

from snakechat.runtime.common import init_distributed

rank, local_rank, world_size, device = init_distributed()
total = torch.tensor([rank + 1.0], device=device)
hosts = [socket.gethostname()] * world_size
if dist.is_initialized():
    dist.all_reduce(total)
    dist.all_gather_object(hosts, socket.gethostname())
if rank == 0:
    seen = {
        "world_size": world_size,
        "sum": total.item(),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "host": socket.gethostname(),
        "rank_hosts": hosts,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gloo_socket_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
    }
    with open(sys.argv[1], "w") as f:
        json.dump(seen, f)
if dist.is_initialized():
    dist.destroy_process_group()
