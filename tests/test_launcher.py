"""The launch prefix a GPU rule starts its module with: one node, several nodes, CPU/gloo."""

import os
import shlex
import signal
import subprocess
import sys

import pytest

from snakechat.pipeline import launcher


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
    assert args[:3] == ["env", "-u", "SLURM_JOB_NODELIST"]
    assert args[3:5] == ["srun", "--overlap"]
    assert "--nodes=4" in args and "--ntasks=4" in args and "--ntasks-per-node=1" in args
    # On each node the launcher's node entry point becomes torchrun.
    node = args.index("python")
    assert args[node : node + 4] == ["python", "-m", "snakechat.pipeline.launcher", "torchrun"]
    torchrun = args[node + 3 :]
    assert "--nnodes=4" in torchrun and "--nproc_per_node=8" in torchrun


def fake_job(monkeypatch, tmp_path, nodelist, job_id, hosts):
    """SLURM_* of a job step and an `scontrol` on PATH that expands the node list to `hosts`."""
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\n" + "".join(f"echo {h}\n" for h in hosts))
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_NODELIST", nodelist)
    monkeypatch.setenv("SLURM_JOB_ID", str(job_id))
    monkeypatch.setenv("SLURM_NODEID", "1")


def test_node_entry_adds_the_rendezvous_and_becomes_torchrun(monkeypatch, tmp_path, capsys):
    """Every node computes the same endpoint (first host, port from the job id) and execs torchrun with it."""
    fake_job(monkeypatch, tmp_path, "gpu[07-08]", 123457, ["gpu07", "gpu08"])
    monkeypatch.setenv("SLURMD_NODENAME", "gpu08")
    monkeypatch.setattr(launcher.socket, "gethostname", lambda: "gpu08.cluster.example")  # not what the node list says
    monkeypatch.setattr(launcher, "interface_towards", lambda host: ("ib0", "10.1.0.8") if host == "gpu07" else None)
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth9")  # a site's own setting wins
    execs = []
    monkeypatch.setattr(launcher.os, "execvp", lambda file, args: execs.append(args))
    launcher.node_main(["torchrun", "--nnodes=2", "--nproc_per_node=8", "-m", "snakechat.base_train", "--steps", "3"])
    assert execs == [["torchrun", "--rdzv_backend=c10d", "--rdzv_endpoint=gpu07:13457", "--rdzv_id=123457",
                      "--nnodes=2", "--nproc_per_node=8", "-m", "snakechat.base_train", "--steps", "3"]]
    assert os.environ["GLOO_SOCKET_IFNAME"] == "ib0" and os.environ["NCCL_SOCKET_IFNAME"] == "eth9"
    assert "launch: gpu08 is node 1 of 2, rendezvous gpu07:13457, interface ib0 (10.1.0.8, towards gpu07)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN


@pytest.fixture(autouse=True)
def usr1_restored():
    before = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, before)


def test_node_entry_refuses_anything_but_torchrun_in_a_job(monkeypatch, tmp_path):
    fake_job(monkeypatch, tmp_path, "n1", 5, ["n1"])
    with pytest.raises(SystemExit):
        launcher.node_main(["python", "-m", "snakechat.base_train"])
    monkeypatch.delenv("SLURM_JOB_ID")
    with pytest.raises(SystemExit):
        launcher.node_main(["torchrun", "--nnodes=1"])


def test_rendezvous_ports_differ_for_neighbouring_jobs_and_stay_below_ephemeral_ports():
    ports = {launcher.rendezvous_port(j) for j in range(1000, 1100)}
    assert len(ports) == 100 and all(10000 <= p < 32768 for p in ports)


def test_peer_is_the_first_host_or_for_it_the_second():
    hosts = ["a", "b", "c"]
    assert [launcher.peer_of(hosts, h) for h in hosts] == ["b", "a", "a"]
    assert launcher.peer_of(["a"], "a") is None


def test_interface_towards_a_host_is_the_one_holding_the_source_address():
    # The loopback is refused (a first host whose name resolves to 127.x here must not pick it).
    assert launcher.interface_towards("127.0.0.1") is None
    assert launcher.interface_towards("no-such-host.invalid") is None
    assert launcher.interface_address("lo") == "127.0.0.1"
    # Whatever routes to a public address (nothing is sent: UDP connect only picks the route).
    found = launcher.interface_towards("192.0.2.123")
    if found is not None:
        name, address = found
        assert launcher.interface_address(name) == address


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
    assert launcher.processes_of({"gres": "gpu:8", "nodes": 2}) == (8, 2, "GPUs per node (the rule's gpu or gres resource)")
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


def test_ignoring_the_warning_signal_is_inherited_by_children():
    probe = "import signal; print(signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN)"
    code = f"from snakechat.pipeline import launcher; import subprocess, sys; launcher.ignore_warning_signal(); subprocess.run([sys.executable, '-c', {probe!r}])"
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
