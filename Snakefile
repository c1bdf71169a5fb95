"""snakechat: train a small ChatGPT-style model end to end. Stages live in workflow/rules/."""

from snakemake.utils import min_version

from snakechat.pipeline import configcheck

min_version("9.0")


# syntax errors and duplicate keys, with file and line, before Snakemake reads the file itself
configcheck.check_yaml_files(["config/config.yaml", *workflow.overwrite_configfiles, configcheck.LOCAL_OVERLAY])


configfile: "config/config.yaml"


# config/local.yaml, where present, replaces or removes whole named entries (docs/configuration.md)
config = configcheck.load(
    config,
    workflow.source_path("workflow/schemas/config.schema.yaml"),
    workflow.overwrite_configfiles,
    workflow.config_settings.overwrite_config,
)


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    tokenizer=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    eval_bundle=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    sweep=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/eval_bundle.smk"
include: "workflow/rules/base_eval.smk"
include: "workflow/rules/chat_data.smk"
include: "workflow/rules/mid.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/rl.smk"
include: "workflow/rules/chat_eval.smk"
include: "workflow/rules/export_hf.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/sweeps.smk"


rule all:
    input:
        default_targets(),
