"""The cluster path against a real Slurm: profiles/slurm, the launcher under Slurm on one and two
nodes, preemption and time limits.

Tests marked `slurm` use a two-node Slurm on this machine (each slurmd in its own network
namespace) that tests/slurm/setup.sh installs and starts (root and apt-get needed; CI has both)
and tests/slurm/teardown.sh stops; where namespaces cannot be made it is one node, and the
two-node tests skip saying why. Every
Snakemake call runs under `timeout`: with a status command that cannot answer, Snakemake would
wait forever on a finished job and ignore SIGTERM. Each test works in its own temporary directory
with the slurm profile merged with tests/slurm/profile-overrides.yaml.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = ROOT / "tests" / "slurm"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
TEST_OVERRIDES = SLURM_DIR / "profile-overrides.yaml"
SLURM_STATE = Path("/var/lib/snakechat-slurm")
SINGLE_NODE_REASON = SLURM_STATE / "multinode"  # setup.sh writes why it made one node
USERS_LOCK = SLURM_STATE / "users.lock"
GPU_RULES = {"base_train", "base_loss", "base_eval", "mid_train", "chat_sft", "chat_rl", "chat_eval"}
TRAINING_RULES = {"base_train", "mid_train", "chat_sft", "chat_rl"}

# The tiny model, smaller still: a pipeline to results/base_eval/tiny.csv in a few minutes on 2 cores.
TINY_TEST_CONFIG = {
    "datasets": {"tinyworld": {"docs_per_shard": 256}},
    "tokenizers": {"tinyworld-4k": {"vocab_size": 512, "max_chars": 200000}},
    "models": {
        "tiny": {
            "depth": 2,
            "base": {"steps": 100, "sequence_len": 64, "device_batch_rows": 2, "step_tokens": 256, "eval_every": 0, "eval_tokens": 256, "save_every": 0, "log_every": 1},
            "base_eval": {"max_per_task": 8},
            "mid": {"sequence_len": 64},  # not run here; at most the base model's context
        }
    },
}


def merged_profile(dest, rules=None):
    """profiles/slurm with the local test Slurm's overrides, written as dest/config.yaml; `rules`
    (rule -> resources) changes the named rules' resources after that."""
    profile = yaml.safe_load(PROFILE.read_text())
    overrides = yaml.safe_load(TEST_OVERRIDES.read_text())
    every_rule, gpu_rules = overrides.pop("every-rule"), overrides.pop("gpu-rules")
    for key, value in overrides.items():
        profile[key] = {**profile.get(key, {}), **value} if isinstance(value, dict) else value
    for res in profile["set-resources"].values():
        res.update(every_rule, **(gpu_rules if "gpu" in res else {}))
    for rule, res in (rules or {}).items():
        profile["set-resources"][rule].update(res)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def profile_copy(dest, rules):
    """profiles/slurm as it is but for the named rules' resources, as a user edits it (a command
    line --set-resources would replace the profile's whole set-resources, every rule's)."""
    profile = yaml.safe_load(PROFILE.read_text())
    for rule, res in rules.items():
        profile["set-resources"][rule].update(res)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def snakemake(args, cwd, timeout):
    """Run Snakemake under `timeout`; after a kill, cancel its Slurm jobs and unlock the directory."""
    cmd = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", *args]
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if result.returncode in (124, 137):
        after_kill(args, cwd)
        pytest.fail(f"snakemake {' '.join(args)} ran past {timeout} s:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def after_kill(args, cwd):
    out = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True).stdout
    jobs = [j for j, wd in (line.split(maxsplit=1) for line in out.splitlines()) if Path(wd) == Path(cwd)]
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True)
    subprocess.run([sys.executable, "-m", "snakemake", *args, "--unlock"], cwd=cwd, env=ENV, capture_output=True)


