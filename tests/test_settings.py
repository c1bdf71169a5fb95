"""One vocabulary of settings: every config key a rule passes is a flag of its module, and the
module's own default for it is the schema's default (so a stage run by hand behaves as in the
pipeline). The parsers are the modules' real ones, caught as they are about to parse."""

import argparse
import importlib
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())

# schema section (a path of property names; "*" = any entry) -> the modules its keys are passed to
SECTIONS = {
    ("models", "*", "base"): ["base_train"],
    ("models", "*", "base_loss"): ["base_loss"],
    ("models", "*", "base_eval"): ["base_eval"],
    ("models", "*", "mid"): ["mid_train"],
    ("models", "*", "sft"): ["chat_sft"],
    ("models", "*", "rl"): ["chat_rl"],
    ("models", "*", "chat_eval"): ["chat_eval"],
    ("tokenizers", "*"): ["tok_train", "tok_eval"],
    ("datasets", "*"): ["dataset"],
    ("eval_bundles", "*"): ["eval_bundle"],
    ("chat_data", "*"): ["chat_data"],
}
NOT_FLAGS = {("models", "*", "mid"): {"enabled"}, ("tokenizers", "*"): {"dataset"}}  # read by the rules, not passed on


class Caught(Exception):
    def __init__(self, parser):
        self.parser = parser


def module_parser(name, monkeypatch):
    """The argparse parser `python -m snakechat.<name>` builds, stopped before it parses."""
    def catch(self, *args, **kwargs):
        raise Caught(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    module = importlib.import_module(f"snakechat.{name}")
    with pytest.raises(Caught) as caught:
        module.main([])
    return caught.value.parser


def section_properties(path):
    """{key: schema} of a section, the keys of every if/then/else branch included."""
    node = SCHEMA
    for part in path:
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    props = dict(node.get("properties", {}))
    for branch in ("then", "else"):
        props.update({k: v for k, v in node.get(branch, {}).get("properties", {}).items() if v})
    return props


def comparable(value):
    """JSON-typed flags keep their default as JSON text."""
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def compare(path, parsers):
    """(keys of the section no parser has a flag for, flags whose default differs from the schema's)."""
    actions = {}
    for name, parser in parsers.items():
        for action in parser._actions:
            actions.setdefault(action.dest, []).append((name, action))
    missing, drift = [], []
    for key, spec in section_properties(path).items():
        if key in NOT_FLAGS.get(path, ()):
            continue
        if key not in actions:
            missing.append(key)
            continue
        for module, action in actions[key]:
            if "default" in spec and not action.required and comparable(action.default) != spec["default"]:
                drift.append(f"{module} --{key.replace('_', '-')}: {action.default!r}, schema {spec['default']!r}")
    return missing, drift


@pytest.mark.parametrize("path", list(SECTIONS), ids=lambda p: ".".join(p))
def test_every_key_is_a_flag_whose_default_is_the_schemas(path, monkeypatch):
    missing, drift = compare(path, {name: module_parser(name, monkeypatch) for name in SECTIONS[path]})
    assert not missing, f"keys of {'.'.join(path)} that {SECTIONS[path]} have no flag for: {missing}"
    assert not drift, "CLI defaults that differ from the schema's:\n" + "\n".join(drift)


def test_the_comparison_finds_a_changed_default_and_a_missing_flag(monkeypatch):
    path = ("models", "*", "chat_eval")
    schema_default = section_properties(path)["max_per_task"]["default"]
    parser = module_parser("chat_eval", monkeypatch)
    next(a for a in parser._actions if a.dest == "max_per_task").default = schema_default + 1
    parser._actions = [a for a in parser._actions if a.dest != "top_k"]
    missing, drift = compare(path, {"chat_eval": parser})
    assert missing == ["top_k"]
    assert drift == [f"chat_eval --max-per-task: {schema_default + 1}, schema {schema_default}"]


# a key of a model's config entry that every stage of the model takes -> the modules its rules pass it to
MODEL_WIDE = {key: ["base_train", "base_loss", "base_eval", "mid_train", "chat_sft", "chat_rl", "chat_eval"] for key in ("precision", "tracking")}
MODEL_WIDE["recipe"] = ["base_train"]  # later stages rebuild the recipe from the checkpoint


@pytest.mark.parametrize("key", list(MODEL_WIDE))
def test_model_wide_keys_are_flags_of_every_stage_with_the_schemas_default_and_choices(key, monkeypatch):
    spec = SCHEMA["properties"]["models"]["additionalProperties"]["properties"][key]
    for name in MODEL_WIDE[key]:
        action = next((a for a in module_parser(name, monkeypatch)._actions if a.dest == key), None)
        assert action is not None, f"snakechat.{name} has no --{key}"
        assert action.default == spec["default"] and list(action.choices) == spec["enum"], name
