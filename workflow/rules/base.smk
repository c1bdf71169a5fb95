"""Base pretraining (base_train) and how well the result compresses text (base_loss)."""


rule base_train:
    input:
        manifest=lambda w: f"results/data/{dataset_of_tokenizer(tokenizer_of(w.model))}/manifest.json",
        tokenizer=lambda w: f"results/tokenizer/{tokenizer_of(w.model)}/tokenizer.json",
        token_bytes=lambda w: f"results/tokenizer/{tokenizer_of(w.model)}/token_bytes.json",
    output:
        directory("results/base/{model}"),
    params:
        launch=launch,
        tokenizer_dir=lambda w, input: os.path.dirname(input.tokenizer),
        depth=lambda w: config["models"][w.model]["depth"],
        args=lambda w: stage_flags(config["models"][w.model]["base"]),
        code=code_fingerprint("snakechat.base_train"),
    resources:
        gpu=0,
    log:
        "logs/base_train/{model}.log",
    benchmark:
        "results/benchmarks/base_train/{model}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} -m snakechat.base_train --manifest {input.manifest} --tokenizer {params.tokenizer_dir} "
        "--state results/state/base/{wildcards.model} --out {output} --depth {params.depth} {params.args} > {log} 2>&1"


rule base_loss:
    input:
        manifest=lambda w: f"results/data/{dataset_of_tokenizer(tokenizer_of(w.model))}/manifest.json",
        checkpoint="results/base/{model}",
    output:
        report("results/base_loss/{model}.json", caption="../report/metrics.rst", category="Base evaluation"),
    params:
        launch=launch,
        args=lambda w: stage_flags(config["models"][w.model]["base_loss"]),
        code=code_fingerprint("snakechat.base_loss"),
    resources:
        gpu=0,
    log:
        "logs/base_loss/{model}.log",
    benchmark:
        "results/benchmarks/base_loss/{model}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} -m snakechat.base_loss --checkpoint {input.checkpoint} --manifest {input.manifest} "
        "--out {output} {params.args} > {log} 2>&1"


STAGE_TARGETS.extend(["results/base/{model}", "results/base_loss/{model}.json"])
