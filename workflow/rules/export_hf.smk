"""Hugging Face export: a stage's checkpoint as a transformers folder (snakechat.export_hf, which needs
the hf extra: pip install 'snakechat[hf]'; without it the job fails saying so in its log)."""


rule export_hf:
    input:
        checkpoint="results/{stage}/{model}",
        tokenizer=model_tokenizer,
    output:
        report(
            directory("results/hf/{model}/{stage}"),
            patterns=["snakechat_{name}.json"],
            caption="../report/export_hf.rst",
            category="Hugging Face export",
            subcategory="{model}",
        ),
    log:
        "logs/export_hf/{model}/{stage}.log",
    benchmark:
        "results/benchmarks/export_hf/{model}/{stage}.tsv"
    wildcard_constraints:
        stage="base|mid|sft|rl",
    conda:
        "../../environment.yml"
    params:
        code=code_fingerprint("snakechat.export_hf"),
    shell:
        "python -m snakechat.export_hf --checkpoint {input.checkpoint} --out {output} > {log} 2>&1"
