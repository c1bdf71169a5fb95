"""Chat evaluation: every stage's checkpoint (base included, prompted as a chat) on the chat test tasks."""


rule chat_eval:
    input:
        checkpoint="results/{stage}/{model}",
        chat_data=model_chat_data,
    output:
        csv=report("results/chat_eval/{model}/{stage}.csv", caption="../report/metrics.rst", category="Chat evaluation"),
        meta="results/chat_eval/{model}/{stage}.csv.meta.json",
    log:
        "logs/chat_eval/{model}/{stage}.log",
    benchmark:
        "results/benchmarks/chat_eval/{model}/{stage}.tsv"
    wildcard_constraints:
        stage="base|mid|sft|rl",
    conda:
        "../../environment.yml"
    resources:
        gpu=0,
    params:
        launch=launch,
        precision=model_setting("precision"),
        tracking=tracking_flags,
        args=model_flags("chat_eval"),
        chat_dir=subpath(input.chat_data, parent=True),
        code=code_fingerprint("snakechat.chat_eval"),
    shell:
        "{params.launch} -m snakechat.chat_eval --checkpoint {input.checkpoint} --chat-data {params.chat_dir} "
        "--out {output.csv} --precision {params.precision} {params.tracking} {params.args} > {log} 2>&1"
