"""What a new user meets first: the README's commands work as written, plain `snakemake` runs (the
default workflow profile), and the package says its license. Each command runs in a copy of the
workflow, as a user's checkout has it."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# README shell lines that cannot run here, by how they start, and why. Every other line runs.
NOT_RUN = {
    "python3 -m venv": "installs the package and builds the whole default pipeline (tests/test_pipeline.py builds it)",
    "bash tests/run.sh": "the test suite itself",
    ".venv/bin/python -m snakechat.chat_": "talks to a trained checkpoint (tests/test_chat_web.py)",
    "client": "Python, to a running server (tests/test_chat_web.py)",
    "pip install": "installs an extra",
    "vllm serve": "documented, not run (a GPU machine with vLLM)",
    "snakemake --profile profiles/slurm results/": "a real cluster run (tests/test_slurm.py)",
    "snakemake --profile profiles/local results/": "a real build (tests/test_export_hf.py)",
    "snakemake --report": "needs a built pipeline (tests/test_pipeline.py)",
    "snakemake --cores 2 results/plots/": "trains a sweep's runs (tests/test_sweeps.py builds smaller ones)",
}


def readme_code_lines(text):
    """The lines of the README's indented code blocks (fenced blocks are Python or diagrams)."""
    lines, fenced, in_block, prev_blank = [], False, False, True
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("    ") and line.strip() and (prev_blank or in_block):
            in_block = True
            lines.append(line.strip())
        elif line.strip():
            in_block = False
        prev_blank = not line.strip()
    return lines


def workflow_checkout(dest):
    """The workflow files a user's checkout has (no config/local.yaml, no results)."""
    for item in ("Snakefile", "workflow", "profiles", "environment.yml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    (dest / "config").mkdir()
    for name in ("config.yaml", "local.example.yaml"):
        shutil.copy(ROOT / "config" / name, dest / "config" / name)
    return dest


def shell(line, cwd):
    """Run one README line in bash as a user would, with this checkout's Python first on PATH."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def check_line(line, cwd):
    """None if the line worked: exit status 0 and every file it redirects into non-empty; else why not.
    Pipelines run under pipefail too, so a failing first command is not hidden by the last one."""
    run = shell(f"set -o pipefail; {line}", cwd)
    if run.returncode != 0:
        return f"exit status {run.returncode}: {run.stderr[-2000:]}"
    for target in re.findall(r">\s*([^\s|&;]+)", line.split("#")[0]):
        path = cwd / target
        if not path.exists() or path.stat().st_size == 0:
            return f"{target} is missing or empty"
    return None


def test_every_readme_command_that_can_run_here_works_as_written(tmp_path):
    """Lines run in the README's order, as a user goes through them (the last one adds config/local.yaml)."""
    checkout = workflow_checkout(tmp_path)
    lines = readme_code_lines((ROOT / "README.md").read_text())
    runnable = [line for line in lines if not any(line.startswith(prefix) for prefix in NOT_RUN)]
    assert any("--dag" in line for line in runnable) and any(" -n " in line for line in runnable)
    assert any("snakechat.plan" in line for line in runnable)
    for line in runnable:
        assert check_line(line, checkout) is None, (line, check_line(line, checkout))
    svg = (checkout / "dag.svg").read_text()
    assert "<svg" in svg and "base_eval" in svg and "base_train" in svg


def test_the_old_dag_command_is_caught(tmp_path):
    """Snakemake 9's --dag takes a format: the old line fails, which the check must see even though
    the shell's pipeline exits 0 and leaves an empty dag.svg."""
    checkout = workflow_checkout(tmp_path)
    old = "snakemake --dag results/base_eval/d20.csv | dot -Tsvg > dag.svg"
    assert shell(old, checkout).returncode == 0 and (checkout / "dag.svg").stat().st_size == 0
    assert "exit status" in check_line(old, checkout)


def test_plain_snakemake_runs_a_job_through_the_default_profile(tmp_path):
    """No --cores, no --profile: profiles/default gives the cores. Without it Snakemake refuses."""
    checkout = workflow_checkout(tmp_path)
    run = shell("snakemake results/plan/tiny.md", checkout)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "profiles/default" in run.stderr
    assert "Total:" in (checkout / "results/plan/tiny.md").read_text()
    bare = shell("snakemake --workflow-profile none --forceall results/plan/tiny.md", checkout)
    assert bare.returncode != 0 and "cores have to be specified" in bare.stderr


def test_the_default_profile_leaves_the_slurm_profiles_settings_alone(tmp_path):
    """Snakemake applies the workflow profile over --profile's key by key: a key set in both would
    silently replace the cluster's (its GPU partitions and node sizes)."""
    default = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())
    for other in ("local", "slurm"):
        overlap = set(default) & set(yaml.safe_load((ROOT / "profiles" / other / "config.yaml").read_text()))
        assert overlap <= ({"cores"} if other == "local" else set()), (other, overlap)
    run = shell("snakemake --profile profiles/slurm -n results/base/d20", workflow_checkout(tmp_path))
    assert run.returncode == 0 and "slurm_partition=gpu" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]


def test_license_is_mit_in_the_file_and_the_package_metadata():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 the snakechat authors")
    meta = importlib.metadata.metadata("snakechat")
    assert meta["License-Expression"] == "MIT" and "LICENSE" in meta.get_all("License-File")


def test_rules_are_formatted_with_snakefmt(tmp_path):
    """The workflow catalog's convention, kept by CI: `snakefmt --check` passes on every rule file,
    and fails on one that lost a blank line between two rules."""
    snakefmt = [str(Path(sys.executable).parent / "snakefmt"), "--config", str(ROOT / "pyproject.toml"), "--check"]
    run = subprocess.run([*snakefmt, "Snakefile", "workflow"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    text = (ROOT / "workflow/rules/data.smk").read_text()
    assert "\n\n\nrule " in text
    (tmp_path / "data.smk").write_text(text.replace("\n\n\nrule ", "\n\nrule ", 1))
    assert subprocess.run([*snakefmt, str(tmp_path / "data.smk")], capture_output=True, text=True).returncode == 1
