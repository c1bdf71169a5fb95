"""The cluster path against a real Slurm: profiles/slurm, the launcher under Slurm, preemption.

Tests marked `slurm` use a single-node Slurm on this machine that tests/slurm/setup.sh installs
and starts (root and apt-get needed; CI has both) and tests/slurm/teardown.sh stops. Every
Snakemake call runs under `timeout`: with a status command that cannot answer, Snakemake would
wait forever on a finished job and ignore SIGTERM. Each test works in its own temporary directory
with the slurm profile merged with tests/slurm/profile-test/config.yaml.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = ROOT / "tests" / "slurm"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
TEST_OVERRIDES = SLURM_DIR / "profile-test" / "config.yaml"
GPU_RULES = {"base_train", "base_loss", "base_eval", "mid_train", "chat_sft", "chat_rl", "chat_eval"}
TRAINING_RULES = {"base_train", "mid_train", "chat_sft", "chat_rl"}


def merged_profile(dest):
    """profiles/slurm with the local test Slurm's overrides, written as dest/config.yaml."""
    profile = yaml.safe_load(PROFILE.read_text())
    overrides = yaml.safe_load(TEST_OVERRIDES.read_text())
    every_rule, gpus = overrides.pop("every-rule"), overrides.pop("gpu")
    for key, value in overrides.items():
        profile[key] = {**profile.get(key, {}), **value} if isinstance(value, dict) else value
    for res in profile["set-resources"].values():
        res.update(every_rule, **({"gpu": gpus} if "gpu" in res else {}))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def snakemake(args, cwd, timeout):
    """Run Snakemake under `timeout`; after a kill, cancel its Slurm jobs and unlock the directory."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", *args]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode in (124, 137):
        subprocess.run(["scancel", "--user=root"], capture_output=True)
        subprocess.run([sys.executable, "-m", "snakemake", *args, "--unlock"], cwd=cwd, env=env, capture_output=True)
        pytest.fail(f"snakemake {' '.join(args)} ran past {timeout} s:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def rule_blocks():
    """rule name -> its text, for every rule in workflow/rules/*.smk."""
    blocks = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for match in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", path.read_text(), re.M | re.S):
            blocks[match.group(1)] = match.group(2)
    return blocks


def local_rules():
    names = set()
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        for match in re.finditer(r"^localrules:\n((?:[ \t]+.*\n?)+)", path.read_text(), re.M):
            names.update(n.strip() for n in match.group(1).replace("\n", ",").split(",") if n.strip())
    return names


def slurm_job_record(job_id):
    """`scontrol show job` as a dict (kept by slurmctld for MinJobAge = 300 s after the job ends)."""
    out = subprocess.run(["scontrol", "show", "job", str(job_id)], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w[\w/:]*)=(\S*)", out))


# --- the profiles, without a cluster ------------------------------------------------------------


def test_every_gpu_rule_gets_a_gpu_node_and_training_gets_the_warning_signal():
    resources = yaml.safe_load(PROFILE.read_text())["set-resources"]
    assert {rule for rule, res in resources.items() if "gpu" in res} == GPU_RULES
    for rule in GPU_RULES:
        res = resources[rule]
        assert res["nodes"] == 1 and res["gpu"] == 8, rule
        assert res["cpus_per_task"] > 0 and res["mem_mb"] > 0 and res["runtime"] > 0, rule
        if rule in TRAINING_RULES:
            lead_s = int(re.search(r"--signal=USR1@(\d+)", res["slurm_extra"]).group(1))
            assert "--requeue" in res["slurm_extra"]
            assert lead_s < res["runtime"] * 60 / 2, f"{rule}: warning signal too early"
        else:
            assert "slurm_extra" not in res, rule


def test_profile_names_the_workflows_rules():
    """Rules that launch are GPU rules of the profile, and the profile names only rules that exist
    (a renamed rule would silently lose its GPUs); local rules get no cluster resources."""
    blocks = rule_blocks()
    launching = {name for name, text in blocks.items() if "launch=launch" in text}
    assert launching <= GPU_RULES, f"GPU rules missing from profiles/slurm: {launching - GPU_RULES}"
    profiled = set(yaml.safe_load(PROFILE.read_text())["set-resources"])
    assert profiled <= set(blocks), f"profiles/slurm names rules the workflow lacks: {profiled - set(blocks)}"
    assert not profiled & local_rules()


def test_test_profile_changes_only_site_settings(tmp_path):
    real = yaml.safe_load(PROFILE.read_text())
    test = yaml.safe_load((merged_profile(tmp_path) / "config.yaml").read_text())
    assert test["executor"] == "slurm" and test["retries"] == real["retries"]
    assert test["slurm-status-command"] == "squeue" and test["default-resources"]["slurm_partition"] == "test"
    for rule, res in real["set-resources"].items():
        kept = {k: v for k, v in res.items() if k not in ("gpu", "cpus_per_task", "mem_mb")}
        assert {k: test["set-resources"][rule][k] for k in kept} == kept
        assert test["set-resources"][rule].get("gpu") == (2 if "gpu" in res else None)


def test_dry_run_shows_each_jobs_resources_without_a_cluster():
    result = snakemake(["--profile", "profiles/slurm", "-n", "results/base_eval/d20.csv"], cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(.*?)\n\n", result.stdout, re.M | re.S)
    by_rule = {name: text for name, text in jobs}
    assert {"base_train", "base_eval"} <= set(by_rule)
    for rule in {"base_train", "base_eval"}:
        line = re.search(r"resources: (.*)", by_rule[rule]).group(1)
        assert "gpu=8" in line and "nodes=1" in line and "slurm_partition=gpu" in line, line
    assert "slurm_extra='--signal=USR1@600 --requeue'" in by_rule["base_train"]


# --- a real Slurm ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("the local Slurm needs root (tests/slurm/setup.sh writes /etc/slurm and starts daemons)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and apt-get is not available to install it")
    setup = subprocess.run(["bash", str(SLURM_DIR / "setup.sh")], capture_output=True, text=True, timeout=900)
    assert setup.returncode == 0, f"tests/slurm/setup.sh failed:\n{setup.stdout}\n{setup.stderr}"
    yield
    subprocess.run(["bash", str(SLURM_DIR / "teardown.sh")], capture_output=True, timeout=120)


def toy(args, workdir, timeout=240):
    profile = merged_profile(workdir / "profile")
    return snakemake(["-s", str(SLURM_DIR / "toy" / "Snakefile"), "-d", str(workdir), "--profile", str(profile), *args], cwd=workdir, timeout=timeout)


@pytest.mark.slurm
def test_multi_node_launch_command_runs_under_slurm(slurm, tmp_path):
    """The launcher's N-node command line (srun + one torchrun per node + c10d), with N = 1,
    inside the step the Slurm plugin runs a job in: the nearest this one-node Slurm gets to N > 1."""
    result = toy(["--verbose", "out/all_reduce_multi_node.json"], tmp_path)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    seen = json.loads((tmp_path / "out" / "all_reduce_multi_node.json").read_text())
    assert seen["world_size"] == 2 and seen["sum"] == 3.0 and seen["backend"] == "gloo"
    sbatch = re.search(r"sbatch call: (.*)", result.stderr + result.stdout).group(1)
    assert "--gpus=2" in sbatch and "-p test" in sbatch
    record = slurm_job_record(seen["slurm_job_id"])
    assert record["JobState"] == "COMPLETED" and record["TresPerJob"] == "gres:gpu:2"
    assert len(seen["cuda_visible_devices"].split(",")) == 2


@pytest.mark.slurm
def test_warning_signal_saves_state_and_the_retry_resumes(slurm, tmp_path):
    """scancel --signal=USR1 delivers what `--signal=USR1@...` delivers before a time limit."""
    log = tmp_path / "logs" / "count.log"
    profile = merged_profile(tmp_path / "profile")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    args = ["-s", str(SLURM_DIR / "toy" / "Snakefile"), "-d", str(tmp_path), "--profile", str(profile), "out/count.json"]
    run = subprocess.Popen(["timeout", "-k", "10", "300", sys.executable, "-m", "snakemake", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 200
        while not (log.exists() and re.search(r"^step 5 job (\d+)", log.read_text(), re.M)):
            assert time.time() < deadline and run.poll() is None, "the counting job never reached step 5"
            time.sleep(0.5)
        first_job = re.search(r"^step 5 job (\d+)", log.read_text(), re.M).group(1)
        subprocess.run(["scancel", "--signal=USR1", first_job], check=True)
        out, _ = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            subprocess.run(["scancel", "--user=root"], capture_output=True)
    assert run.returncode == 0, out[-5000:]
    done = json.loads((tmp_path / "out" / "count.json").read_text())
    assert done["resumed_from"] >= 5 and done["steps"] == 40
    assert f"resumed from step {done['resumed_from']}" in log.read_text()
    assert slurm_job_record(first_job)["JobState"] == "FAILED"
    assert len(list((tmp_path / ".snakemake" / "slurm_logs" / "rule_count").glob("*.log"))) == 2
