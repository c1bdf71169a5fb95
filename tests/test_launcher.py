"""The launch prefix a GPU rule starts its module with: one node, several nodes, CPU/gloo."""

import shlex
import signal
import subprocess
import sys

import pytest

from snakechat import launcher


def test_one_process_is_plain_python():
    assert launcher.prefix(gpus=0, nodes=1, cpu_processes=1) == "python"
    assert launcher.prefix(gpus=1) == "python"


def test_one_node_runs_one_process_per_gpu():
    assert launcher.prefix(gpus=8, nodes=1) == "torchrun --standalone --nproc_per_node=8"


def test_cpu_processes_when_no_gpu_is_requested():
    assert launcher.prefix(gpus=0, nodes=1, cpu_processes=2) == "torchrun --standalone --nproc_per_node=2"
    # GPUs, when requested, win over the CPU process count.
    assert launcher.prefix(gpus=4, nodes=1, cpu_processes=2) == "torchrun --standalone --nproc_per_node=4"


def test_several_nodes_start_one_torchrun_per_node_under_srun():
    cmd = launcher.prefix(gpus=8, nodes=4)
    args = shlex.split(cmd)
    assert args[:2] == ["srun", "--overlap"]
    assert "--nodes=4" in args and "--ntasks-per-node=1" in args
    # torchrun starts through a shell that ignores Slurm's warning signal, then execs it.
    shell = args.index("bash")
    assert args[shell + 1 : shell + 3] == ["-c", "trap '' USR1; exec \"$@\""]
    torchrun = args[shell + 4 :]
    assert torchrun[0] == "torchrun"
    assert "--nnodes=4" in torchrun and "--nproc_per_node=8" in torchrun
    assert "--rdzv_backend=c10d" in torchrun and "--rdzv_id=$SLURM_JOB_ID" in torchrun
    # The rendezvous host is the allocation's first node, resolved by the shell on that node.
    assert '--rdzv_endpoint=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):29500' in cmd


def test_several_nodes_without_gpus_use_cpu_processes_per_node():
    assert "--nproc_per_node=2" in launcher.prefix(gpus=0, nodes=2, cpu_processes=2)


@pytest.mark.parametrize("bad", [dict(nodes=0), dict(gpus=-1), dict(cpu_processes=0)])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="launch needs"):
        launcher.prefix(**bad)


def test_gpus_per_node_from_gpu_or_gres():
    assert launcher.gpus_per_node({"gpu": 8}) == 8
    assert launcher.gpus_per_node({"gres": "gpu:4"}) == 4
    assert launcher.gpus_per_node({"gres": "gpu:h100:8"}) == 8
    assert launcher.gpus_per_node({"gres": "shard:2"}) == 0
    assert launcher.gpus_per_node({}) == 0


def test_prefix_for_rule_resources(monkeypatch):
    monkeypatch.setattr(launcher, "local_gpu_count", lambda: 3)
    assert launcher.prefix_for({"gpu": 2}) == "torchrun --standalone --nproc_per_node=2"
    assert "--nnodes=2" in launcher.prefix_for({"gres": "gpu:8", "nodes": 2})
    # No GPU request (the local profile): the GPUs this machine has ...
    assert launcher.prefix_for({"gpu": 0}) == "torchrun --standalone --nproc_per_node=3"
    assert launcher.prefix_for({}) == "torchrun --standalone --nproc_per_node=3"
    # ... or, without any, the configured CPU processes.
    monkeypatch.setattr(launcher, "local_gpu_count", lambda: 0)
    assert launcher.prefix_for({"gpu": 0}) == "python"
    assert launcher.prefix_for({"gpu": 0}, cpu_processes=2) == "torchrun --standalone --nproc_per_node=2"


def _usr1_disposition_in(cmd):
    probe = "import signal; print(signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN)"
    return subprocess.run(cmd + [sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()


def test_shield_makes_the_exec_ed_program_ignore_the_warning_signal():
    args = shlex.split(launcher.multi_node(2, 8))
    shell = args.index("bash")
    assert _usr1_disposition_in(args[shell : shell + 4]) == "True"
    assert _usr1_disposition_in([]) == "False"


def test_ignoring_the_warning_signal_is_inherited_by_children():
    probe = "import signal; print(signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN)"
    code = f"from snakechat import launcher; import subprocess, sys; launcher.ignore_warning_signal(); subprocess.run([sys.executable, '-c', {probe!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True"
    assert signal.getsignal(signal.SIGUSR1) != signal.SIG_IGN


def test_local_gpu_count_from_nvidia_smi_within_visible_devices(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n" + "".join(f"echo 'GPU {i}: NVIDIA H100 (UUID: GPU-{i})'\n" for i in range(4)))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert launcher.local_gpu_count() == 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert launcher.local_gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launcher.local_gpu_count() == 0
    monkeypatch.setenv("PATH", "/nonexistent")
    assert launcher.local_gpu_count() == 0
