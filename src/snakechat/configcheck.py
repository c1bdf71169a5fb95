"""Validate a snakechat config against the schema, fill in defaults, and check cross-references.

Called by the Snakefile at parse time so that `snakemake -n` already fails on a bad config,
with a message that names the file and the key.
"""

import copy

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
