"""The whole default DAG for `tiny`, end to end through Snakemake, then what a user does with it:
the HTML report, provenance, and re-running only what a config or code change makes stale.

The workflow and the package are copied to a temporary directory (the package put first on
PYTHONPATH), so that the test can edit code there and see which jobs Snakemake would re-run.
"""

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
pytestmark = pytest.mark.slow

STAGES = ["base", "mid", "sft", "rl"]
EXPORTED = ["base", "sft"]  # tests/pipeline/quick.yaml: export_hf
PLOTS = ["training", "throughput", "tokenizer", "core", "chat_eval", "rl", "time"]


def snakemake(workdir, *args, check=True, timeout=1500):
    env = {**os.environ, "PYTHONPATH": str(workdir / "src"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/config.yaml", "tests/pipeline/quick.yaml", *args]
    run = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{run.stdout[-5000:]}\n{run.stderr[-5000:]}\n{logs}")
    return run


def planned_jobs(workdir):
    """Rule name -> count of the jobs a dry run would run (empty when nothing is to be done)."""
    out = snakemake(workdir, "-n").stdout
    m = re.search(r"job\s+count\n[-\s]+\n(.*?)\ntotal", out, re.S)
    return {} if m is None else {line.split()[0]: int(line.split()[1]) for line in m.group(1).splitlines() if line.strip()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    for item in ("Snakefile", "workflow", "config", "profiles", "src", "pyproject.toml", "environment.yml"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, work / item)
    (work / "tests/pipeline").mkdir(parents=True)
    shutil.copy(ROOT / "tests/pipeline/quick.yaml", work / "tests/pipeline/quick.yaml")
    snakemake(work)
    return work


def test_every_stage_of_tiny_is_built(pipeline):
    r = pipeline / "results"
    for stage in STAGES:
        meta = json.loads((r / stage / "tiny" / "meta.json").read_text())
        assert meta["step"] > 0 and (r / stage / "tiny" / "model.pt").exists()
        log = pd.read_csv(r / stage / "tiny" / "train_log.csv")
        assert len(log) > 0
    core = pd.read_csv(r / "base_eval/tiny.csv")
    assert core["label"].iloc[-1] == "CORE" and len(core) > 3
    loss = json.loads((r / "base_loss/tiny.json").read_text())
    assert loss["val_bpb"] > 0 and loss["samples"]
    for stage in STAGES:
        chat = pd.read_csv(r / f"chat_eval/tiny/{stage}.csv")
        assert chat["task"].iloc[-1] == "ChatCORE"
        tasks = json.loads((r / "chat_data/tinyworld/tasks.json").read_text())["tasks"]
        scored = {t for t, spec in tasks.items() if "test" in spec["splits"] and spec["kind"] in ("mc", "gsm8k", "humaneval")}
        assert set(chat["task"].iloc[:-1]) == scored and scored
    assert (r / "tokenizer/tinyworld-4k/tok_eval.csv").exists()
    for plot in PLOTS:
        assert (r / f"plots/{plot}.png").read_bytes()[:4] == b"\x89PNG", plot
    card = (r / "report/tiny.md").read_text()
    for heading in ("## Stages", "## Environment", "## Model", "## Time and cost", "## Metrics"):
        assert heading in card
    assert "not run" not in card
    assert "| plan" not in card and "base_train" in (r / "plan/tiny.md").read_text()
    for stage in EXPORTED:
        assert json.loads((r / f"hf/tiny/{stage}/config.json").read_text())["model_type"] == "nanochat"
        assert (r / f"hf/tiny/{stage}/model.safetensors").exists()


def test_nothing_left_to_do(pipeline):
    assert planned_jobs(pipeline) == {}


def test_html_report_has_every_plot_and_table(pipeline):
    snakemake(pipeline, "--report", "results/report.html")
    html = (pipeline / "results/report.html").read_text()
    for plot in PLOTS:
        assert f"{plot}.png" in html, plot
    for name in ("tok_eval.csv", "tiny.md", "base_eval", "chat_eval", "snakechat_export.json"):
        assert name in html, name


def readme_command(start):
    """The README's shell line that starts with `start` (so the test runs what the README says)."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.strip().startswith(start):
            return line.strip()
    raise AssertionError(f"the README has no line starting with {start!r}")


def test_readme_install_is_enough_for_the_html_report(pipeline):
    """The README's install into a fresh venv (torch and the project, no test extras), then the
    README's report command with that venv alone on PATH."""
    install = readme_command("python3 -m venv .venv").split(" && PATH=")[0]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p).resolve() != Path(sys.executable).parent.resolve())
    run = subprocess.run(["bash", "-c", install], cwd=pipeline, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    venv = pipeline / ".venv"
    assert not (venv / "bin/pytest").exists()  # nothing of the test extras

    (pipeline / "results/report.html").unlink(missing_ok=True)
    report = readme_command("snakemake --report").split()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    run = subprocess.run([*report, "--configfile", "config/config.yaml", "tests/pipeline/quick.yaml"], cwd=pipeline, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    html = (pipeline / "results/report.html").read_text()
    for plot in PLOTS:
        assert f"{plot}.png" in html, plot


def test_every_result_carries_its_provenance(pipeline):
    r = pipeline / "results"
    blocks = [json.loads((r / s / "tiny/meta.json").read_text())["provenance"] for s in STAGES]
    blocks.append(json.loads((r / "base_loss/tiny.json").read_text())["provenance"])
    blocks += [json.loads((r / f"hf/tiny/{s}/snakechat_export.json").read_text())["provenance"] for s in EXPORTED]
    for sidecar in [r / "base_eval/tiny.csv.meta.json", *[r / f"chat_eval/tiny/{s}.csv.meta.json" for s in STAGES]]:
        blocks.append(json.loads(sidecar.read_text())["provenance"] if "provenance" in json.loads(sidecar.read_text()) else json.loads(sidecar.read_text()))
    for block in blocks:
        assert {"config", "config_hash", "inputs", "code_fingerprint", "git_commit"} <= set(block), block.keys()
        assert block["inputs"], block["module"]


def test_a_param_change_reruns_that_stage_and_what_depends_on_it(pipeline):
    quick = pipeline / "tests/pipeline/quick.yaml"
    original = quick.read_text()
    cfg = yaml.safe_load(original)
    cfg["models"]["tiny"]["base_eval"]["max_per_task"] = 10
    quick.write_text(yaml.safe_dump(cfg))
    try:
        jobs = planned_jobs(pipeline)
    finally:
        quick.write_text(original)
    assert set(jobs) == {"base_eval", "plan", "plot", "report_card", "all"}, jobs  # the plan prices base_eval by max_per_task
    assert jobs["plot"] == 2  # the CORE plot, and the time plot (base_eval's benchmark file)


def test_a_code_change_reruns_exactly_the_stages_that_import_it(pipeline):
    def edit_and_plan(module):
        path = pipeline / "src/snakechat" / f"{module}.py"
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        try:
            return planned_jobs(pipeline)
        finally:
            path.write_text(original)

    assert set(edit_and_plan("report")) == {"report_card", "all"}
    after_trainer_edit = set(edit_and_plan("train/trainer"))
    assert {"base_train", "base_loss", "base_eval", "mid_train", "chat_sft", "chat_rl", "chat_eval", "report_card"} <= after_trainer_edit
    assert not after_trainer_edit & {"dataset", "tok_train", "tok_eval", "eval_bundle", "chat_data"}
