"""Typed settings for the stages' CLIs: a stage declares its settings once, as a dataclass whose
fields are its flags (`device_batch_rows` -> `--device-batch-rows`), and gets back an instance of
that class rather than an argparse namespace.

    @dataclass(kw_only=True)
    class MySettings:
        out: str = option(help="directory to write", identity=False)
        steps: int = option(0, "optimizer steps (0: derived)")

    settings = parse(MySettings, argv, __doc__)

The field names are the config keys (workflow/schemas/config.schema.yaml), and a field's default
is the CLI's default; tests/test_settings.py checks that both agree with the schema. Fields marked
`identity=False` change nothing a run computes (where it writes, how often it logs or evaluates)
or stand for files that count by their content instead (snakechat.train.trainer hashes a run's inputs):
a resumed run may differ in them (see `identity`).
"""

import argparse
import dataclasses
import json
import math


def option(default=dataclasses.MISSING, help="", *, parse=None, choices=None, identity=True):
    """A settings field: its default (none: the flag is required), help text, the function that
    reads the flag's text (default: the field's type), allowed values, and whether it is part of
    the run's identity."""
    metadata = {"help": help, "parse": parse, "choices": choices, "identity": identity}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: json.loads(json.dumps(default)), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def json_arg(text):
    """Reads a JSON flag (the rules pass lists and mixtures as JSON)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {text!r} ({e})") from e


json_arg.__name__ = "JSON"  # argparse names the type in its error messages


def finite_float(text):
    """Reads a number flag, refusing NaN and infinity (a NaN bound compares false with everything,
    so it would switch a check off rather than set it)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


finite_float.__name__ = "finite number"


def parser(cls, description):
    """The argparse parser of a settings class."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default if f.default is not dataclasses.MISSING else f.default_factory()
        p.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=f.metadata.get("parse") or (finite_float if f.type in (float, "float") else f.type), default=default,
            required=required, choices=f.metadata.get("choices"), help=f.metadata.get("help"),
        )
    return p


def parse(cls, argv, description):
    """Settings from command-line flags; a value the class refuses (ValueError in __post_init__)
    is reported as a usage error naming it."""
    p = parser(cls, description)
    try:
        return cls(**vars(p.parse_args(argv)))
    except ValueError as e:
        p.error(str(e))


def identity(settings):
    """The fields that change what a run computes: a saved training state is only resumed under
    the same values."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.metadata.get("identity", True)}


def as_dict(settings, drop=()):
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in drop}
