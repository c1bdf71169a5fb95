"""Supervised fine-tuning: one conversation per row, loss on the assistant's tokens only."""


rule chat_sft:
    input:
        start=sft_start,
        chat_data=lambda w: chat_data_of(w.model),
    output:
        directory("results/sft/{model}"),
    params:
        launch=launch,
        chat_dir=lambda w, input: os.path.dirname(input.chat_data),
        args=lambda w: stage_flags(config["models"][w.model]["sft"]),
        code=code_fingerprint("snakechat.chat_sft"),
    resources:
        gpu=0,
    log:
        "logs/chat_sft/{model}.log",
    benchmark:
        "results/benchmarks/chat_sft/{model}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} -m snakechat.chat_sft --start {input.start} --chat-data {params.chat_dir} "
        "--state results/state/sft/{wildcards.model} --out {output} {params.args} > {log} 2>&1"


STAGE_TARGETS.append("results/sft/{model}")
