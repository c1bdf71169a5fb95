"""CORE: the base checkpoint scored on its model's eval bundle (snakechat.base_eval)."""


rule base_eval:
    input:
        checkpoint="results/base/{model}",
        bundle=model_eval_bundle,
    output:
        csv=report("results/base_eval/{model}.csv", caption="../report/metrics.rst", category="Base evaluation"),
        meta="results/base_eval/{model}.csv.meta.json",
    log:
        "logs/base_eval/{model}.log",
    benchmark:
        "results/benchmarks/base_eval/{model}.tsv"
    conda:
        "../../environment.yml"
    resources:
        gpu=0,
    params:
        launch=launch,
        precision=model_setting("precision"),
        tracking=tracking_flags,
        args=model_flags("base_eval"),
        code=code_fingerprint("snakechat.base_eval"),
    shell:
        "{params.launch} -m snakechat.base_eval --checkpoint {input.checkpoint} --bundle {input.bundle} "
        "--out {output.csv} --precision {params.precision} {params.tracking} {params.args} > {log} 2>&1"
