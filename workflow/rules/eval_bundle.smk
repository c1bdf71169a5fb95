"""CORE eval bundles: written by the built-in world, or downloaded as a zip (a local rule either way)."""


localrules:
    eval_bundle,


rule eval_bundle:
    output:
        "results/eval_bundle/{eval_bundle}/core.yaml",
    log:
        "logs/eval_bundle/{eval_bundle}.log",
    benchmark:
        "results/benchmarks/eval_bundle/{eval_bundle}.tsv"
    conda:
        "../../environment.yml"
    params:
        args=config_flags("eval_bundles", "eval_bundle"),
        code=code_fingerprint("snakechat.eval_bundle"),
    shell:
        "python -m snakechat.eval_bundle --out {output} {params.args} > {log} 2>&1"
