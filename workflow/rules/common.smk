"""Helpers shared by the rules: config look-ups, the named input and params functions the rules are
written with, and the default target list."""

import json
import os
import shlex

from snakechat.data.shards import missing_or_resized
from snakechat.pipeline import configcheck
from snakechat.pipeline import launcher
from snakechat.pipeline import sweeps
from snakechat.runtime.provenance import code_fingerprint

# --- config look-ups ---

# the files the config came from, as errors name them (Snakemake reads --configfile instead of the shipped one)
CONFIG_FILES = ", ".join(map(str, workflow.overwrite_configfiles or ["config/config.yaml"]))


def config_entry(section, name):
    """The entry `name` of a named config section; a name the config lacks (a target asked for
    results/base/nope, say) is an error naming it and where such entries are defined."""
    return configcheck.entry(config, section, name, CONFIG_FILES)


def model_config(model):
    return config_entry("models", model)


def tokenizer_of(model):
    return model_config(model)["tokenizer"]


def dataset_of_tokenizer(tokenizer):
    return config_entry("tokenizers", tokenizer)["dataset"]


def model_names(model):
    """The names a model's paths use: its tokenizer, dataset and eval bundle."""
    m = model_config(model)
    return {
        "tokenizer": m["tokenizer"],
        "dataset": dataset_of_tokenizer(m["tokenizer"]),
        "eval_bundle": m["eval_bundle"],
    }


def chat_data_of(model):
    """The chat data a model's chat stages train and are evaluated on (only they need one)."""
    return model_config(model)["chat_data"]


def mid_enabled(model):
    return model_config(model)["mid"]["enabled"]


def chat_stages(model):
    """The checkpoints a model's chat stages produce, in order; mid only where the config keeps it."""
    return ["base"] + (["mid"] if mid_enabled(model) else []) + ["sft", "rl"]


def training_stages(model):
    """Checkpoints whose train_log.csv has loss curves (RL logs rewards instead)."""
    return [s for s in chat_stages(model) if s != "rl"]


# --- input functions: the files a rule reads that its wildcards name only through the config ---


def checked_manifest(dataset):
    """A dataset's manifest, once a stat of the shards it lists finds them all at their recorded
    size: the shards are not outputs of their own, so this is how a dry run sees one gone or cut."""
    path = f"results/data/{dataset}/manifest.json"
    problems = missing_or_resized(path) if os.path.exists(path) else []
    if problems:
        raise configcheck.ConfigError(
            f"dataset {dataset!r}: "
            + "; ".join(problems[:5])
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
            + f". Delete {path} and the dataset rule writes or fetches the shards again (verified ones are kept)."
        )
    return path


def tokenizer_manifest(wildcards):
    """The manifest of the dataset a tokenizer is trained on."""
    return checked_manifest(dataset_of_tokenizer(wildcards.tokenizer))


def model_manifest(wildcards):
    """The manifest of the dataset a model (and its tokenizer) is trained on."""
    return checked_manifest(model_names(wildcards.model)["dataset"])


def model_tokenizer(wildcards):
    return f"results/tokenizer/{tokenizer_of(wildcards.model)}/tokenizer.json"


def model_token_bytes(wildcards):
    return f"results/tokenizer/{tokenizer_of(wildcards.model)}/token_bytes.json"


def model_tok_eval(wildcards):
    return f"results/tokenizer/{tokenizer_of(wildcards.model)}/tok_eval.csv"


def model_eval_bundle(wildcards):
    return f"results/eval_bundle/{model_names(wildcards.model)['eval_bundle']}/core.yaml"


def model_chat_data(wildcards):
    """The tasks.json of the chat data a model's chat stages train and are evaluated on."""
    return f"results/chat_data/{chat_data_of(wildcards.model)}/tasks.json"


def sft_start(wildcards):
    """SFT starts from the mid checkpoint, or from the base one where the config skips mid."""
    return f"results/{'mid' if mid_enabled(wildcards.model) else 'base'}/{wildcards.model}"


