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
    """Every artifact of every default model. Each stage's rule file adds its targets to STAGE_TARGETS:
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
    """A config section as module flags: key `device_batch: 4` -> `--device-batch 4`; lists and dicts as JSON."""
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


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    tokenizer=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    eval_bundle=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def launch(wildcards, resources):
    """`python`, `torchrun ...` or `srun ... torchrun ...`: how a GPU rule starts its module, from the rule's resources."""
    return launcher.prefix_for(resources, cpu_processes=config["launch"]["cpu_processes"])


# Slurm's warning signal before a time limit goes to every process of the job step, Snakemake
# included: only the training processes, which handle it, may act on it (see snakechat.launcher).
launcher.ignore_warning_signal()
