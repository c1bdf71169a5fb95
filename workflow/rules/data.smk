"""Pretraining shards: generated from the built-in world, or downloaded (a local rule either way)."""


localrules:
    dataset,


rule dataset:
    output:
        "results/data/{dataset}/manifest.json",
    log:
        "logs/dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/dataset/{dataset}.tsv"
    conda:
        "../../environment.yml"
    params:
        args=config_flags("datasets", "dataset"),
        code=code_fingerprint("snakechat.dataset"),
    shell:
        "python -m snakechat.dataset --manifest {output} {params.args} > {log} 2>&1"
