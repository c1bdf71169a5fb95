"""Config errors the schema alone cannot catch surface when the workflow is parsed: task names that
point nowhere, URLs that cannot be downloaded from, sizes out of bounds or against each other,
duplicate YAML keys and YAML syntax errors - each named by key (or line) and file, by `snakemake -n`."""

import pytest
import yaml

from snakechat.pipeline import configcheck
from shipped_workflow import ROOT, SCHEMA, dry_run, good_config, refusal, workflow_copy


def setter(*path_and_value):
    *path, key, value = path_and_value

    def mutate(cfg):
        node = cfg
        for p in path:
            node = node[p]
        node[key] = value

    return mutate


CASES = {
    "mixture task": (setter("models", "tiny", "sft", "mixture", {"wolrd_chat": {"weight": 10}}),
                     "models.tiny.sft.mixture: 'wolrd_chat' is not a task of chat_data 'tinyworld' (its tasks: arithmetic_tool, identity, spelling, word_problems, world_chat, world_mc)"),
    "mid mixture of downloaded data": (setter("models", "d20", "mid", "mixture", {"smoltak": {"epochs": 1}}),
                                       "models.d20.mid.mixture: 'smoltak' is not a task of chat_data 'nanochat'"),
    "rl task": (setter("models", "tiny", "rl", "tasks", ["word_problem"]), "models.tiny.rl.tasks: 'word_problem' is not a task of chat_data 'tinyworld'"),
    "rl task of the wrong kind": (setter("models", "tiny", "rl", "tasks", ["world_mc"]),
                                  "models.tiny.rl.tasks: 'world_mc' is a mc task; RL needs gsm8k-kind tasks (here: spelling, word_problems)"),
    "world task": (setter("chat_data", "nanochat", "world_tasks", ["idenity"]), "chat_data.nanochat.world_tasks: 'idenity' is not a task of the built-in world"),
    "url without index": (setter("datasets", "fineweb-edu", "url", "https://example.org/shard.parquet"),
                          "datasets.fineweb-edu.url: 'https://example.org/shard.parquet' has no {index} field"),
    "url with another field": (setter("datasets", "fineweb-edu", "url", "https://example.org/{part}/{index}.parquet"),
                               "datasets.fineweb-edu.url: 'https://example.org/{part}/{index}.parquet' must be a template whose only field is {index}"),
    "url without scheme": (setter("datasets", "fineweb-edu", "url", "/data/shard_{index:05d}.parquet"),
                           "datasets.fineweb-edu.url: '/data/shard_{index:05d}.parquet' is not an http(s) URL"),
    "url of another scheme": (setter("datasets", "fineweb-edu", "url", "ftp://example.org/shard_{index:05d}.parquet"),
                              "datasets.fineweb-edu.url: 'ftp://example.org/shard_{index:05d}.parquet' is not an http(s) URL"),
    "bundle url": (setter("eval_bundles", "core", "url", "file:///tmp/eval_bundle.zip"), "eval_bundles.core.url: 'file:///tmp/eval_bundle.zip' is not an http(s) URL"),
    "chat data url": (setter("chat_data", "nanochat", "tasks", "gsm8k", "splits", "test", ["s3://bucket/test.parquet"]),
                      "chat_data.nanochat.tasks.gsm8k.splits.test.0: 's3://bucket/test.parquet' is not an http(s) URL"),
    "depth": (setter("models", "tiny", "depth", 1000), "models.tiny.depth: 1000 is greater than the maximum of 64"),
    "vocab size": (setter("tokenizers", "tinyworld-4k", "vocab_size", 10**9), "tokenizers.tinyworld-4k.vocab_size: 1000000000 is greater than the maximum of 1048576"),
    "shards": (setter("datasets", "tinyworld", "shards", 10**7), "datasets.tinyworld.shards: 10000000 is greater than the maximum of 100000"),
    "sequence length": (setter("models", "tiny", "base", "sequence_len", 10**7), "models.tiny.base.sequence_len: 10000000 is greater than the maximum of 131072"),
    "head dim": (setter("models", "tiny", "base", "head_dim", 4096), "models.tiny.base.head_dim: 4096 is greater than the maximum of 1024"),
    "unknown recipe": (setter("models", "tiny", "recipe", "nanochat-2027-01"), "models.tiny.recipe: 'nanochat-2027-01' is not one of ['nanochat-2025-11', 'nanochat-2026-07']"),
    "export of a 2026 model": (lambda cfg: cfg["models"]["tiny"].update(recipe="nanochat-2026-07", export_hf=["base"]),
                               "models.tiny.export_hf: ['base'] cannot be exported: a nanochat-2026-07 model has value embeddings"),
    "mid stage of a 2026 model": (setter("models", "tiny", "recipe", "nanochat-2026-07"),
                                  "models.tiny.mid.enabled: a nanochat-2026-07 model's SFT starts from its base checkpoint"),
    "mid rows longer than the model's": (setter("models", "tiny", "mid", "sequence_len", 512),
                                         "models.tiny.mid.sequence_len: 512 is longer than the model's context, base.sequence_len 256"),
    "val shard among the training shards": (setter("datasets", "climbmix", "val_index", 100),
                                            "datasets.climbmix.val_index: 100 is one of the training shards 0 … 169 (shards 171): it must be at least 170"),
}


