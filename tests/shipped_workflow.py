"""The shipped config and workflow, for the tests of config checking: the config as Snakemake
reads it, what validating a changed copy says, and a copy of the workflow to run snakemake in."""

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snakechat.pipeline import configcheck

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def good_config():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


def refusal(mutate, config_path="my.yaml"):
    """The ConfigError's message for the shipped config changed by `mutate` (which must make it invalid)."""
    cfg = copy.deepcopy(good_config())
    mutate(cfg)
    with pytest.raises(configcheck.ConfigError) as err:
        configcheck.validate(cfg, SCHEMA, config_path)
    return str(err.value)


def workflow_copy(tmp_path):
    """The workflow as a user's checkout has it (no config/local.yaml of the developer's)."""
    shutil.copy(ROOT / "Snakefile", tmp_path / "Snakefile")
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow")
    (tmp_path / "config").mkdir()
    for name in ("config.yaml", "local.example.yaml"):
        shutil.copy(ROOT / "config" / name, tmp_path / "config" / name)
    return tmp_path


def run_in(work, *cmd):
    """`python -m *cmd` in `work`, with this checkout's snakechat."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", *cmd], cwd=work, env=env, capture_output=True, text=True)


def dry_run(work, *args):
    """(exit status, stdout + stderr) of `snakemake -n *args` in `work`."""
    run = run_in(work, "snakemake", "-n", *args)
    return run.returncode, run.stdout + run.stderr
