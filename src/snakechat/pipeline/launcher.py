"""Command-line prefixes that start a stage on the processes its rule was given.

`prefix(...)` returns what goes before `-m snakechat.<stage>` in a GPU rule's shell command:

- one process:            `python`
- several on one node:    `torchrun --standalone --nproc_per_node=G`
- several nodes (Slurm):  one torchrun per node under `srun`:
  `env -u SLURM_JOB_NODELIST srun --overlap --nodes=N --ntasks=N --ntasks-per-node=1
  --kill-on-bad-exit=1 python -m snakechat.pipeline.launcher torchrun --nnodes=N --nproc_per_node=G`;
  on each node `python -m snakechat.pipeline.launcher` adds the c10d rendezvous (the allocation's first
  host, port 10000 + job id % 20000) and becomes torchrun

G is the rule's GPUs per node (its `gpu` resource, or the count in `gres: gpu:G`); a rule that asks
for none uses the GPUs this machine has (nvidia-smi), and on a machine without GPUs
the config's `launch.cpu_processes` CPU processes (gloo). Whether a process then uses NCCL or gloo
is decided inside it by torch.cuda.is_available() (snakechat.runtime.common.init_distributed).

Slurm's warning signal before the time limit (`--signal=USR1@...` in profiles/slurm) reaches
every process of a job step. `ignore_warning_signal()` makes Snakemake and the shells between it
and the training processes ignore it (children inherit that); the training processes install
their own handler, save their state and exit. The per-node processes `srun` starts get fresh
signal settings, so on each node `python -m snakechat.pipeline.launcher` (`node_main`) ignores it again
before it becomes torchrun.

    python -m snakechat.pipeline.launcher torchrun ARGS...   # per node, under srun: see node_main
"""

import argparse
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys

WARNING_SIGNAL = "USR1"
# The c10d rendezvous port: one per job, so that jobs sharing a first node do not meet in one
# store. Below Linux's ephemeral range (32768-60999), where the kernel picks client ports.
RENDEZVOUS_PORT_BASE = 10000
RENDEZVOUS_PORTS = 20000
# The network interface collectives use, unless the environment already names one.
INTERFACE_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


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


def multi_node(nodes, nproc_per_node):
    """One torchrun per node of the Slurm allocation, started by srun from the first node.

    Each node's task runs `python -m snakechat.pipeline.launcher`, which adds the c10d rendezvous on the
    allocation's first host (node_main) and becomes torchrun. `--overlap` lets this step share
    the CPUs the Slurm plugin's own job step holds on the first node; `--ntasks` overrides the one
    task that step's environment (SLURM_NTASKS) would pass on; `--kill-on-bad-exit` stops the
    other nodes when one fails. SLURM_JOB_NODELIST is dropped because the plugin starts its step
    with only SLURM_JOB_ID set, and there it names the step's one node: srun would then take the
    allocation for that node alone ("Only allocated 1 nodes asked for 2"). Without it srun asks
    the controller.
    """
    return (
        f"env -u SLURM_JOB_NODELIST srun --overlap --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 "
        f"python -m snakechat.pipeline.launcher torchrun --nnodes={nodes} --nproc_per_node={nproc_per_node}"
    )


def prefix_for(resources, cpu_processes=1):
    """The prefix for a rule's resources: its GPUs per node and `nodes`. A rule that asks for no GPUs
    (`gpu=0`, the rules' own setting; profiles/slurm sets the count) uses the GPUs this machine has:
    all of them on a workstation, none on a laptop."""
    per_node, nodes, _ = processes_of(resources, cpu_processes)
    return prefix(gpus=per_node, nodes=nodes, cpu_processes=cpu_processes)


def processes_of(resources, cpu_processes=1):
    """(processes per node, nodes, what gave that count) that `prefix_for` launches for a rule's resources."""
    nodes = int(resources.get("nodes", 1) or 1)
    if gpus := gpus_per_node(resources):
        return gpus, nodes, "GPUs per node (the rule's gpu or gres resource)"
    if gpus := local_gpu_count():
        return gpus, nodes, "GPUs of this machine (nvidia-smi)"
    return cpu_processes, nodes, "CPU processes (launch.cpu_processes; no GPU here)"


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


# --- on each node of a multi-node job ------------------------------------------------------------


def job_hosts():
    """The host names of this Slurm job's nodes, in order (`scontrol show hostnames`)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    if not nodelist:
        return []
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True).stdout
    return out.split()


def peer_of(hosts, me):
    """The node this one talks to first: the first host, or for the first host itself the second."""
    others = [h for h in hosts if h != me]
    if not others:
        return None
    return hosts[0] if hosts[0] != me else others[0]


def interface_towards(host):
    """(interface name, local IPv4 address) this machine reaches `host` through, by the kernel's route.

    Returns None where `host` does not resolve to IPv4, the route is the loopback, or no interface
    holds the address.
    """
    try:
        address = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 9))  # UDP: picks the route and source address, sends nothing
            local = probe.getsockname()[0]
    except OSError:
        return None
    if ipaddress.ip_address(local).is_loopback:
        return None
    for _, name in socket.if_nameindex():
        if interface_address(name) == local:
            return name, local
    return None


def interface_address(name):
    """The IPv4 address of interface `name` (SIOCGIFADDR), or None."""
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), siocgifaddr, struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def rendezvous_port(job_id):
    return RENDEZVOUS_PORT_BASE + int(job_id) % RENDEZVOUS_PORTS


def node_main(argv=None):
    """Run on every node by the multi-node prefix, then become the given torchrun command.

    Adds torchrun's c10d rendezvous: the allocation's first host, a port from the job id (the same
    on every node, different for jobs that share a first node), the job id as the run id. Ignores
    Slurm's warning signal (exec keeps that). Points gloo and NCCL at the network interface this
    node reaches the other nodes through, where GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME are unset
    (a hostname that resolves to a loopback or a management address would otherwise carry the
    collectives). Says on which host, node and interface it starts.
    """
    p = argparse.ArgumentParser(prog="python -m snakechat.pipeline.launcher", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs=argparse.REMAINDER, help="torchrun and its arguments, e.g. torchrun --nnodes=2 --nproc_per_node=8 -m snakechat.base_train ...")
    args = p.parse_args(argv)
    if not args.command or os.path.basename(args.command[0]) != "torchrun":
        p.error("give the torchrun command to run on this node")
    job_id = os.environ.get("SLURM_JOB_ID")
    hosts = job_hosts()
    if not job_id or not hosts:
        p.error("run under srun in a Slurm job (SLURM_JOB_ID and SLURM_JOB_NODELIST are needed)")
    ignore_warning_signal()
    me = os.environ.get("SLURMD_NODENAME") or socket.gethostname()  # the node's name as in the node list
    peer = peer_of(hosts, me)
    chosen = interface_towards(peer) if peer else None
    if chosen:
        for name in INTERFACE_VARIABLES:
            os.environ.setdefault(name, chosen[0])
    endpoint = f"{hosts[0]}:{rendezvous_port(job_id)}"
    command = [args.command[0], "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", f"--rdzv_id={job_id}", *args.command[1:]]
    where = f"interface {os.environ.get('GLOO_SOCKET_IFNAME', 'by hostname')}" + (f" ({chosen[1]}, towards {peer})" if chosen else "")
    print(f"launch: {me} is node {os.environ.get('SLURM_NODEID', '?')} of {len(hosts)}, rendezvous {endpoint}, {where}", file=sys.stderr, flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    node_main()
