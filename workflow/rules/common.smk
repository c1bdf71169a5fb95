"""Helpers shared by the rules: config look-ups and the default target list."""

from snakechat import launcher
from snakechat.provenance import code_fingerprint


def model_cfg(wildcards):
    return config["models"][wildcards.model]


def tokenizer_of(model):
    return config["models"][model]["tokenizer"]


def dataset_of_tokenizer(tokenizer):
    return config["tokenizers"][tokenizer]["dataset"]


def default_targets():
    """Every artifact of every default model. Each stage's .smk file appends its targets to STAGE_TARGETS -
    a template string, or a function of the model name giving a list of paths (for per-model stage lists)."""
    targets = []
    for m in config["default_models"]:
        for t in STAGE_TARGETS:
            targets += t(m) if callable(t) else [t.format(model=m, **model_names(m))]
    return targets


def model_names(model):
    """Names a target template may use besides {model}: its tokenizer, dataset and eval bundle."""
    m = config["models"][model]
    return {"tokenizer": m["tokenizer"], "dataset": dataset_of_tokenizer(m["tokenizer"]), "eval_bundle": m["eval_bundle"]}


def stage_flags(section, skip=()):
    """A config section as module flags: key `device_batch_rows: 4` -> `--device-batch-rows 4`; lists and dicts as JSON."""
    import json
    import shlex

    flags = []
    for key, value in section.items():
        if key in skip:
            continue
        text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, bool)) or value is None else str(value)
        flags.append(f"--{key.replace('_', '-')} {shlex.quote(text)}")
    return " ".join(flags)


def mid_enabled(model):
    return config["models"][model]["mid"]["enabled"]


def chat_stages(model):
    """The checkpoints a model's chat stages produce, in order; mid only where the config keeps it."""
    return ["base"] + (["mid"] if mid_enabled(model) else []) + ["sft", "rl"]


def chat_data_of(model):
    """The tasks.json of the chat data a model's chat stages train on."""
    return f"results/chat_data/{config['models'][model]['chat_data']}/tasks.json"


def sft_start(wildcards):
    """SFT starts from the mid checkpoint, or from the base one where the config skips mid."""
    return f"results/{'mid' if mid_enabled(wildcards.model) else 'base'}/{wildcards.model}"


STAGE_TARGETS = []


def launch(wildcards, resources):
    """`python`, `torchrun ...` or `srun ... torchrun ...`: how a GPU rule starts its module, from the rule's resources."""
    return launcher.prefix_for(resources, cpu_processes=config["launch"]["cpu_processes"])


# Slurm's warning signal before a time limit goes to every process of the job step, Snakemake
# included: only the training processes, which handle it, may act on it (see snakechat.launcher).
launcher.ignore_warning_signal()


# --- the report: which files each plot, report card and plan reads ---


def training_stages(model):
    """Checkpoints whose train_log.csv has loss curves (RL logs rewards instead)."""
    return [s for s in chat_stages(model) if s != "rl"]


def model_benchmarks(model):
    """Every job of a model that writes a Snakemake benchmark file, by job label."""
    names = model_names(model)
    jobs = {
        "dataset": f"results/benchmarks/dataset/{names['dataset']}.tsv",
        "tok_train": f"results/benchmarks/tok_train/{names['tokenizer']}.tsv",
        "tok_eval": f"results/benchmarks/tok_eval/{names['tokenizer']}.tsv",
        "eval_bundle": f"results/benchmarks/eval_bundle/{names['eval_bundle']}.tsv",
        "chat_data": f"results/benchmarks/chat_data/{config['models'][model]['chat_data']}.tsv",
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


def labelled(pairs, inside=""):
    """{label: path} as LABEL=PATH arguments; `inside` names a file within each (checkpoint) directory."""
    return " ".join(f"{label}={os.path.join(path, inside) if inside else path}" for label, path in pairs.items())


def all_training_checkpoints(_):
    return {f"{s}:{m}": f"results/{s}/{m}" for m in config["default_models"] for s in training_stages(m)}


def all_rl_checkpoints(_):
    return {f"rl:{m}": f"results/rl/{m}" for m in config["default_models"]}


def all_tok_evals(_):
    return {tokenizer_of(m): f"results/tokenizer/{tokenizer_of(m)}/tok_eval.csv" for m in config["default_models"]}


def all_base_evals(_):
    return {m: f"results/base_eval/{m}.csv" for m in config["default_models"]}


def all_chat_evals(_):
    return {f"{s}:{m}": f"results/chat_eval/{m}/{s}.csv" for m in config["default_models"] for s in chat_stages(m)}


def all_benchmarks(_):
    return {f"{job}:{m}": path for m in config["default_models"] for job, path in model_benchmarks(m).items()}


PLOT_INPUTS = {
    "training": ("logs", all_training_checkpoints, "Training"),
    "throughput": ("logs", all_training_checkpoints, "Training"),
    "tokenizer": ("tok-eval", all_tok_evals, "Tokenizer"),
    "core": ("base-eval", all_base_evals, "Base evaluation"),
    "chat_eval": ("chat-eval", all_chat_evals, "Chat evaluation"),
    "rl": ("logs", all_rl_checkpoints, "Chat training"),
    "time": ("benchmarks", all_benchmarks, "Time"),
}


PLANNED_STAGES = ("tokenizer", "eval_bundle", "chat_data", "depth", "base", "base_loss", "base_eval", "mid", "sft", "rl", "chat_eval")


def plan_config(wildcards):
    """The parts of the config a model's plan reads, as JSON: a change elsewhere does not re-plan it."""
    import json

    names = model_names(wildcards.model)
    return json.dumps({
        "models": {wildcards.model: {k: v for k, v in config["models"][wildcards.model].items() if k in PLANNED_STAGES}},
        "tokenizers": {names["tokenizer"]: config["tokenizers"][names["tokenizer"]]},
        "datasets": {names["dataset"]: config["datasets"][names["dataset"]]},
        "chat_data": {c: config["chat_data"][c] for c in [config["models"][wildcards.model].get("chat_data")] if c},
        "plan": config["plan"],
    }, sort_keys=True)
