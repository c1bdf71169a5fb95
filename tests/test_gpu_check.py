"""bench/gpu_check.py in its CPU mode: the same parts, budget and process handling as on a GPU, at
tiny shapes, so that the check a lent GPU runs once cannot rot in between."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tagged_processes(tag):
    out = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def alive(pid):
    """Running or sleeping (a killed process left unreaped as a zombie counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def run_check(tmp_path, tag, *args):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(out), "--tag", tag, *args],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_cpu_mode_runs_every_part(tmp_path):
    tag = f"gpu-check-test-{os.getpid()}-full"
    result, stdout = run_check(tmp_path, tag, "--budget-s", "600")
    check = load_check()
    parts = result["parts"]
    assert set(parts) == {key for key, _, _ in check.plan(check.RECIPES)}
    assert all(p["status"] == "ok" for p in parts.values()), parts
    assert parts["env"]["torch"] and parts["env"]["device"] == "cpu"
    for recipe in check.RECIPES:
        train = parts[f"train:{recipe}"]
        shape = check.SHAPES["cpu"]
        assert train["device_batch"] == shape["max_batch"]  # every power of two up to the cap fits on the CPU
        assert train["batches_tried"] == {"1": True, "2": True, "4": True}
        assert train["tokens_per_s"] > 0 and 0 < train["optimizer_share"] < 1
        assert train["mfu"] is None  # no peak FLOP/s for a CPU, rather than a made-up one
        depth = parts[f"max_depth:{recipe}"]
        assert depth["largest_depth"] == shape["depths"][-1]
        rates = parts[f"decode:{recipe}"]["tokens_per_s"]
        assert set(rates) == {"1", "32"} and all(v > 0 for v in rates.values())
    precision = parts["precision"]
    assert len(precision["loss_fp32"]) == len(precision["loss_bf16"]) == 20
    assert precision["loss_fp32"][-1] < precision["loss_fp32"][0]  # it trained
    assert precision["max_abs_diff"] < 0.1  # bf16 follows fp32 from the same seed
    assert "train:nanochat-2025-11" in stdout and "wrote" in stdout
    assert tagged_processes(tag) == []


def test_a_short_budget_skips_parts_and_leaves_nothing_running(tmp_path):
    tag = f"gpu-check-test-{os.getpid()}-short"
    start = time.monotonic()
    result, _ = run_check(tmp_path, tag, "--budget-s", "6")
    assert time.monotonic() - start < 60
    parts = result["parts"]
    assert {p["status"] for p in parts.values()} <= {"ok", "timed out", "skipped"}
    last = parts["max_depth:nanochat-2025-11"]  # the last part to run
    assert last["status"] == "skipped" and "budget" in last["note"]
    assert tagged_processes(tag) == []


def test_a_killed_part_takes_its_children_with_it():
    """A part is killed with its whole session: a grandchild it started (as inductor's compile
    workers are) does not outlive it."""
    check = load_check()
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(300)\n")
    child = check.Child([sys.executable, "-c", code])
    returncode, out, _ = child.wait(timeout=5)
    assert returncode is None
    grandchild = int(out.split()[0])
    for _ in range(50):
        if not alive(grandchild):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {grandchild} outlived the killed part")


def test_refuses_without_cuda_unless_cpu_mode(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "--cpu" in proc.stderr
    assert not (tmp_path / "x.json").exists()
