"""Sweeps end to end through Snakemake on the built-in world, cut down (tests/pipeline/sweeps.yaml):
each run is its own base_train job, a scaling run spends its budget to within half a step, the
tables and plots are written, and a depth added to a series trains only that depth."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = "tests/pipeline/sweeps.yaml"
TARGETS = ["results/plots/series/tiny-series.png", "results/plots/scaling/tiny-scaling.png"]
pytestmark = pytest.mark.slow


def snakemake(work, *args, configfiles=(OVERRIDES,)):
    env = {**os.environ, "PYTHONPATH": str(work / "src"), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", "config/config.yaml", *configfiles]
    run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((work / "logs").rglob("*.log")))
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}\n{logs}")
    return run.stdout + run.stderr


def job_counts(out):
    """Rule name -> count of the jobs in Snakemake's job stats (printed before a run or a dry run)."""
    m = re.search(r"job\s+count\n[-\s]+\n(.*?)\ntotal", out, re.S)
    return {} if m is None else {line.split()[0]: int(line.split()[1]) for line in m.group(1).splitlines() if line.strip()}


def planned_jobs(work, *args, configfiles=(OVERRIDES,)):
    """(rule name -> count of the jobs a dry run would run, the dry run's output)."""
    out = snakemake(work, "-n", *args, configfiles=configfiles)
    return job_counts(out), out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    work = tmp_path_factory.mktemp("sweeps")
    for item in ("Snakefile", "workflow", "config", "src", "pyproject.toml", "environment.yml"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, work / item)
    (work / "tests/pipeline").mkdir(parents=True)
    shutil.copy(ROOT / OVERRIDES, work / OVERRIDES)
    return work, job_counts(snakemake(work, *TARGETS))


def test_each_run_is_its_own_base_train_job(sweep):
    _, planned = sweep
    # series: 2 depths (trained and CORE-scored); scaling: 2 budgets x 3 depths (trained only)
    assert planned["base_train"] == 2 + 6 and planned["base_eval"] == 2
    assert planned["series_table"] == planned["scaling_table"] == 1 and planned["sweep_plot"] == 2
    assert "mid_train" not in planned and "chat_sft" not in planned


def test_each_scaling_run_trains_for_its_budget(sweep):
    work, _ = sweep
    table = pd.read_csv(work / "results/scaling/tiny-scaling.csv")
    runs = table[table["kind"] == "run"]
    assert len(runs) == 6
    for r in runs.itertuples():
        meta = json.loads((work / "results/base" / r.run / "meta.json").read_text())
        step_flops = meta["derived"]["flops_per_token"] * meta["derived"]["step_tokens"]
        assert meta["flops"] == meta["step"] * step_flops  # the trainer's count, every step taken
        assert abs(meta["flops"] - r.budget) <= step_flops / 2, r.run
        assert r.budget_steps_off == pytest.approx((meta["flops"] - r.budget) / step_flops)
        assert r.run == f"tiny-scaling-{'4e9' if r.budget == 4e9 else '8e9'}-d{int(r.depth)}"
    # different depths at one budget took different numbers of steps
    assert runs.groupby("budget")["steps"].nunique().min() == 3
    assert set(table["kind"]) == {"run", "optimum", "law"}
    assert len(table[table["kind"] == "optimum"]) == 2


def test_series_table_has_a_row_per_depth(sweep):
    work, _ = sweep
    table = pd.read_csv(work / "results/series/tiny-series.csv")
    assert list(table["depth"]) == [1, 2]
    assert list(table["steps"]) == [6, 6]
    assert table["params"].is_monotonic_increasing and table["flops"].is_monotonic_increasing
    assert table[["tokens", "train_s", "val_bpb", "core"]].notna().all().all()
    for r in table.itertuples():
        core = pd.read_csv(work / f"results/base_eval/{r.run}.csv").set_index("label").loc["CORE", "centered"]
        assert r.core == pytest.approx(core)


def test_plots_are_written(sweep):
    work, _ = sweep
    for target in TARGETS:
        assert (work / target).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adding_a_depth_trains_only_that_depth(sweep):
    work, _ = sweep
    assert planned_jobs(work, *TARGETS)[0] == {}
    more = yaml.safe_load((work / OVERRIDES).read_text())
    more["sweeps"]["series"]["tiny-series"]["depths"].append(3)
    (work / "more.yaml").write_text(yaml.safe_dump(more))
    planned, out = planned_jobs(work, *TARGETS, configfiles=("more.yaml",))
    assert planned == {"base_train": 1, "base_eval": 1, "series_table": 1, "sweep_plot": 1}, out
    assert re.findall(r"^\s+output: (results/base/[^\s,]+)", out, re.M) == ["results/base/tiny-series-d3"]


def test_html_report_shows_the_sweep_plots_and_tables(sweep):
    work, _ = sweep
    snakemake(work, "--report", "results/sweeps.html", *TARGETS)
    html = (work / "results/sweeps.html").read_text()
    for name in ("tiny-series.png", "tiny-scaling.png", "tiny-series.csv", "tiny-scaling.csv", "Sweeps"):
        assert name in html, name
