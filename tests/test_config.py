"""The config is validated when the Snakefile is parsed: bad config fails `snakemake -n` with the key and file named."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snakechat import configcheck

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def good_config():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


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
    cfg = copy.deepcopy(good_config())
    mutate(cfg)
    with pytest.raises(configcheck.ConfigError) as err:
        configcheck.validate(cfg, SCHEMA, "my.yaml")
    assert expected in str(err.value)
    assert "my.yaml" in str(err.value)


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
