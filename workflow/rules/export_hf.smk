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
    wildcard_constraints:
        stage="base|mid|sft|rl",
    params:
        code=code_fingerprint("snakechat.export_hf"),
    log:
        "logs/export_hf/{model}/{stage}.log",
    benchmark:
        "results/benchmarks/export_hf/{model}/{stage}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m snakechat.export_hf --checkpoint {input.checkpoint} --out {output} > {log} 2>&1"