@pytest.mark.parametrize("case", CASES)
def test_each_problem_is_named_by_key_and_file(case):
    mutate, expected = CASES[case]
    message = refusal(mutate)
    assert expected in message
    assert "invalid config my.yaml" in message


def test_the_shipped_config_passes_every_check():
    configcheck.validate(good_config(), SCHEMA)


def test_world_task_list_is_the_worlds():
    from snakechat.world import chat as world_chat

    assert configcheck.WORLD_CHAT_TASKS == {name: kind for name, kind, *_ in world_chat.TASKS}


def test_duplicate_keys_and_syntax_errors_name_file_and_line(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("models:\n  tiny:\n    depth: 4\n    tokenizer: a\n    depth: 6\ndefault_models: [tiny]\n")
    with pytest.raises(configcheck.ConfigError) as err:
        configcheck.read_yaml(dup)
    assert f"{dup}:5: duplicate key 'models.tiny.depth' (first given at line 3)" in str(err.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  tiny:\n    depth: [4\n    tokenizer: a\n")
    with pytest.raises(configcheck.ConfigError) as err:
        configcheck.read_yaml(bad)
    assert f"invalid config {bad}:4:" in str(err.value) and "not YAML" in str(err.value)
    merged = tmp_path / "merged.yaml"  # YAML merge keys are not duplicates: the explicit key wins
    merged.write_text("base: &b {depth: 4, vocab: 9}\nmodel:\n  <<: *b\n  depth: 6\n")
    assert configcheck.read_yaml(merged)["model"] == {"depth": 6, "vocab": 9}


# --- the same through `snakemake -n`, each case on its own ---


DRY_RUN_CASES = ["mixture task", "rl task", "url without index", "url without scheme", "depth", "mid rows longer than the model's", "export of a 2026 model"]


@pytest.mark.parametrize("case", DRY_RUN_CASES)
def test_dry_run_fails_naming_key_and_file(tmp_path, case):
    work = workflow_copy(tmp_path)
    mutate, expected = CASES[case]
    cfg = good_config()
    mutate(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    code, out = dry_run(work, "--configfile", str(bad))
    assert code != 0
    assert expected in out and str(bad) in out, out[-3000:]


def test_dry_run_fails_on_a_duplicate_key_in_a_configfile(tmp_path):
    work = workflow_copy(tmp_path)
    text = (ROOT / "config/config.yaml").read_text()
    bad = tmp_path / "dup.yaml"
    bad.write_text(text + "\ndefault_models: [d20]\n")
    line = text.count("\n") + 2
    first = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("default_models:"))
    code, out = dry_run(work, "--configfile", str(bad))
    assert code != 0
    assert f"{bad}:{line}: duplicate key 'default_models' (first given at line {first})" in out, out[-3000:]


@pytest.mark.parametrize("where", ["config/config.yaml", "config/local.yaml"])
def test_dry_run_fails_on_yaml_syntax_errors_with_file_and_line(tmp_path, where):
    work = workflow_copy(tmp_path)
    (work / where).write_text("default_models: [tiny\nmodels: {}\n")
    code, out = dry_run(work)
    assert code != 0
    assert f"invalid config {where}:2:" in out and "not YAML" in out, out[-3000:]


def test_dry_run_fails_on_a_duplicate_key_in_the_shipped_file(tmp_path):
    work = workflow_copy(tmp_path)
    text = (work / "config/config.yaml").read_text()
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("default_models:"))
    (work / "config/config.yaml").write_text(text.replace("default_models: [tiny]\n", "default_models: [tiny]\ndefault_models: [d20]\n"))
    code, out = dry_run(work)
    assert code != 0
    assert f"config/config.yaml:{line + 1}: duplicate key 'default_models' (first given at line {line})" in out, out[-3000:]


# --- numbers that are not finite, YAML that is not plain, and --config values (issue 33) ---


@pytest.mark.parametrize("mutate, key", [
    (setter("models", "tiny", "base", "grad_clip", float("nan")), "models.tiny.base.grad_clip"),
    (setter("datasets", "fineweb-edu", "max_retry_wait", float("nan")), "datasets.fineweb-edu.max_retry_wait"),
    (setter("datasets", "fineweb-edu", "max_retry_wait", float("inf")), "datasets.fineweb-edu.max_retry_wait"),
])
def test_non_finite_numbers_are_refused_by_key_and_file(mutate, key):
    message = refusal(mutate)
    assert f"{key}: " in message and "is not a finite number" in message and "invalid config my.yaml" in message


def test_a_nan_in_a_configfile_fails_the_dry_run(tmp_path):
    work = workflow_copy(tmp_path)
    bad = tmp_path / "nan.yaml"
    bad.write_text("models: {tiny: {base: {grad_clip: .nan}}}\n")
    code, out = dry_run(work, "--configfile", str(bad))
    assert code != 0 and "models.tiny.base.grad_clip: nan is not a finite number" in out and str(bad) in out, out[-3000:]


def alias_bomb(levels=12):
    """A few hundred bytes that stand for 3**levels values."""
    lines = ["l0: &l0 {x: 1, y: 1, z: 1}"]
    lines += [f"l{i}: &l{i} {{x: *l{i - 1}, y: *l{i - 1}, z: *l{i - 1}}}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_aliases_are_bounded(tmp_path):
    import time

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(20))
    start = time.perf_counter()
    with pytest.raises(configcheck.ConfigError) as err:
        configcheck.read_yaml(bomb)
    assert time.perf_counter() - start < 2
    assert f"invalid config {bomb}:" in str(err.value) and "aliases expand to more than" in str(err.value)
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [1, *a]\n")
    with pytest.raises(configcheck.ConfigError, match="refers to the value that contains it"):
        configcheck.read_yaml(loop)
    fine = tmp_path / "fine.yaml"  # aliases within the bound still read, duplicate keys still found under them
    fine.write_text(alias_bomb(5) + "d: &d {x: 1, x: 2}\ne: [*d, *d]\n")
    with pytest.raises(configcheck.ConfigError, match="duplicate key 'd.x'"):
        configcheck.read_yaml(fine)
    fine.write_text(alias_bomb(5))
    assert configcheck.read_yaml(fine)["l4"]["x"]["y"]["z"]["x"] == {"x": 1, "y": 1, "z": 1}


def test_an_alias_bomb_in_the_overlay_fails_the_dry_run_at_once(tmp_path):
    work = workflow_copy(tmp_path)
    (work / "config/local.yaml").write_text(alias_bomb(20))
    code, out = dry_run(work)
    assert code != 0 and "invalid config config/local.yaml:" in out and "aliases expand to more than" in out, out[-3000:]


@pytest.mark.parametrize("content, expected", [
    (b"models:\n  tiny: {depth: \xff}\n", ":2: not UTF-8 text (byte 0xff at offset 24)"),
    (b"models:\n  tiny: {depth: !!int abc}\n", ":2:17: cannot read tag:yaml.org,2002:int value 'abc'"),
    (b"models: !!python/object/apply:os.system [true]\n", ":1:9: not YAML: could not determine a constructor"),
    (b"models:\n  tiny: {depth: 4\x07}\n", ":2: not YAML: character U+0007 is not allowed"),
])
def test_every_yaml_error_names_file_and_line(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(configcheck.ConfigError) as err:
        configcheck.read_yaml(path)
    assert f"invalid config {path}{expected}" in str(err.value)


def test_a_non_utf8_overlay_fails_the_dry_run_naming_it(tmp_path):
    work = workflow_copy(tmp_path)
    (work / "config/local.yaml").write_bytes(b"models:\n  tiny: {depth: \xff}\n")
    code, out = dry_run(work)
    assert code != 0 and "invalid config config/local.yaml:2: not UTF-8 text" in out, out[-3000:]


def test_nested_config_values_from_the_command_line_are_typed_by_the_schema(tmp_path):
    work = workflow_copy(tmp_path)
    code, out = dry_run(work, "results/plan/tiny.md", "--config", "models={tiny: {base: {steps: 5, grad_clip: 0.5}, mid: {enabled: false}}}")
    assert code == 0, out[-3000:]
    with pytest.raises(configcheck.ConfigError, match="models.tiny.base.steps: 'five' is not of type 'integer'"):
        configcheck.load(good_config(), SCHEMA, command_line={"models": {"tiny": {"base": {"steps": "five"}}}}, overlay_path=tmp_path / "none.yaml")
    schema = yaml.safe_load(SCHEMA.read_text())
    typed = configcheck.typed_by_schema({"models": {"tiny": {"depth": "4", "base": {"grad_clip": "0.5"}, "eval_bundle": "core"}},
                                         "datasets": {"x": {"timeout": "1e3"}}}, schema)
    assert typed["models"]["tiny"] == {"depth": 4, "base": {"grad_clip": 0.5}, "eval_bundle": "core"}
    assert typed["datasets"]["x"]["timeout"] == 1000.0


def test_number_flags_refuse_nan_and_infinity(capsys):
    """The stages' CLIs refuse what the config check refuses, for a run started by hand."""
    from dataclasses import dataclass

    from snakechat import eval_bundle
    from snakechat.runtime import settings

    @dataclass(kw_only=True)
    class Clip:
        grad_clip: float = settings.option(1.0, "max gradient norm")

    assert settings.parse(Clip, ["--grad-clip", "0.5"], "").grad_clip == 0.5
    for value in ("nan", "inf", "Infinity"):
        with pytest.raises(SystemExit):
            settings.parse(Clip, ["--grad-clip", value], "")
        assert f"--grad-clip: invalid finite number value: '{value}'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_bundle.main(["--out", "x/core.yaml", "--kind", "http", "--url", "http://127.0.0.1:9/b.zip", "--max-retry-wait", "nan"])
    assert "--max-retry-wait: invalid finite number value: 'nan'" in capsys.readouterr().err
