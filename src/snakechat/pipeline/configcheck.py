"""Validate a snakechat config against the schema, fill in defaults, and check cross-references.

Called by the Snakefile at parse time so that `snakemake -n` already fails on a bad config,
with a message that names the file and the key: YAML syntax errors and duplicate keys (file and
line), schema errors (types, unknown keys, bounds), names that point nowhere (a model's tokenizer,
a mixture's or RL's tasks), and URLs that cannot be downloaded from.
"""

import copy
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import yaml

from snakechat.model import recipes
from snakechat.pipeline import sweeps
from snakechat.pipeline.configfiles import ConfigError, check_yaml_files, non_finite, read_yaml, typed_by_schema  # noqa: F401 (the Snakefile's API)


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
    overlay = read_yaml(overlay_path)
    from snakemake.utils import update_config  # Snakemake's own key-by-key merge

    config = apply_overlay(config, overlay, overlay_path)
    update_config(config, copy.deepcopy(command_line or {}))
    return config


# what one entry of each named section is, in an error's words
ENTRY_KINDS = {"datasets": "dataset", "tokenizers": "tokenizer", "eval_bundles": "eval bundle", "chat_data": "chat data", "models": "model"}


def entry(config, section, name, config_path="config/config.yaml"):
    """config[section][name]: the entry a target's wildcard names, or ConfigError naming it, the
    entries there are and the files where they are defined (a target Snakemake was asked for can
    name anything; a plain KeyError would say only the name)."""
    entries = config.get(section) or {}
    if name not in entries:
        runs = {r["run"] for r in sweeps.runs(config)} if section == "models" else set()
        known = ", ".join(sorted(set(entries) - runs)) or "none"
        also = "; the config's sweeps add their runs as models (docs/sweeps.md)" if runs else ""
        raise ConfigError(f"{ENTRY_KINDS[section]} {name!r} is not in the config (known: {known}){also}; {section} are defined under `{section}:` in "
                          f"{config_path}, and {LOCAL_OVERLAY} adds, replaces or removes them (docs/configuration.md)")
    return entries[name]


def load(config, schema_path, configfiles=(), command_line=None, overlay_path=LOCAL_OVERLAY):
    """The Snakefile's config: the local overlay applied (when the file exists), the command line's
    --config values typed by the schema and merged on top, then validated; errors name every file
    the config came from."""
    sources = [str(f) for f in configfiles or ["config/config.yaml"]]
    if Path(overlay_path).exists():
        sources.append(f"{overlay_path} (overlay)")
    command_line = typed_by_schema(command_line or {}, _read_schema(schema_path))
    config = with_local_overlay(config, overlay_path, command_line)
    if command_line:
        from snakemake.utils import update_config

        update_config(config, copy.deepcopy(command_line))
    return validate(config, schema_path, ", ".join(sources))


def _read_schema(schema_path):
    with open(schema_path) as f:
        return yaml.safe_load(f)


