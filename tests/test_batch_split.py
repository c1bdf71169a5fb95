"""A training step must split over the processes its rule is launched on: checked when Snakemake
plans (so `snakemake -n` fails), for every model a run builds and under every profile; the part
that holds for any process count is checked at parse time for every configured model."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snakechat.pipeline import configcheck, sweeps

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def shipped():
    """config/config.yaml with the schema's defaults filled in."""
    return configcheck.validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), SCHEMA)


def model(shipped, name="d20", **sections):
    m = copy.deepcopy(shipped["models"][name])
    for section, values in sections.items():
        m[section].update(values)
    return m


def test_each_training_section_names_its_key_and_the_process_count(shipped):
    m = model(shipped, base={"step_tokens": 524288, "device_batch_rows": 32, "sequence_len": 2048})
    assert configcheck.batch_division("d20", m, "base", 8) is None
    assert configcheck.batch_division("d20", m, "base", 16) == (
        "models.d20.base.step_tokens 524288 is not a multiple of device_batch_rows × sequence_len × processes = 32 × 2048 × 16 = 1048576")
    m = model(shipped, sft={"step_conversations": 32, "device_batch_rows": 4}, rl={"step_prompts": 16})
    assert configcheck.batch_division("d20", m, "sft", 8) is None
    assert configcheck.batch_division("d20", m, "sft", 16) == (
        "models.d20.sft.step_conversations 32 does not split over 16 processes in whole micro-batches of device_batch_rows 4 (needs a multiple of 64)")
    assert "does not split over 3 processes" in configcheck.batch_division("d20", m, "sft", 3)
    assert configcheck.batch_division("d20", m, "rl", 16) is None
    assert configcheck.batch_division("d20", m, "rl", 3) == "models.d20.rl.step_prompts 16 is not a multiple of the 3 processes"


def test_mid_rows_are_the_base_models_length_when_shorter(shipped):
    """mid_train packs rows of min(mid.sequence_len, the base model's): the check uses the same."""
    m = model(shipped, base={"sequence_len": 1024}, mid={"sequence_len": 2048, "step_tokens": 32 * 1024 * 8, "device_batch_rows": 32})
    assert configcheck.batch_division("d20", m, "mid", 8) is None
    m["base"]["sequence_len"] = 2048
    assert "32 × 2048 × 8 = 524288" in configcheck.batch_division("d20", m, "mid", 8)


def test_a_derived_step_is_checked_as_derived(shipped):
    m = model(shipped, base={"step_tokens": 0, "device_batch_rows": 32, "sequence_len": 2048})  # d20: 2^19 tokens
    assert configcheck.batch_division("d20", m, "base", 8) is None
    assert "step_tokens 524288 is not a multiple" in configcheck.batch_division("d20", m, "base", 16)


def test_every_configured_model_under_both_profiles(shipped):
    """The shipped models against the processes each profile gives their training rules: every model
    runs on the local profile's CPU processes; on profiles/slurm's 8-GPU nodes d20 and gpt2 run and
    tiny (a CPU model) does not, and so do the sweep runs derived from each."""
    slurm = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())["set-resources"]
    trainers = {"base_train": "base", "mid_train": "mid", "chat_sft": "sft", "chat_rl": "rl"}
    base_model = {r["run"]: r["model"] for r in sweeps.runs(shipped)}  # a sweep's runs are models of its model's kind
    for name, m in shipped["models"].items():
        for rule, section in trainers.items():
            if section in configcheck.training_sections(m):
                vocab = configcheck.model_vocab(shipped, m)
                assert configcheck.batch_division(name, m, section, shipped["launch"]["cpu_processes"], vocab) is None, (name, section)
                processes = slurm[rule]["gpu"] * slurm[rule]["nodes"]
                problem = configcheck.batch_division(name, m, section, processes, vocab)
                assert (problem is None) == (base_model.get(name, name) in ("d20", "gpt2")), (name, section, problem)
                if problem:
                    assert problem.startswith(f"models.{name}.{section}.") and str(processes) in problem


def dry_run(*args, cwd=ROOT):
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"), "-d", str(cwd), *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


def test_slurm_profile_without_a_target_fails_before_any_job_saying_why():
    """No target builds every stage of default_models (tiny): its batches do not split over the
    profile's 8 GPUs, and the dry run says so - model, key, process count and where they come from."""
    rc, out = dry_run("--profile", str(ROOT / "profiles" / "slurm"))
    assert rc != 0
    assert "base_train of model 'tiny' cannot run on 8 processes (8 GPUs per node (the rule's gpu or gres resource) × 1 node)" in out
    assert "models.tiny.base.step_tokens 4096 is not a multiple of device_batch_rows × sequence_len × processes = 16 × 256 × 8 = 32768" in out
    assert "name a target or set default_models" in out


def test_slurm_profile_plans_every_training_stage_of_d20():
    rc, out = dry_run("--profile", str(ROOT / "profiles" / "slurm"), "results/rl/d20")
    assert rc == 0, out[-3000:]
    assert {"base_train", "mid_train", "chat_sft", "chat_rl"} <= set(re.findall(r"^rule (\w+):", out, re.M))


