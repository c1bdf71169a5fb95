"""Base pretraining (base_train) and how well the result compresses text (base_loss)."""


rule base_train:
    input:
        manifest=model_manifest,
        tokenizer=model_tokenizer,
        token_bytes=model_token_bytes,
    output:
        update(directory("results/base/{model}")),  # the previous checkpoint stays until the new one is complete; restored if the job fails
    log:
        "logs/base_train/{model}.log",
    benchmark:
        "results/benchmarks/base_train/{model}.tsv"
    conda:
        "../../environment.yml"
    resources:
        gpu=0,
    params:
        launch=launch,
        tokenizer_dir=subpath(input.tokenizer, parent=True),
        state=state_dir,
        depth=model_setting("depth"),
        recipe=model_setting("recipe"),
        precision=model_setting("precision"),
        tracking=tracking_flags,
        args=model_flags("base"),
        code=code_fingerprint("snakechat.base_train"),
    shell:
        "{params.launch} -m snakechat.base_train --manifest {input.manifest} --tokenizer {params.tokenizer_dir} "
        "--state {params.state} --out {output} --depth {params.depth} --recipe {params.recipe} --precision {params.precision} {params.tracking} {params.args} > {log} 2>&1"


rule base_loss:
    input:
        manifest=model_manifest,
        checkpoint="results/base/{model}",
    output:
        report("results/base_loss/{model}.json", caption="../report/metrics.rst", category="Base evaluation"),
    log:
        "logs/base_loss/{model}.log",
    benchmark:
        "results/benchmarks/base_loss/{model}.tsv"
    conda:
        "../../environment.yml"
    resources:
        gpu=0,
    params:
        launch=launch,
        precision=model_setting("precision"),
        tracking=tracking_flags,
        args=model_flags("base_loss"),
        code=code_fingerprint("snakechat.base_loss"),
    shell:
        "{params.launch} -m snakechat.base_loss --checkpoint {input.checkpoint} --manifest {input.manifest} "
        "--out {output} --precision {params.precision} {params.tracking} {params.args} > {log} 2>&1"