def validate(config, schema_path, config_path="config/config.yaml"):
    """Return a copy of `config` with defaults filled in, or raise ConfigError naming every problem."""
    schema = _read_schema(schema_path)
    config = copy.deepcopy(config)
    bad_numbers = dict(non_finite(config))
    Validator = _with_defaults(jsonschema.Draft7Validator)
    errors = sorted(Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    # if/then/else reports the branch's errors as its own context; show the leaves
    leaves = []
    for e in errors:
        leaves.extend(e.context if e.validator in ("if", "then", "else") and e.context else [e])
    leaves = [e for e in leaves if _key(e.absolute_path) not in bad_numbers]
    if leaves or bad_numbers:
        lines = "\n".join([f"  - {key}: {value} is not a finite number" for key, value in bad_numbers.items()] + [f"  - {_describe(e)}" for e in leaves])
        raise ConfigError(f"invalid config {config_path}:\n{lines}")
    add_sweep_runs(config, schema, Validator, config_path)
    check_references(config, config_path)
    check_content(config, config_path)
    return config


def add_sweep_runs(config, schema, validator_class, config_path):
    """Every sweep run added to `models` as its own entry (snakechat.pipeline.sweeps), each checked
    against the schema like any model; an error names the sweep's key, not the derived entry."""
    problems = sweeps.problems(config)
    entries = {} if problems else sweeps.expand(config)
    for run in sweeps.runs(config) if not problems else []:
        probe = {"datasets": {}, "tokenizers": {}, "eval_bundles": {}, "models": {run["run"]: entries[run["run"]]}}
        for e in validator_class(schema).iter_errors(probe):
            line = _describe(e).replace(f"models.{run['run']}.", f"sweeps.{run['kind']}.{run['sweep']}.")
            if line not in problems:
                problems.append(line)
    if problems:
        raise ConfigError(f"invalid config {config_path}:\n" + "\n".join(f"  - {p}" for p in problems))
    config["models"].update(entries)


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


# --- what the schema cannot say: names of chat tasks, downloadable URLs, sizes against each other ---

# The built-in world's chat tasks and their kinds (snakechat.world.chat.TASKS; a test keeps the two
# in step): listed here so that parsing the workflow does not import the world and torch.
WORLD_CHAT_TASKS = {"world_chat": "conversation", "arithmetic_tool": "conversation", "identity": "conversation",
                    "world_mc": "mc", "word_problems": "gsm8k", "spelling": "gsm8k"}


def chat_tasks(entry):
    """{task: kind} that a chat_data entry will have, from its config alone."""
    if entry.get("kind") == "synthetic":
        return dict(WORLD_CHAT_TASKS)
    from snakechat.evaluate.tasks import FORMAT_KINDS

    found = {task: FORMAT_KINDS.get(spec.get("format")) for task, spec in entry.get("tasks", {}).items()}
    found.update({task: WORLD_CHAT_TASKS[task] for task in entry.get("world_tasks", []) if task in WORLD_CHAT_TASKS})
    return found


def _http_url_problem(url):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url!r} is not an http(s) URL (downloads use http:// or https://)"
    return None


def check_urls(config):
    problems = []
    for name, entry in config.get("datasets", {}).items():
        if entry.get("kind") != "http":
            continue
        url, key = entry["url"], f"datasets.{name}.url"
        if "{index" not in url:
            problems.append(f"{key}: {url!r} has no {{index}} field (shard i is fetched from the template with index=i, e.g. shard_{{index:05d}}.parquet)")
        else:
            try:
                url.format(index=0)
            except (KeyError, IndexError, ValueError, AttributeError) as e:
                problems.append(f"{key}: {url!r} must be a template whose only field is {{index}}: {type(e).__name__}: {e}")
        if problem := _http_url_problem(url):
            problems.append(f"{key}: {problem}")
    for name, entry in config.get("eval_bundles", {}).items():
        if entry.get("kind") == "http" and (problem := _http_url_problem(entry["url"])):
            problems.append(f"eval_bundles.{name}.url: {problem}")
    for name, entry in config.get("chat_data", {}).items():
        if entry.get("kind") != "http":
            continue
        for task, spec in entry.get("tasks", {}).items():
            for split, urls in spec.get("splits", {}).items():
                for i, url in enumerate(urls):
                    if problem := _http_url_problem(url):
                        problems.append(f"chat_data.{name}.tasks.{task}.splits.{split}.{i}: {problem}")
    return problems


def check_task_names(config):
    """Every world task a chat data adds exists; every mixture and RL task is a task of the model's chat data."""
    problems = []
    for name, entry in config.get("chat_data", {}).items():
        for task in entry.get("world_tasks", []):
            if task not in WORLD_CHAT_TASKS:
                problems.append(f"chat_data.{name}.world_tasks: {task!r} is not a task of the built-in world (it has: {', '.join(WORLD_CHAT_TASKS)})")
    for model, m in config.get("models", {}).items():
        data = config.get("chat_data", {}).get(m.get("chat_data"))
        if data is None:
            continue  # check_references names the missing chat data
        known = chat_tasks(data)
        listing = ", ".join(sorted(known))
        for stage in ("mid", "sft"):
            for task in m.get(stage, {}).get("mixture", {}):
                if task not in known:
                    problems.append(f"models.{model}.{stage}.mixture: {task!r} is not a task of chat_data {m['chat_data']!r} (its tasks: {listing})")
        for task in m.get("rl", {}).get("tasks", []):
            if task not in known:
                problems.append(f"models.{model}.rl.tasks: {task!r} is not a task of chat_data {m['chat_data']!r} (its tasks: {listing})")
            elif known[task] != "gsm8k":
                gsm8k = ", ".join(sorted(t for t, k in known.items() if k == "gsm8k")) or "none"
                problems.append(f"models.{model}.rl.tasks: {task!r} is a {known[task]} task; RL needs gsm8k-kind tasks (here: {gsm8k})")
    return problems


def check_sizes(config):
    """Sizes that must agree with each other (each one's own bounds are in the schema)."""
    problems = []
    for model, m in config.get("models", {}).items():
        base_len = m.get("base", {}).get("sequence_len")
        mid_len = m.get("mid", {}).get("sequence_len")
        if base_len is not None and mid_len is not None and mid_len > base_len:
            problems.append(f"models.{model}.mid.sequence_len: {mid_len} is longer than the model's context, base.sequence_len {base_len}")
        if m.get("base", {}).get("steps") and m["base"].get("target_flops"):
            problems.append(f"models.{model}.base: steps and target_flops both set the number of steps; give one (0 for the other)")
    for name, d in config.get("datasets", {}).items():
        if d.get("val_index") is not None and d["val_index"] < d["shards"] - 1:
            problems.append(f"datasets.{name}.val_index: {d['val_index']} is one of the training shards 0 … {d['shards'] - 2} (shards {d['shards']}): "
                            f"it must be at least {d['shards'] - 1}")
    return problems


def check_exports(config):
    """Models whose recipe transformers' NanoChatForCausalLM cannot express, yet export_hf asks for."""
    problems = []
    for model, m in config.get("models", {}).items():
        features = recipes.NOT_EXPORTABLE.get(m.get("recipe", recipes.DEFAULT))
        if features and m.get("export_hf"):
            problems.append(f"models.{model}.export_hf: {m['export_hf']} cannot be exported: a {m['recipe']} model has {features}, "
                            f"which transformers' NanoChatForCausalLM cannot express (set export_hf: [])")
    return problems


def check_recipe_stages(config):
    """nanochat-2026-07 models whose SFT would not start: it continues the base run's optimizer state,
    which only a base checkpoint keeps, so such a model has no mid stage."""
    return [f"models.{model}.mid.enabled: a {recipes.NANOCHAT_2026} model's SFT starts from its base checkpoint and continues "
            f"the base run's optimizer state, so it has no mid stage (set mid: {{enabled: false}})"
            for model, m in config.get("models", {}).items()
            if m.get("recipe", recipes.DEFAULT) == recipes.NANOCHAT_2026 and m.get("mid", {}).get("enabled", True)]


def check_content(config, config_path="config/config.yaml"):
    problems = check_urls(config) + check_task_names(config) + check_sizes(config) + check_exports(config) + check_recipe_stages(config)
    if problems:
        raise ConfigError(f"invalid config {config_path}:\n" + "\n".join(f"  - {p}" for p in problems))


# --- batches over processes -----------------------------------------------------------------------
# A training step's batch is split over the processes a rule is launched on (GPUs, or CPU processes
# on a machine without them). The conditions below are the ones the stage modules check when they
# start; stated here too, they fail `snakemake -n` instead of a job that waited in the queue.


def batch_division(model_name, model, section, processes, vocab_size=None):
    """Why training `section` ("base", "mid", "sft" or "rl") of model `model_name` (its config entry
    `model`) cannot split its step over `processes` processes, as one line; None where it can.
    `vocab_size` (its tokenizer's) is needed where the recipe derives the base step from the parameters."""
    cfg, key = model[section], f"models.{model_name}.{section}"
    if section in ("base", "mid"):
        seq = cfg["sequence_len"] if section == "base" else min(cfg["sequence_len"], model["base"]["sequence_len"])
        step = cfg["step_tokens"] or _derived_step_tokens(model, vocab_size)
        per_pass = cfg["device_batch_rows"] * seq * processes
        if step % per_pass:
            seq_from = "sequence_len" if section == "base" or seq == cfg["sequence_len"] else "the base model's sequence_len"
            return (f"{key}.step_tokens {step} is not a multiple of device_batch_rows × {seq_from} × processes = "
                    f"{cfg['device_batch_rows']} × {seq} × {processes} = {per_pass}")
    elif section == "sft":
        per_process, rest = divmod(cfg["step_conversations"], processes)
        if rest or per_process % cfg["device_batch_rows"]:
            return (f"{key}.step_conversations {cfg['step_conversations']} does not split over {processes} processes "
                    f"in whole micro-batches of device_batch_rows {cfg['device_batch_rows']} "
                    f"(needs a multiple of {cfg['device_batch_rows'] * processes})")
    elif section == "rl":
        if cfg["step_prompts"] % processes:
            return f"{key}.step_prompts {cfg['step_prompts']} is not a multiple of the {processes} processes"
    else:
        raise ValueError(f"no batch rule for training section {section!r}")
    return None


def _derived_step_tokens(model, vocab_size):
    from snakechat.model import sizing  # imports torch: only for a step_tokens of 0

    if model.get("recipe") != sizing.RECIPE_2026:
        return sizing.derive_step_tokens(model["depth"])
    if vocab_size is None:
        raise ValueError("the nanochat-2026-07 step size depends on the vocabulary: pass vocab_size")
    return sizing.size_2026_from_base(model["depth"], vocab_size, model["base"]).total_batch_size


def model_vocab(config, model):
    """The vocabulary size of a model's tokenizer (None where the config lacks it: check_references names that)."""
    return config.get("tokenizers", {}).get(model["tokenizer"], {}).get("vocab_size")


def training_sections(model):
    """The training sections a model runs (mid only where enabled)."""
    return [s for s in ("base", "mid", "sft", "rl") if s != "mid" or model["mid"]["enabled"]]


def check_batches(config, config_path="config/config.yaml"):
    """Every model's training steps split into whole micro-batches on one process (if not, they
    split on none); whether they split over the processes a profile gives is checked per job."""
    problems = [batch_division(name, model, section, 1, model_vocab(config, model)) for name, model in config.get("models", {}).items()
                for section in training_sections(model)]
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError(f"invalid config {config_path}:\n" + "\n".join(f"  - {p}" for p in problems))