def stage_checkpoints(model):
    """{stage: checkpoint directory} of a model's chat stages (base included)."""
    return {s: f"results/{s}/{model}" for s in chat_stages(model)}


def hf_exports(model):
    """The transformers exports (results/hf/<model>/<stage>) the config's export_hf asks for; a stage
    the model does not train is an error."""
    stages = model_config(model)["export_hf"]
    missing = [s for s in stages if s not in chat_stages(model)]
    if missing:
        raise ValueError(
            f"models.{model}.export_hf lists {', '.join(missing)}, which {model} does not train (its stages: {', '.join(chat_stages(model))})"
        )
    return [f"results/hf/{model}/{stage}" for stage in stages]


def stage_chat_evals(model):
    """{stage: chat_eval CSV} of a model's chat stages (base included)."""
    return {s: f"results/chat_eval/{model}/{s}.csv" for s in chat_stages(model)}


def model_benchmarks(model):
    """{job label: Snakemake benchmark file} of every job of a model that writes one."""
    names = model_names(model)
    jobs = {
        "dataset": f"results/benchmarks/dataset/{names['dataset']}.tsv",
        "tok_train": f"results/benchmarks/tok_train/{names['tokenizer']}.tsv",
        "tok_eval": f"results/benchmarks/tok_eval/{names['tokenizer']}.tsv",
        "eval_bundle": f"results/benchmarks/eval_bundle/{names['eval_bundle']}.tsv",
        "chat_data": f"results/benchmarks/chat_data/{chat_data_of(model)}.tsv",
        "base_train": f"results/benchmarks/base_train/{model}.tsv",
        "base_loss": f"results/benchmarks/base_loss/{model}.tsv",
        "base_eval": f"results/benchmarks/base_eval/{model}.tsv",
    }
    if mid_enabled(model):
        jobs["mid_train"] = f"results/benchmarks/mid_train/{model}.tsv"
    jobs["chat_sft"] = f"results/benchmarks/chat_sft/{model}.tsv"
    jobs["chat_rl"] = f"results/benchmarks/chat_rl/{model}.tsv"
    for stage in chat_stages(model):
        jobs[f"chat_eval:{stage}"] = f"results/benchmarks/chat_eval/{model}/{stage}.tsv"
    return jobs


def paths_of(labelled_paths):
    """An input function: the paths of `labelled_paths(model)` ({label: path}) for the rule's model."""
    return lambda wildcards: list(labelled_paths(wildcards.model).values())


# --- params functions ---


def stage_flags(section, skip=()):
    """A config section as module flags: key `device_batch_rows: 4` -> `--device-batch-rows 4`; lists and dicts as JSON."""
    flags = []
    for key, value in section.items():
        if key in skip:
            continue
        text = (
            json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, bool)) or value is None else str(value)
        )
        flags.append(f"--{key.replace('_', '-')} {shlex.quote(text)}")
    return " ".join(flags)


def config_flags(section, wildcard, keys=None):
    """A params function: the entry of config[section] that `wildcard` names, as module flags
    (only `keys` of it where given)."""

    def flags(wildcards):
        entry = config_entry(section, wildcards[wildcard])
        return stage_flags({k: entry[k] for k in keys} if keys else entry)

    return flags


def model_flags(stage, skip=()):
    """A params function: the `stage` section of the rule's model in the config, as module flags."""
    return lambda wildcards: stage_flags(model_config(wildcards.model)[stage], skip)


def model_setting(key):
    """A params function: the rule's model's `key` in the config (its depth, say)."""
    return lambda wildcards: model_config(wildcards.model)[key]


def tracking_flags(wildcards):
    """A params function: the model's tracker, its project named after the model (snakechat.runtime.tracking)."""
    return f"--tracking {model_config(wildcards.model)['tracking']} --tracking-project snakechat-{wildcards.model}"


def labelled(pairs, inside=""):
    """{label: path} as LABEL=PATH arguments; `inside` names a file within each (checkpoint) directory."""
    return " ".join(f"{label}={os.path.join(path, inside) if inside else path}" for label, path in pairs.items())


