"""Chat data: tasks from the built-in world, or the hub's parquet exports downloaded (a local rule)."""


localrules:
    chat_data,


rule chat_data:
    output:
        "results/chat_data/{chat_data}/tasks.json",
    log:
        "logs/chat_data/{chat_data}.log",
    benchmark:
        "results/benchmarks/chat_data/{chat_data}.tsv"
    wildcard_constraints:
        chat_data=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    conda:
        "../../environment.yml"
    params:
        args=config_flags("chat_data", "chat_data"),
        code=code_fingerprint("snakechat.chat_data"),
    shell:
        "python -m snakechat.chat_data --out {output} {params.args} > {log} 2>&1"
