"""Validate a snakechat config against the schema, fill in defaults, and check cross-references.

Called by the Snakefile at parse time so that `snakemake -n` already fails on a bad config,
with a message that names the file and the key.
"""

import copy
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    pass


def _with_defaults(validator_class):
    """A validator that also writes each property's schema default into the instance."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key(path):
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error):
    """One line per schema error, naming the key it is about."""
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = _key(error.absolute_path)
        return "; ".join(f"unknown key {_key([*error.absolute_path, k])!r}" for k in extra) or f"{where}: {error.message}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"missing required key {_key([*error.absolute_path, missing])!r}"
    return f"{_key(error.absolute_path)}: {error.message}"


# sections of named entries: an overlay replaces or removes whole entries of these
NAMED_SECTIONS = ("datasets", "tokenizers", "eval_bundles", "chat_data", "models")
LOCAL_OVERLAY = "config/local.yaml"  # relative to the working directory, git-ignored


def apply_overlay(config, overlay, overlay_path):
    """`config` with a local overlay applied (see docs/configuration.md).

    In the named sections each entry of the overlay replaces the entry of that name whole (so an
    entry never keeps a URL or task of the shipped one), and an entry set to null removes it. Any
    other top-level key replaces the shipped value; null removes it (its schema default applies).
    """
    if overlay is None:
        return copy.deepcopy(config)
    if not isinstance(overlay, dict):
        raise ConfigError(f"invalid config overlay {overlay_path}: expected a mapping of top-level keys, got {type(overlay).__name__}")
    out = copy.deepcopy(config)
    for key, value in overlay.items():
        if key not in NAMED_SECTIONS:
            if value is None:
                out.pop(key, None)
            else:
                out[key] = copy.deepcopy(value)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"invalid config overlay {overlay_path}: {key}: expected a mapping of named entries, got {type(value).__name__}")
        section = out.setdefault(key, {})
        for name, entry in value.items():
            if entry is not None:
                section[name] = copy.deepcopy(entry)
            elif name in section:
                del section[name]
            else:
                known = ", ".join(sorted(section)) or "none"
                raise ConfigError(f"invalid config overlay {overlay_path}: {key}.{name}: null removes an entry, but there is no {name!r} (known: {known})")
    return out


def with_local_overlay(config, overlay_path, command_line):
    """What the Snakefile validates: the config Snakemake loaded, the local overlay applied if the
    file exists, then the command line's --configfile/--config values merged again on top, so that
    they win over the overlay as they win over the shipped file."""
    overlay_path = Path(overlay_path)
    if not overlay_path.exists():
        return config
    try:
        overlay = yaml.safe_load(overlay_path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid config overlay {overlay_path}: not YAML: {e}") from None
    from snakemake.utils import update_config  # Snakemake's own key-by-key merge

    config = apply_overlay(config, overlay, overlay_path)
    update_config(config, copy.deepcopy(command_line or {}))
    return config


def load(config, schema_path, configfiles=(), command_line=None, overlay_path=LOCAL_OVERLAY):
    """The Snakefile's config: the local overlay applied (when the file exists), then validated;
    errors name every file the config came from."""
    sources = [str(f) for f in configfiles or ["config/config.yaml"]]
    if Path(overlay_path).exists():
        sources.append(f"{overlay_path} (overlay)")
    config = with_local_overlay(config, overlay_path, command_line)
    return validate(config, schema_path, ", ".join(sources))


def validate(config, schema_path, config_path="config/config.yaml"):
    """Return a copy of `config` with defaults filled in, or raise ConfigError naming every problem."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    config = copy.deepcopy(config)
    Validator = _with_defaults(jsonschema.Draft7Validator)
    errors = sorted(Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    # if/then/else reports the branch's errors as its own context; show the leaves
    leaves = []
    for e in errors:
        leaves.extend(e.context if e.validator in ("if", "then", "else") and e.context else [e])
    if leaves:
        lines = "\n".join(f"  - {_describe(e)}" for e in leaves)
        raise ConfigError(f"invalid config {config_path}:\n{lines}")
    check_references(config, config_path)
    return config


# (section, field, section it must name)
REFERENCES = [
    ("tokenizers", "dataset", "datasets"),
    ("models", "tokenizer", "tokenizers"),
    ("models", "eval_bundle", "eval_bundles"),
    ("models", "chat_data", "chat_data"),
]


def check_references(config, config_path="config/config.yaml"):
    problems = []
    for section, field, target in REFERENCES:
        for name, entry in config.get(section, {}).items():
            ref = entry.get(field)
            if ref is not None and ref not in config.get(target, {}):
                known = ", ".join(sorted(config.get(target, {}))) or "none"
                problems.append(f"  - {section}.{name}.{field}: {ref!r} is not defined in {target} (known: {known})")
    for name in config.get("default_models", []):
        if name not in config.get("models", {}):
            problems.append(f"  - default_models: {name!r} is not defined in models")
    if problems:
        raise ConfigError(f"invalid config {config_path}:\n" + "\n".join(problems))
