"""Mid-training: the base model trained further on the chat mixture, packed like pretraining.

Its rule is the one definition of a chat-training rule: chat_sft (sft.smk) and chat_rl (rl.smk)
use it with their own start checkpoint, output, settings and module."""


rule mid_train:
    input:
        start="results/base/{model}",
        chat_data=model_chat_data,
    output:
        update(directory("results/mid/{model}")),  # the previous checkpoint stays until the new one is complete; restored if the job fails
    log:
        "logs/mid_train/{model}.log",
    benchmark:
        "results/benchmarks/mid_train/{model}.tsv"
    conda:
        "../../environment.yml"
    resources:
        gpu=0,
    params:
        launch=launch,
        chat_dir=subpath(input.chat_data, parent=True),
        state=state_dir,
        precision=model_setting("precision"),
        tracking=tracking_flags,
        args=model_flags("mid", skip=["enabled"]),
        module="snakechat.mid_train",
        code=code_fingerprint("snakechat.mid_train"),
    shell:
        "{params.launch} -m {params.module} --start {input.start} --chat-data {params.chat_dir} "
        "--state {params.state} --out {output} --precision {params.precision} {params.tracking} {params.args} > {log} 2>&1"
