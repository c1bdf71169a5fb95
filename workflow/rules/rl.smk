"""Reinforcement learning on GSM8K-form problems: sample a group per prompt, reward correct answers."""


rule chat_rl:
    input:
        start="results/sft/{model}",
        chat_data=lambda w: chat_data_of(w.model),
    output:
        directory("results/rl/{model}"),
    params:
        launch=launch,
        chat_dir=lambda w, input: os.path.dirname(input.chat_data),
        args=lambda w: stage_flags(config["models"][w.model]["rl"]),
        code=code_fingerprint("snakechat.chat_rl"),
    resources:
        gpu=0,
    log:
        "logs/chat_rl/{model}.log",
    benchmark:
        "results/benchmarks/chat_rl/{model}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} -m snakechat.chat_rl --start {input.start} --chat-data {params.chat_dir} "
        "--state results/state/rl/{wildcards.model} --out {output} {params.args} > {log} 2>&1"


STAGE_TARGETS.append("results/rl/{model}")