def labelled_args(labelled_paths):
    """A params function: `labelled_paths(model)` ({label: path}) as LABEL=PATH arguments."""
    return lambda wildcards: labelled(labelled_paths(wildcards.model))


# The training rules and the config section whose step each splits over its processes.
TRAINING_RULES = {"base_train": "base", "mid_train": "mid", "chat_sft": "sft", "chat_rl": "rl"}


def launch(wildcards, resources, output):
    """`python`, `torchrun ...` or `srun ... torchrun ...`: how a GPU rule starts its module, from the
    rule's resources. For a training rule, first checks that the model's step splits over those
    processes (and for base_train that a FLOP budget buys at least one step): Snakemake evaluates
    this while it plans, so `snakemake -n` fails, not a queued job."""
    cpu_processes = config["launch"]["cpu_processes"]
    trainer = next((r for r in TRAINING_RULES if workflow.get_rule(r).is_producer(output[0])), None)
    if trainer == "base_train" and (problem := sweeps.budget_problem(config, wildcards.model)):
        raise configcheck.ConfigError(f"invalid config {CONFIG_FILES}: {problem}")
    if trainer is not None:
        per_node, nodes, source = launcher.processes_of(resources, cpu_processes)
        m = model_config(wildcards.model)
        problem = configcheck.batch_division(
            wildcards.model, m, TRAINING_RULES[trainer], per_node * nodes, configcheck.model_vocab(config, m)
        )
        if problem:
            raise configcheck.ConfigError(
                f"{trainer} of model {wildcards.model!r} cannot run on {per_node * nodes} processes "
                f"({per_node} {source} × {nodes} node{'s' if nodes > 1 else ''}): {problem}. Change the model's batch "
                f"settings or the rule's resources in the profile; with no target, Snakemake builds every stage "
                f"of default_models (name a target or set default_models, docs/cluster.md)."
            )
    return launcher.prefix_for(resources, cpu_processes=cpu_processes)


configcheck.check_batches(config, CONFIG_FILES)


def state_dir(wildcards, output):
    """The resumable state of a training job: results/state/<stage>/<model> for the checkpoint
    results/<stage>/<model>. Not an output, so it survives a failed job (Snakemake
    deletes the outputs of one) and the retry resumes from it."""
    return os.path.join("results", "state", os.path.relpath(output[0], "results"))


# Slurm's warning signal before a time limit goes to every process of the job step, Snakemake
# included: only the training processes, which handle it, may act on it (see snakechat.pipeline.launcher).
launcher.ignore_warning_signal()


# --- the report: which files each plot reads, and what the plan reads ---


def all_training_checkpoints(_):
    return {f"{s}:{m}": f"results/{s}/{m}" for m in config["default_models"] for s in training_stages(m)}


def all_rl_checkpoints(_):
    return {f"rl:{m}": f"results/rl/{m}" for m in config["default_models"]}


def all_tok_evals(_):
    return {tokenizer_of(m): f"results/tokenizer/{tokenizer_of(m)}/tok_eval.csv" for m in config["default_models"]}


def all_base_evals(_):
    return {m: f"results/base_eval/{m}.csv" for m in config["default_models"]}


def all_chat_evals(_):
    return {f"{s}:{m}": path for m in config["default_models"] for s, path in stage_chat_evals(m).items()}


def all_benchmarks(_):
    return {f"{job}:{m}": path for m in config["default_models"] for job, path in model_benchmarks(m).items()}


PLOT_INPUTS = {  # plot: (its module flag, {label: input} of the default models, report category)
    "training": ("logs", all_training_checkpoints, "Training"),
    "throughput": ("logs", all_training_checkpoints, "Training"),
    "tokenizer": ("tok-eval", all_tok_evals, "Tokenizer"),
    "core": ("base-eval", all_base_evals, "Base evaluation"),
    "chat_eval": ("chat-eval", all_chat_evals, "Chat evaluation"),
    "rl": ("logs", all_rl_checkpoints, "Chat training"),
    "time": ("benchmarks", all_benchmarks, "Time"),
}