def test_a_2026_model_derives_its_step_by_the_2026_sizing(shipped):
    """gpt2's derived step is the D^0.383 law's 2^20 (d24 at vocab 32768), not the 2025 rule's 2^19: 32
    rows of 2048 split it over 16 processes, and 64 rows do not; without the vocabulary it cannot be derived."""
    gpt2, vocab = model(shipped, "gpt2", base={"device_batch_rows": 32}), 32768
    assert configcheck.batch_division("gpt2", gpt2, "base", 16, vocab) is None
    as_2025 = dict(gpt2, recipe="nanochat-2025-11")
    assert "step_tokens 524288 is not a multiple of device_batch_rows × sequence_len × processes = 32 × 2048 × 16" in configcheck.batch_division("gpt2", as_2025, "base", 16, vocab)
    gpt2["base"]["device_batch_rows"] = 64
    assert configcheck.batch_division("gpt2", gpt2, "base", 16, vocab) == (
        "models.gpt2.base.step_tokens 1048576 is not a multiple of device_batch_rows × sequence_len × processes = 64 × 2048 × 16 = 2097152")
    with pytest.raises(ValueError, match="depends on the vocabulary"):
        configcheck.batch_division("gpt2", gpt2, "base", 16)


def test_slurm_profile_plans_the_gpt2_speedrun_base_eval():
    """`snakemake --profile profiles/slurm -n results/base_eval/gpt2.csv`: ClimbMix, its 32k tokenizer, the
    CORE bundle, base_train on one 8-GPU node with a time limit above the plan's hours, base_eval over all items."""
    from snakechat import plan
    rc, out = dry_run("--profile", str(ROOT / "profiles" / "slurm"), "results/base_eval/gpt2.csv")
    assert rc == 0, out[-3000:]
    jobs = {m.group(1): m.group(2) for m in re.finditer(r"^rule (\w+):\n(.*?)^Shell command: ([^\n]*)", out, re.M | re.S)}
    shells = dict(re.findall(r"^rule (\w+):\n.*?^Shell command: ([^\n]*)", out, re.M | re.S))
    assert set(jobs) == {"dataset", "tok_train", "eval_bundle", "base_train", "base_eval"}
    assert "--val-index 6542" in shells["dataset"] and "climbmix-400b-shuffle" in shells["dataset"]
    assert "--vocab-size 32768" in shells["tok_train"]
    train = shells["base_train"]
    assert train.startswith("torchrun --standalone --nproc_per_node=8 -m snakechat.base_train")
    assert all(f in train for f in ("--depth 24", "--tokens-params-ratio 8", "--device-batch-rows 16", "--sequence-len 2048", "--step-tokens 0"))
    assert "--max-per-task 0" in shells["base_eval"] and "results/eval_bundle/core/core.yaml" in shells["base_eval"]
    resources = dict(re.findall(r"(\w+)=([^,\n]+)", re.search(r"resources: ([^\n]*)", jobs["base_train"]).group(1)))
    assert (resources["gpu"], resources["nodes"]) == ("8", "1")
    cfg = configcheck.validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), SCHEMA)
    planned = next(r for r in plan.stage_rows("gpt2", cfg)["rows"] if r["stage"] == "base_train")
    assert planned["hours"] * 60 < int(resources["runtime"]) < 3 * planned["hours"] * 60


def test_several_nodes_multiply_the_processes(tmp_path):
    """base_train on 2 nodes of 8 GPUs, set up in a copy of the profile as docs/cluster.md says."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["set-resources"]["base_train"].update(nodes=2, gres="gpu:8", gpu=0)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(profile))
    rc, out = dry_run("--profile", str(tmp_path), "results/base/d20")
    assert rc != 0
    assert "base_train of model 'd20' cannot run on 16 processes (8 GPUs per node (the rule's gpu or gres resource) × 2 nodes)" in out
    assert "= 32 × 2048 × 16 = 1048576" in out


def test_local_profile_counts_the_configured_cpu_processes(tmp_path):
    """tiny's step (16 rows of 256 tokens) is one micro-batch of one process: 2 CPU processes cannot share it."""
    overlay = tmp_path / "cpu2.yaml"
    overlay.write_text(yaml.safe_dump({"launch": {"cpu_processes": 2}}))
    rc, out = dry_run("--profile", str(ROOT / "profiles" / "local"), "--configfile", str(ROOT / "config" / "config.yaml"), str(overlay))
    assert rc != 0
    assert "base_train of model 'tiny' cannot run on 2 processes (2 CPU processes (launch.cpu_processes; no GPU here) × 1 node)" in out
    rc, out = dry_run("--profile", str(ROOT / "profiles" / "local"))
    assert rc == 0, out[-3000:]


def test_a_step_that_splits_on_no_process_count_fails_at_parse_time(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(yaml.safe_dump({"models": {"d20": {"sft": {"step_conversations": 30, "device_batch_rows": 4}}}}))
    rc, out = dry_run("results/base/d20", "--configfile", str(ROOT / "config" / "config.yaml"), str(overlay))
    assert rc != 0
    assert f"invalid config {ROOT / 'config' / 'config.yaml'}, {overlay}" in out
    assert "models.d20.sft.step_conversations 30 does not split over 1 processes in whole micro-batches of device_batch_rows 4" in out
    assert "Building DAG of jobs" not in out
