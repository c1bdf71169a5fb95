"""Mid-training: the base model trained further on the chat mixture, packed like pretraining."""


rule mid_train:
    input:
        start="results/base/{model}",
        chat_data=lambda w: chat_data_of(w.model),
    output:
        directory("results/mid/{model}"),
    params:
        launch=launch,
        chat_dir=lambda w, input: os.path.dirname(input.chat_data),
        args=lambda w: stage_flags(config["models"][w.model]["mid"], skip=["enabled"]),
        code=code_fingerprint("snakechat.mid_train"),
    resources:
        gpu=0,
    log:
        "logs/mid_train/{model}.log",
    benchmark:
        "results/benchmarks/mid_train/{model}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} -m snakechat.mid_train --start {input.start} --chat-data {params.chat_dir} "
        "--state results/state/mid/{wildcards.model} --out {output} {params.args} > {log} 2>&1"
