"""The config is validated when the Snakefile is parsed: bad config fails `snakemake -n` with the key and file named."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from snakechat.pipeline import configcheck
from shipped_workflow import ROOT, SCHEMA, good_config, refusal, run_in, workflow_copy


def test_shipped_config_is_valid_and_defaults_are_filled():
    cfg = configcheck.validate(good_config(), SCHEMA)
    assert cfg["launch"]["cpu_processes"] == 1
    assert cfg["tokenizers"]["tinyworld-4k"]["doc_cap"] == 10000
    assert "tiny" in cfg["models"] and "d20" in cfg["models"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["models"]["tiny"].__setitem__("depth", "four"), "models.tiny.depth: 'four' is not of type 'integer'"),
        (lambda c: c["models"]["tiny"].__setitem__("dpeth", 4), "unknown key 'models.tiny.dpeth'"),
        (lambda c: c["models"]["tiny"].pop("tokenizer"), "missing required key 'models.tiny.tokenizer'"),
        (lambda c: c["models"]["tiny"].__setitem__("tokenizer", "nope"), "models.tiny.tokenizer: 'nope' is not defined in tokenizers"),
        (lambda c: c["tokenizers"]["tinyworld-4k"].__setitem__("dataset", "nowhere"), "tokenizers.tinyworld-4k.dataset: 'nowhere' is not defined in datasets"),
        (lambda c: c["datasets"]["fineweb-edu"].pop("url"), "missing required key 'datasets.fineweb-edu.url'"),
        (lambda c: c["datasets"]["tinyworld"].__setitem__("kind", "ftp"), "datasets.tinyworld.kind: 'ftp' is not one of"),
    ],
)
def test_bad_config_names_the_key(mutate, expected):
    message = refusal(mutate)
    assert expected in message
    assert "my.yaml" in message


def test_snakemake_dry_run_fails_on_bad_config(tmp_path):
    cfg = good_config()
    cfg["models"]["tiny"]["eval_bundle"] = "missing-bundle"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "models.tiny.eval_bundle: 'missing-bundle' is not defined in eval_bundles" in out
    assert str(bad) in out


# --- config/local.yaml: whole named entries added, replaced or removed (docs/configuration.md) ---


def test_overlay_replaces_whole_entries_and_removes_with_null():
    overlay = yaml.safe_load((ROOT / "config/local.example.yaml").read_text())
    cfg = configcheck.validate(configcheck.apply_overlay(good_config(), overlay, "local.yaml"), SCHEMA)
    # the shipped nanochat entry is replaced, not merged: none of its tasks or hosts are left
    assert sorted(cfg["chat_data"]["nanochat"]["tasks"]) == ["gsm8k", "smoltalk"]
    urls = json.dumps(cfg["chat_data"]["nanochat"])
    assert "mirror.example.org" in urls and "huggingface.co" not in urls
    assert "d20" not in cfg["models"] and cfg["models"]["d12"]["depth"] == 12
    assert cfg["models"]["tiny"] == configcheck.validate(good_config(), SCHEMA)["models"]["tiny"]  # untouched
    assert cfg["default_models"] == ["d12"]


@pytest.mark.parametrize(
    "overlay, expected",
    [
        ({"models": {"d30": None}}, "local.yaml: models.d30: null removes an entry, but there is no 'd30' (known: d20, gpt2, tiny)"),
        ({"datasets": ["tinyworld"]}, "local.yaml: datasets: expected a mapping of named entries, got list"),
        ([1, 2], "local.yaml: expected a mapping of top-level keys, got list"),
    ],
)
def test_bad_overlay_names_the_file_and_key(overlay, expected):
    with pytest.raises(configcheck.ConfigError, match=re.escape(expected)):
        configcheck.apply_overlay(good_config(), overlay, "local.yaml")


def test_command_line_values_win_over_the_overlay(tmp_path):
    overlay = tmp_path / "local.yaml"
    shutil.copy(ROOT / "config/local.example.yaml", overlay)
    cfg = configcheck.with_local_overlay(good_config(), overlay, {"models": {"d12": {"depth": 6}}, "default_models": ["tiny"]})
    assert cfg["models"]["d12"]["depth"] == 6 and cfg["models"]["d12"]["tokenizer"] == "mytext-32k"
    assert cfg["default_models"] == ["tiny"]


def shell_commands(dry_run_output, module):
    return [line for line in dry_run_output.splitlines() if f"python -m snakechat.{module} " in line]


def test_the_documented_overlay_adds_data_and_a_model(tmp_path):
    """docs/configuration.md, step by step: copy the example, dry-run its model, plan it."""
    work = workflow_copy(tmp_path)
    shutil.copy(work / "config/local.example.yaml", work / "config/local.yaml")
    run = run_in(work, "snakemake", "-n", "-p", "results/report/d12.md")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (dataset,) = shell_commands(run.stdout, "dataset")
    assert "https://data.example.org/mytext/shard_{index:05d}.parquet" in dataset
    (chat_data,) = shell_commands(run.stdout, "chat_data")
    assert "mirror.example.org/gsm8k/train.parquet" in chat_data and "huggingface.co" not in chat_data
    assert "smoltalk" in chat_data and "mmlu" not in chat_data and "arc" not in chat_data
    for module in ("tok_train", "base_train", "mid_train", "chat_sft", "chat_rl", "report"):
        assert shell_commands(run.stdout, module), module
    plan = run_in(work, "snakechat.plan", "d12")
    assert plan.returncode == 0 and "# Plan for `d12`" in plan.stdout, plan.stderr
    gone = run_in(work, "snakechat.plan", "d20")
    assert gone.returncode != 0 and "model 'd20' is not in the config" in gone.stderr


def test_an_overlay_drops_entries(tmp_path):
    work = workflow_copy(tmp_path)
    drop = {"models": {"d20": None, "gpt2": None}, "tokenizers": {"fineweb-64k": None, "climbmix-32k": None},
            "datasets": {"fineweb-edu": None, "climbmix": None}, "eval_bundles": {"core": None},
            "chat_data": {"nanochat": None, "nanochat-2026": None}, "sweeps": None}  # the shipped sweeps include d20's
    (work / "config/local.yaml").write_text(yaml.safe_dump(drop))
    run = run_in(work, "snakemake", "-n", "-p")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert shell_commands(run.stdout, "base_train") and not re.search(r"\bfineweb|\bd20\b|climbmix|/gpt2\b", run.stdout)

    # dropping an entry that another still names is refused at parse time, naming key and file
    (work / "config/local.yaml").write_text(yaml.safe_dump({"datasets": {"tinyworld": None}}))
    run = run_in(work, "snakemake", "-n")
    assert run.returncode != 0
    assert "tokenizers.tinyworld-4k.dataset: 'tinyworld' is not defined in datasets" in run.stderr + run.stdout
    assert "config/local.yaml (overlay)" in run.stderr + run.stdout


def test_a_models_precision_reaches_every_stage_it_runs(tmp_path):
    """config -> rule params -> --precision of each module the model's rules run (schema default: auto)."""
    work = workflow_copy(tmp_path)
    modules = ("base_train", "base_loss", "base_eval", "mid_train", "chat_sft", "chat_rl", "chat_eval")
    for setting in ("auto", "fp32"):
        if setting != "auto":
            tiny = {**good_config()["models"]["tiny"], "precision": setting}
            (work / "config/local.yaml").write_text(yaml.safe_dump({"models": {"tiny": tiny}}))
        run = run_in(work, "snakemake", "-n", "-p")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        for module in modules:
            commands = shell_commands(run.stdout, module)
            assert commands and all(f"--precision {setting} " in c for c in commands), (module, setting)
    assert len(shell_commands(run.stdout, "chat_eval")) == 4  # one per stage


@pytest.mark.parametrize(
    "overlay, target, expected",
    [
        (None, "results/base/nope", "model 'nope' is not in the config (known: d20, gpt2, tiny)"),
        ({"models": {"tiny": None}, "default_models": ["d20"], "sweeps": None}, "results/sft/tiny", "model 'tiny' is not in the config (known: d20, gpt2)"),
    ],
)
def test_a_target_of_a_model_the_config_lacks_names_it_and_where_models_are_defined(tmp_path, overlay, target, expected):
    """Asked for by its path, a model that is not in the config (never was, or config/local.yaml
    dropped it) fails the dry run naming the model and the files that define models."""
    work = workflow_copy(tmp_path)
    if overlay is not None:
        (work / "config/local.yaml").write_text(yaml.safe_dump(overlay))
    run = run_in(work, "snakemake", "-n", target)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert expected in out and "models are defined under `models:` in config/config.yaml, and config/local.yaml adds" in out, out[-3000:]
    assert "KeyError" not in out