def rule_blocks():
    """rule name -> its text, for every rule in workflow/rules/*.smk; a rule made by
    `use rule A as B with:` has A's text followed by its own."""
    blocks, uses = {}, []
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        for match in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", text, re.M | re.S):
            blocks[match.group(1)] = match.group(2)
        uses += re.findall(r"^use rule (\w+) as (\w+) with:\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
    for parent, name, text in uses:
        blocks[name] = blocks[parent] + text
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
        assert res["nodes"] == 1 and res["gpu"] == 8 and res["slurm_partition"] == "gpu", rule
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
    assert test["slurm-status-command"] == "squeue" and test["default-resources"]["slurm_partition"] == "testcpu"
    for rule, res in real["set-resources"].items():
        kept = {k: v for k, v in res.items() if k not in ("gpu", "slurm_partition", "cpus_per_task", "mem_mb")}
        assert {k: test["set-resources"][rule][k] for k in kept} == kept
        assert test["set-resources"][rule].get("gpu") == (2 if "gpu" in res else None)
        assert test["set-resources"][rule].get("slurm_partition") == ("test" if "gpu" in res else None)


def test_dry_run_shows_each_jobs_resources_without_a_cluster():
    result = snakemake(["--profile", "profiles/slurm", "-n", "results/base_eval/d20.csv"], cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(.*?)\n\n", result.stdout, re.M | re.S)
    by_rule = {name: text for name, text in jobs}
    assert {"base_train", "base_eval"} <= set(by_rule)
    for rule in {"base_train", "base_eval"}:
        line = re.search(r"resources: (.*)", by_rule[rule]).group(1)
        assert "gpu=8" in line and "nodes=1" in line and "slurm_partition=gpu" in line, line
    # CPU work and the light rules (these run on the submit host) name the CPU partition, not the GPU one.
    for rule in {"tok_train", "dataset", "eval_bundle"}:
        line = re.search(r"resources: (.*)", by_rule[rule]).group(1)
        assert "slurm_partition=cpu" in line and "gpu" not in line, line
    assert "slurm_extra=--signal=USR1@600 --requeue" in by_rule["base_train"]
    assert "Shell command: torchrun --standalone --nproc_per_node=8 -m snakechat.base_train" in by_rule["base_train"]
    # Snakemake sizes a default `disk` from the inputs, which it cannot do while the Slurm executor
    # plans (an un-awaited coroutine); the profile sets it.
    assert "RuntimeWarning" not in result.stdout + result.stderr and "never awaited" not in result.stdout + result.stderr


# --- a real Slurm ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm():
    """The test cluster, started by tests/slurm/setup.sh (or found running) and stopped at the end by
    the last test session that uses it: each holds a shared lock on USERS_LOCK while it runs."""
    if os.geteuid() != 0:
        pytest.skip("the local Slurm needs root (tests/slurm/setup.sh writes /etc/slurm and starts daemons)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and apt-get is not available to install it")
    USERS_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(USERS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        setup = subprocess.run(["bash", str(SLURM_DIR / "setup.sh")], capture_output=True, text=True, timeout=900)
        assert setup.returncode == 0, f"tests/slurm/setup.sh failed:\n{setup.stdout}\n{setup.stderr}"
        yield
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another test session still uses the cluster
        subprocess.run(["bash", str(SLURM_DIR / "teardown.sh")], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def two_nodes(slurm):
    """The test cluster's two nodes, each in its own network namespace (tests/slurm/setup.sh)."""
    if SINGLE_NODE_REASON.exists():
        pytest.skip(f"no two-node test cluster: {SINGLE_NODE_REASON.read_text().strip()}")


def toy(args, workdir, timeout=240):
    profile = merged_profile(workdir / "profile")
    return snakemake(["-s", str(SLURM_DIR / "toy" / "Snakefile"), "-d", str(workdir), "--profile", str(profile), *args], cwd=workdir, timeout=timeout)


@pytest.mark.slurm
def test_two_node_launch_meets_across_the_nodes(two_nodes, tmp_path):
    """The launcher's multi-node command line (srun + one torchrun per node + c10d on the first
    host) on two nodes, GPUs asked for per node through `gres` as docs/cluster.md says: the four
    gloo processes meet over the nodes' bridge and all-reduce."""
    result = toy(["--verbose", "out/all_reduce_multi_node.json"], tmp_path)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    seen = json.loads((tmp_path / "out" / "all_reduce_multi_node.json").read_text())
    assert seen["world_size"] == 4 and seen["sum"] == 10.0 and seen["backend"] == "gloo"
    assert sorted(seen["rank_hosts"]) == ["scnode1", "scnode1", "scnode2", "scnode2"]
    assert seen["gloo_socket_ifname"] == "eth0"  # the nodes' veth end, not the loopback
    sbatch = re.search(r"sbatch call: (.*)", result.stderr + result.stdout).group(1)
    assert "--gres=gpu:2" in sbatch and "--nodes=2" in sbatch
    record = slurm_job_record(seen["slurm_job_id"])
    assert record["JobState"] == "COMPLETED" and record["NumNodes"] == "2" and record["NodeList"] == "scnode[1-2]", record
    assert record["TresPerNode"] == "gres:gpu:2"
    assert len(seen["cuda_visible_devices"].split(",")) == 2
    log = (tmp_path / ".snakemake" / "slurm_logs" / "rule_all_reduce_multi_node" / f"{seen['slurm_job_id']}.log").read_text()
    for node, host in enumerate(["scnode1", "scnode2"]):
        port = 10000 + int(seen["slurm_job_id"]) % 20000
        assert re.search(rf"launch: {host} is node {node} of 2, rendezvous scnode1:{port}, interface eth0 \(10\.213\.77\.1{node + 1}, towards scnode{2 - node}\)", log), log


@pytest.mark.slurm
def test_no_target_on_8_gpu_nodes_stops_before_submitting(slurm, tmp_path):
    """`snakemake --profile profiles/slurm` with no target and the shipped config (default_models:
    tiny) on the test cluster with the profile's 8 GPUs per rule: Snakemake stops while it plans,
    saying why, and nothing is submitted or run (docs/cluster.md)."""
    profile = merged_profile(tmp_path / "profile", rules={rule: {"gpu": 8} for rule in GPU_RULES})
    args = ["-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--profile", str(profile), "--configfile", str(ROOT / "config" / "config.yaml")]
    result = snakemake(args, cwd=tmp_path, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "base_train of model 'tiny' cannot run on 8 processes" in output and "models.tiny.base.step_tokens 4096" in output
    assert "name a target or set default_models" in output
    assert "submitted with SLURM jobid" not in output and not (tmp_path / "results").exists()
    assert jobs_in(tmp_path) == {}


def submitted_jobs(snakemake_output):
    """rule -> Slurm job ids, from the plugin's "submitted with SLURM jobid N (log: .../rule_<rule>/...)" lines."""
    jobs = {}
    for job_id, rule in re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", snakemake_output):
        jobs.setdefault(rule, []).append(job_id)
    return jobs


def pipeline_args(workdir, *extra, config=TINY_TEST_CONFIG):
    path = workdir / "test_config.yaml"
    path.write_text(yaml.safe_dump(config))
    config = path
    return ["-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile", str(ROOT / "config" / "config.yaml"), str(config), *extra]


@pytest.fixture(scope="module")
def tiny_through_slurm(slurm, tmp_path_factory):
    """The tiny pipeline up to results/base_eval/tiny.csv through profiles/slurm, with base_train
    sent Slurm's warning signal (scancel --signal=USR1, what --signal=USR1@600 sends before the time
    limit) once it has trained a few steps. Returns (workdir, Snakemake's output, signalled job id)."""
    work = tmp_path_factory.mktemp("tiny_slurm")
    profile = merged_profile(work / "profile")
    args = pipeline_args(work, "--profile", str(profile), "results/base_eval/tiny.csv")
    train_log = work / "results" / "state" / "base" / "tiny" / "train_log.csv"
    cmd = ["timeout", "-k", "10", "420", sys.executable, "-m", "snakemake", *args]
    run = subprocess.Popen(cmd, cwd=work, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 360
        while not (train_log.exists() and len(train_log.read_text().splitlines()) > 3):
            assert run.poll() is None and time.time() < deadline, "base_train never trained 3 steps"
            time.sleep(0.2)
        queue = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True, check=True).stdout
        signalled = next(line.split()[0] for line in queue.splitlines() if line.split()[1].startswith("rule_base_train"))
        subprocess.run(["scancel", "--signal=USR1", signalled], check=True)
        output, _ = run.communicate(timeout=430)
    finally:
        if run.poll() is None:
            run.kill()
            after_kill(args, work)
    assert run.returncode == 0, output[-8000:]
    return work, output, signalled


@pytest.mark.slurm
def test_gpu_rules_run_as_slurm_jobs_with_their_gpus(tiny_through_slurm):
    work, output, _ = tiny_through_slurm
    jobs = submitted_jobs(output)
    assert set(jobs) == {"tok_train", "base_train", "base_eval"}, jobs
    assert len(jobs["base_train"]) == 2  # signalled, then resubmitted by Snakemake's retry
    for rule in ("base_train", "base_eval"):
        for job_id in jobs[rule]:
            record = slurm_job_record(job_id)
            assert record["TresPerJob"] == "gres:gpu:2" and record["Partition"] == "test", record
            assert record["Comment"] == f"rule_{rule}_wildcards_tiny"
            assert (work / ".snakemake" / "slurm_logs" / f"rule_{rule}" / "tiny" / f"{job_id}.log").exists()
    # CPU work goes to the CPU partition, without GPUs.
    record = slurm_job_record(jobs["tok_train"][0])
    assert record["Partition"] == "testcpu" and "gpu" not in record.get("TresPerJob", "") + record.get("TresPerNode", ""), record
    # The launcher turned the 2 GPUs into a 2-process torchrun (gloo: the GPUs are fake).
    assert "torchrun --standalone --nproc_per_node=2 -m snakechat.base_train" in output
    assert json.loads((work / "results" / "base" / "tiny" / "meta.json").read_text())["world_size"] == 2
    # Light rules ran on the submit host.
    assert {"dataset", "eval_bundle"} & set(jobs) == set()
    assert re.search(r"^localrule dataset:", output, re.M) and re.search(r"^localrule eval_bundle:", output, re.M)


@pytest.mark.slurm
def test_warning_signal_saves_state_and_the_retry_resumes(tiny_through_slurm):
    work, output, signalled = tiny_through_slurm
    assert slurm_job_record(signalled)["JobState"] == "FAILED"
    log = (work / "logs" / "base_train" / "tiny.log").read_text()
    resumed_at = int(re.search(r"resuming from \S+ at step (\d+)", log).group(1))
    assert 3 <= resumed_at < TINY_TEST_CONFIG["models"]["tiny"]["base"]["steps"]
    rows = (work / "results" / "base" / "tiny" / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, TINY_TEST_CONFIG["models"]["tiny"]["base"]["steps"] + 1))


@pytest.mark.slurm
def test_outputs_have_the_shape_of_a_local_run(tiny_through_slurm, tmp_path):
    """base_train and base_eval again with profiles/local, on the Slurm run's data and tokenizer."""
    work, _, _ = tiny_through_slurm
    for name in ("data", "tokenizer", "eval_bundle"):
        shutil.copytree(work / "results" / name, tmp_path / "results" / name)
    args = pipeline_args(tmp_path, "--profile", str(ROOT / "profiles" / "local"), "--cores", "2", "results/base_eval/tiny.csv", "--rerun-triggers", "mtime")
    result = snakemake(args, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert re.findall(r"^localrule (\w+):", result.stdout + result.stderr, re.M) == ["base_train", "base_eval"]
    slurm_ckpt, local_ckpt = work / "results" / "base" / "tiny", tmp_path / "results" / "base" / "tiny"
    assert sorted(p.name for p in slurm_ckpt.iterdir()) == sorted(p.name for p in local_ckpt.iterdir())
    slurm_meta, local_meta = (json.loads((d / "meta.json").read_text()) for d in (slurm_ckpt, local_ckpt))
    assert slurm_meta.keys() == local_meta.keys() and slurm_meta["model_config"] == local_meta["model_config"]
    assert (slurm_meta["world_size"], local_meta["world_size"]) == (2, 1)
    slurm_log, local_log = ((d / "train_log.csv").read_text().splitlines() for d in (slurm_ckpt, local_ckpt))
    assert slurm_log[0] == local_log[0] and len(slurm_log) == len(local_log)
    slurm_eval, local_eval = ((d / "results" / "base_eval" / "tiny.csv").read_text().splitlines() for d in (work, tmp_path))
    assert slurm_eval[0] == local_eval[0] == "label,type,shots,n,accuracy,centered,seconds"
    assert [r.split(",")[0] for r in slurm_eval] == [r.split(",")[0] for r in local_eval]
    assert slurm_eval[-1].startswith("CORE,")


D20_TWO_NODES = {"models": {"d20": {"base": {"device_batch_rows": 16}}}}  # 2^19 tokens = 16 rows × 2048 × 16 processes


EMPTY_MANIFEST = '{"shards": [], "splits": {"train": [], "val": []}}'  # passes the dry run's shard check: there is none to stat


@pytest.mark.slurm
@pytest.mark.parametrize("nodes", [1, 2])
def test_d20_base_train_submits_whole_gpu_nodes(slurm, tmp_path, nodes):
    """The real profile's sbatch line for base_train of d20, on one node and, as docs/cluster.md says
    a multi-node stage is set up, on two. The test cluster has no `gpu` partition, so sbatch refuses
    it, and the plugin reports the line it tried."""
    for path, text in [("results/data/fineweb-edu/manifest.json", EMPTY_MANIFEST), ("results/tokenizer/fineweb-64k/tokenizer.json", "{}"),
                       ("results/tokenizer/fineweb-64k/token_bytes.json", "[]"), ("results/tokenizer/fineweb-64k/meta.json", "{}")]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    configs, profile = [str(ROOT / "config" / "config.yaml")], ROOT / "profiles" / "slurm"
    if nodes > 1:
        (tmp_path / "two_nodes.yaml").write_text(yaml.safe_dump(D20_TWO_NODES))
        configs.append(str(tmp_path / "two_nodes.yaml"))
        profile = profile_copy(tmp_path / "profile", {"base_train": {"nodes": 2, "gres": "gpu:8", "gpu": 0}})
    # Only settings that leave the sbatch line alone: no account look-up, no retry, and a short
    # first status wait (the plugin sleeps it out before it exits).
    args = ["results/base/d20", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", *configs,
            "--profile", str(profile), "--slurm-no-account", "--retries", "0",
            "--slurm-init-seconds-before-status-checks", "1"]
    result = snakemake(args, cwd=tmp_path, timeout=180)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    sbatch = re.search(r"sbatch call:\s*\n\s*(sbatch .*)", output).group(1)
    gpus = "--gpus=8" if nodes == 1 else "--gres=gpu:8"
    for flag in ("-p gpu", "-t 360", "--mem 480000", f"--nodes={nodes}", "--cpus-per-task=64", "--signal=USR1@600", "--requeue", gpus):
        assert f" {flag} " in sbatch, (flag, sbatch)
    assert "--ntasks" not in sbatch.split("--wrap")[0]
    if nodes == 1:
        assert "torchrun --standalone --nproc_per_node=8 -m snakechat.base_train" in output
    else:
        assert "--gpus" not in sbatch.split("--wrap")[0]
        assert ("env -u SLURM_JOB_NODELIST srun --overlap --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=1 "
                "python -m snakechat.pipeline.launcher torchrun --nnodes=2 --nproc_per_node=8 -m snakechat.base_train") in output


# --- one training job across two nodes ------------------------------------------------------------

TWO_NODES = {"nodes": 2, "gres": "gpu:2", "gpu": 0}  # 2 nodes × 2 processes, as docs/cluster.md sets a stage up
MULTI_NODE_STEPS = 800
# tiny as in TINY_TEST_CONFIG, with a step that splits over 4 processes (one 64-token row each) and
# enough steps that a 2-node run sharing the machine with two others outlasts a 1-minute time limit.
MULTI_NODE_CONFIG = {
    **TINY_TEST_CONFIG,
    "models": {"tiny": {**TINY_TEST_CONFIG["models"]["tiny"],
                        "base": {**TINY_TEST_CONFIG["models"]["tiny"]["base"], "steps": MULTI_NODE_STEPS, "device_batch_rows": 1, "log_every": 100}}},
}
JOBCOMP_LOG = Path("/var/log/slurm/jobcomp.log")  # one line per finished job (tests/slurm/setup.sh)


def finished_jobs():
    """Job id -> the test cluster's record of it when it ended (jobcomp/filetxt: state, node list, times)."""
    return {m["JobId"]: m for m in (dict(re.findall(r"(\w+)=(\S*)", line)) for line in JOBCOMP_LOG.read_text().splitlines()) if "JobId" in m}


def jobs_in(workdir, rule=None):
    """{job id: state} of `rule`'s jobs (any rule's: None) from `workdir` in the queue now."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%Z|%k|%T"], capture_output=True, text=True, check=True).stdout
    prefix = f"rule_{rule}_" if rule else "rule_"
    return {j: state for j, wd, comment, state in (line.split("|") for line in out.splitlines())
            if Path(wd) == workdir and comment.startswith(prefix)}


def workdir_with_inputs(source, dest):
    """A work directory holding `source`'s data, tokenizer and eval bundle (mtimes kept)."""
    for name in ("data", "tokenizer", "eval_bundle"):
        shutil.copytree(source / "results" / name, dest / "results" / name)
    return dest


def start(work, profile_rules, target, *extra):
    profile = merged_profile(work / "profile", rules=profile_rules)
    args = pipeline_args(work, "--profile", str(profile), target, "--rerun-triggers", "mtime", *extra, config=MULTI_NODE_CONFIG)
    with open(work / "snakemake.out", "w") as out:  # a file: several runs at once would fill their pipes unread
        run = subprocess.Popen(["timeout", "-k", "10", "1500", sys.executable, "-m", "snakemake", *args], cwd=work, env=ENV,
                               stdout=out, stderr=subprocess.STDOUT)
    return run, args


def state_steps(work):
    return [int(p.stem.split("_")[1]) for p in sorted((work / "results" / "state" / "base" / "tiny").glob("state_*.pt"))]


class InterruptTwice:
    """Drives the interrupted run's base_train, one `poll()` at a time: its first job gets a real
    1-minute time limit (scontrol), the second `scancel --signal=USR1` once it has trained 3 steps
    past its resume point, the third finishes. `jobs()`: per job in order, (job id, its log and the
    saved states' steps when it ended)."""

    def __init__(self, work):
        self.work, self.order, self.ended, self.signalled = work, [], {}, None
        self.log = work / "logs" / "base_train" / "tiny.log"
        self.train_log = work / "results" / "state" / "base" / "tiny" / "train_log.csv"

    def poll(self):
        queued = jobs_in(self.work, "base_train")
        for job, state in queued.items():
            if job not in self.order:
                self.order.append(job)
                if len(self.order) == 1:
                    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=1"], check=True)
            if len(self.order) == 2 and job == self.order[1] and state == "RUNNING" and self.signalled is None:
                resumed_at = max(self.ended.get(self.order[0], ("", [0]))[1] or [0])
                rows = len(self.train_log.read_text().splitlines()) - 1 if self.train_log.exists() else 0
                if rows >= resumed_at + 3:
                    subprocess.run(["scancel", "--signal=USR1", job], check=True)
                    self.signalled = job
        for job in self.order:
            if job not in queued and job not in self.ended:
                self.ended[job] = (self.log.read_text() if self.log.exists() else "", state_steps(self.work))

    def jobs(self):
        return [(job, *self.ended.get(job, ("", []))) for job in self.order]


@pytest.fixture(scope="module")
def two_node_runs(two_nodes, tiny_through_slurm, tmp_path_factory):
    """tiny's base_train (MULTI_NODE_CONFIG) through profiles/slurm three times at once, on the Slurm
    run's data and tokenizer: on 2 nodes × 2 processes, then base_eval on 2 nodes ("two"); on
    1 node × 4 processes ("one"); on 2 nodes × 2 processes interrupted twice ("interrupted", see
    InterruptTwice; no warning signal asked for, so the time limit's own SIGTERM must save the
    state). Once "two" is done, base_eval of its checkpoint on 1 node ("eval_one"). Returns {name:
    (workdir, Snakemake's output)} and the interrupted run's jobs."""
    source = tiny_through_slurm[0]
    work = {name: workdir_with_inputs(source, tmp_path_factory.mktemp(name)) for name in ("two", "one", "interrupted", "eval_one")}
    started = time.time()
    runs = {
        "two": start(work["two"], {"base_train": TWO_NODES, "base_eval": TWO_NODES}, "results/base_eval/tiny.csv"),
        "one": start(work["one"], {"base_train": {"gpu": 4}}, "results/base/tiny"),
        "interrupted": start(work["interrupted"], {"base_train": {**TWO_NODES, "slurm_extra": "'--requeue'"}}, "results/base/tiny"),
    }
    interrupted = InterruptTwice(work["interrupted"])
    outputs = {}
    try:
        deadline = time.time() + 1400
        while any(run.poll() is None for run, _ in runs.values()):
            assert time.time() < deadline, f"the two-node runs did not finish: {[n for n, (r, _) in runs.items() if r.poll() is None]}"
            interrupted.poll()
            if runs["two"][0].poll() is not None and "eval_one" not in runs:
                # base_eval of the 2-node checkpoint on one node, while the interrupted run goes on
                shutil.copytree(work["two"] / "results" / "base", work["eval_one"] / "results" / "base")
                runs["eval_one"] = start(work["eval_one"], {}, "results/base_eval/tiny.csv")
            time.sleep(0.3)
        interrupted.poll()
        outputs = {name: (work[name] / "snakemake.out").read_text() for name in runs}
    finally:
        for name, (run, args) in runs.items():
            if run.poll() is None:
                run.kill()
                after_kill(args, work[name])
    for name, (run, _) in runs.items():
        assert run.returncode == 0, f"{name}:\n{outputs[name][-8000:]}"
    print(f"two-node runs: {time.time() - started:.0f} s")
    return {name: (work[name], outputs[name]) for name in work}, interrupted.jobs()


def weights(checkpoint):
    return torch.load(checkpoint / "model.pt", map_location="cpu", weights_only=True)


@pytest.mark.slurm
def test_two_nodes_train_as_one_node_with_as_many_processes(two_node_runs):
    runs, _ = two_node_runs
    (two, two_out), (one, one_out) = runs["two"], runs["one"]
    a, b = weights(two / "results" / "base" / "tiny"), weights(one / "results" / "base" / "tiny")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.linalg.norm((a[name] - b[name]).float()) <= 1e-4 * torch.linalg.norm(b[name].float()), name
    for work in (two, one):
        meta = json.loads((work / "results" / "base" / "tiny" / "meta.json").read_text())
        assert meta["world_size"] == 4
    # Slurm's records: the 2-node job held both nodes, the 1-node one a single node.
    records = finished_jobs()
    (two_job,), (one_job,) = submitted_jobs(two_out)["base_train"], submitted_jobs(one_out)["base_train"]
    assert (records[two_job]["NodeCnt"], records[two_job]["NodeList"], records[two_job]["JobState"]) == ("2", "scnode[1-2]", "COMPLETED")
    assert records[one_job]["NodeCnt"] == "1" and records[one_job]["JobState"] == "COMPLETED"
    # The 2-node job's log: a torchrun per node, at one rendezvous, and two ranks on each node.
    log = (two / "logs" / "base_train" / "tiny.log").read_text()
    port = 10000 + int(two_job) % 20000
    for node, host in enumerate(["scnode1", "scnode2"]):
        assert f"launch: {host} is node {node} of 2, rendezvous scnode1:{port}, interface eth0" in log, log[:3000]
    ranks = dict(re.findall(r"^rank (\d) of 4 on (scnode\d)$", log, re.M))
    assert sorted(ranks) == ["0", "1", "2", "3"] and sorted(ranks.values()) == ["scnode1", "scnode1", "scnode2", "scnode2"], ranks
    assert "rank " not in (one / "logs" / "base_train" / "tiny.log").read_text()


@pytest.mark.slurm
def test_two_node_jobs_at_once_meet_on_their_own_ports(two_node_runs):
    """The uninterrupted and the interrupted 2-node base_train ran at the same time with the same
    first node; each met at its own rendezvous port."""
    runs, interrupted_jobs = two_node_runs
    records = finished_jobs()
    (two_job,) = submitted_jobs(runs["two"][1])["base_train"]
    first = interrupted_jobs[0][0]
    assert records[two_job]["StartTime"] < records[first]["EndTime"] and records[first]["StartTime"] < records[two_job]["EndTime"]
    assert 10000 + int(two_job) % 20000 != 10000 + int(first) % 20000
    assert f"rendezvous scnode1:{10000 + int(first) % 20000}" in interrupted_jobs[0][1]


@pytest.mark.slurm
def test_time_limit_and_warning_signal_on_two_nodes_resume_to_the_same_weights(two_node_runs):
    """The first job reached its time limit (Slurm's SIGTERM: the state saved once, job TIMEOUT),
    the second got the warning signal (state saved once, job FAILED), Snakemake's retries resumed
    each time and the third finished: weights bitwise equal to the uninterrupted 2-node run."""
    runs, jobs = two_node_runs
    work = runs["interrupted"][0]
    assert len(jobs) == 3, jobs
    records = finished_jobs()
    (limited, limited_log, after_limit), (signalled, signalled_log, after_signal), (last, _, _) = jobs
    assert [records[j]["JobState"] for j, _, _ in jobs] == ["TIMEOUT", "FAILED", "COMPLETED"]
    assert all(records[j]["NodeCnt"] == "2" and records[j]["NodeList"] == "scnode[1-2]" for j, _, _ in jobs)
    assert records[limited]["TimeLimit"] == "1"

    k1 = int(re.search(r"stopping after step (\d+) on signal SIGTERM", limited_log).group(1))
    assert limited_log.count("saved training state") == 1 and after_limit == [k1]
    assert 0 < k1 < MULTI_NODE_STEPS
    assert re.search(rf"resuming from \S+state_{k1:08d}\.pt at step {k1}", signalled_log)
    k2 = int(re.search(r"stopping after step (\d+) on signal SIGUSR1", signalled_log).group(1))
    assert signalled_log.count("saved training state") == 1 and after_signal == [k1, k2] and k2 > k1
    final_log = (work / "logs" / "base_train" / "tiny.log").read_text()
    assert re.search(rf"resuming from \S+state_{k2:08d}\.pt at step {k2}", final_log)

    rows = (work / "results" / "base" / "tiny" / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, MULTI_NODE_STEPS + 1))
    resumed, uninterrupted = weights(work / "results" / "base" / "tiny"), weights(runs["two"][0] / "results" / "base" / "tiny")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


@pytest.mark.slurm
def test_two_node_base_eval_writes_the_one_node_csv(two_node_runs):
    """base_eval of one checkpoint on 2 nodes × 2 processes and on 1 node × 2: the same CSV but for
    the seconds it took."""
    runs, _ = two_node_runs
    (two, two_out), (one, one_out) = runs["two"], runs["eval_one"]
    records = finished_jobs()
    (two_job,), (one_job,) = submitted_jobs(two_out)["base_eval"], submitted_jobs(one_out)["base_eval"]
    assert records[two_job]["NodeCnt"] == "2" and records[one_job]["NodeCnt"] == "1"
    assert "base_train" not in submitted_jobs(one_out)

    def without_seconds(work):
        rows = (work / "results" / "base_eval" / "tiny.csv").read_text().splitlines()
        seconds = rows[0].split(",").index("seconds")
        return [[v for i, v in enumerate(r.split(",")) if i != seconds] for r in rows]

    assert without_seconds(two) == without_seconds(one)
    assert len(without_seconds(two)) > 2


# A scaling sweep of three runs of the test tiny model (one budget, depths 1-3): one base_train job each.
SWEEP_TEST_CONFIG = {
    **TINY_TEST_CONFIG,
    "sweeps": {"scaling": {"tiny-scaling": {"model": "tiny", "base": {"step_tokens": 256, "device_batch_rows": 2, "eval_every": 0, "eval_tokens": 256,
                                                                       "save_every": 0, "log_every": 1},
                                            "budgets": [{"flops": 4.0e+10, "depths": [1, 2, 3]}]}}},
}


@pytest.mark.slurm
def test_a_sweeps_runs_are_separate_slurm_jobs_that_run_at_once(slurm, tmp_path):
    """results/scaling/<sweep>.csv through profiles/slurm: each run of the sweep is its own base_train
    job, submitted together, and the cluster's records show them running at the same time."""
    profile = merged_profile(tmp_path / "profile")
    args = pipeline_args(tmp_path, "--profile", str(profile), "results/scaling/tiny-scaling.csv", config=SWEEP_TEST_CONFIG)
    result = snakemake(args, cwd=tmp_path, timeout=480)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    jobs = submitted_jobs(output)
    assert len(jobs["base_train"]) == 3 and "scaling_table" not in jobs  # the table is a local rule
    records = finished_jobs()
    runs = {j: records[j] for j in jobs["base_train"]}
    assert all(r["JobState"] == "COMPLETED" for r in runs.values()), runs
    # ISO times: the last to start started before the first to end ended, so all three ran at once
    starts, ends = [r["StartTime"] for r in runs.values()], [r["EndTime"] for r in runs.values()]
    assert max(starts) < min(ends), f"the runs did not overlap: {runs}"
    assert {(tmp_path / ".snakemake" / "slurm_logs" / "rule_base_train" / f"tiny-scaling-4e10-d{d}").is_dir() for d in (1, 2, 3)} == {True}
    table = (tmp_path / "results" / "scaling" / "tiny-scaling.csv").read_text()
    assert all(f"tiny-scaling-4e10-d{d}" in table for d in (1, 2, 3))