def plot_inputs(wildcards):
    """{label: path} a plot reads: checkpoints (of whose train_log.csv) or CSVs."""
    return PLOT_INPUTS[wildcards.plot][1](wildcards)


def plot_category(wildcards):
    return PLOT_INPUTS[wildcards.plot][2]


def plot_args(wildcards, input):
    """The plot's inputs as `--<flag> LABEL=PATH ...`; a checkpoint stands for its train_log.csv."""
    flag = PLOT_INPUTS[wildcards.plot][0]
    inputs = labelled(dict(input.items()), "train_log.csv" if flag == "logs" else "")
    return f"--{flag} {inputs}"


PLANNED_STAGES = (
    "tokenizer",
    "eval_bundle",
    "chat_data",
    "depth",
    "base",
    "base_loss",
    "base_eval",
    "mid",
    "sft",
    "rl",
    "chat_eval",
)


def plan_config(wildcards):
    """The parts of the config a model's plan reads, as JSON: a change elsewhere does not re-plan it."""
    names, model = model_names(wildcards.model), model_config(wildcards.model)
    return json.dumps(
        {
            "models": {wildcards.model: {k: v for k, v in model.items() if k in PLANNED_STAGES}},
            "tokenizers": {names["tokenizer"]: config["tokenizers"][names["tokenizer"]]},
            "datasets": {names["dataset"]: config["datasets"][names["dataset"]]},
            "chat_data": {c: config["chat_data"][c] for c in [model.get("chat_data")] if c},
            "plan": config["plan"],
        },
        sort_keys=True,
    )


# --- sweeps: each run is a model of its own (configcheck added it to config["models"]) ---


def sweep_runs(kind, name):
    """The runs of the `kind` sweep `name` (series or scaling); a name the config lacks is an error naming it."""
    defined = config["sweeps"][kind]
    if name not in defined:
        raise configcheck.ConfigError(
            f"{kind} sweep {name!r} is not in the config (known: {', '.join(sorted(defined)) or 'none'}); "
            f"sweeps are defined under `sweeps: {kind}:` in {CONFIG_FILES}"
        )
    return sweeps.of(config, kind, name)


def sweep_checkpoints(kind):
    """An input function: the base checkpoints of the rule's sweep."""
    return lambda wildcards: [f"results/base/{r['run']}" for r in sweep_runs(kind, wildcards.sweep)]


def series_base_evals(wildcards):
    """The base_eval CSVs of a series (CORE per depth)."""
    return [f"results/base_eval/{r['run']}.csv" for r in sweep_runs("series", wildcards.sweep)]


def sweep_runs_json(kind):
    """A params function: the rule's sweep as snakechat.sweep's --runs JSON (run -> depth, budget, files)."""

    def runs(wildcards):
        return json.dumps(
            {
                r["run"]: {
                    "depth": r["depth"],
                    "budget": r["budget"],
                    "checkpoint": f"results/base/{r['run']}",
                    **({"base_eval": f"results/base_eval/{r['run']}.csv"} if kind == "series" else {}),
                }
                for r in sweep_runs(kind, wildcards.sweep)
            },
            sort_keys=True,
        )

    return runs


# --- the default targets ---


def default_targets():
    """Every artifact of every default model: its data, eval bundle, tokenizer evaluation, each
    stage's checkpoint and evaluations, the transformers exports its config asks for, report card and
    plan; and the plots of them all."""
    targets = []
    for m in config["default_models"]:
        names = model_names(m)
        targets += [
            f"results/data/{names['dataset']}/manifest.json",
            f"results/eval_bundle/{names['eval_bundle']}/core.yaml",
            f"results/tokenizer/{names['tokenizer']}/tok_eval.csv",
            f"results/base/{m}",
            f"results/base_loss/{m}.json",
            f"results/base_eval/{m}.csv",
            f"results/sft/{m}",
            f"results/rl/{m}",
            *stage_chat_evals(m).values(),
            *hf_exports(m),
            f"results/report/{m}.md",
            f"results/plan/{m}.md",
        ]
    return targets + [f"results/plots/{plot}.png" for plot in PLOT_INPUTS]
