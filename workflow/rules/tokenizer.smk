"""The tokenizer: trained on a dataset's training shards (tok_train), then measured (tok_eval)."""

TOK_TRAIN_KEYS = ("vocab_size", "max_chars", "doc_cap", "trainer")
TOK_EVAL_KEYS = ("eval_chars", "references", "reference_timeout")


rule tok_train:
    input:
        tokenizer_manifest,
    output:
        tokenizer="results/tokenizer/{tokenizer}/tokenizer.json",
        token_bytes="results/tokenizer/{tokenizer}/token_bytes.json",
        meta="results/tokenizer/{tokenizer}/meta.json",
    log:
        "logs/tok_train/{tokenizer}.log",
    benchmark:
        "results/benchmarks/tok_train/{tokenizer}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    params:
        out=subpath(output.tokenizer, parent=True),
        args=config_flags("tokenizers", "tokenizer", keys=TOK_TRAIN_KEYS),
        code=code_fingerprint("snakechat.tok_train"),
    shell:
        "python -m snakechat.tok_train --manifest {input} --out {params.out} {params.args} > {log} 2>&1"


rule tok_eval:
    input:
        tokenizer="results/tokenizer/{tokenizer}/tokenizer.json",
        manifest=tokenizer_manifest,
    output:
        report("results/tokenizer/{tokenizer}/tok_eval.csv", caption="../report/metrics.rst", category="Tokenizer"),
    log:
        "logs/tok_eval/{tokenizer}.log",
    benchmark:
        "results/benchmarks/tok_eval/{tokenizer}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    params:
        tokenizer_dir=subpath(input.tokenizer, parent=True),
        args=config_flags("tokenizers", "tokenizer", keys=TOK_EVAL_KEYS),
        code=code_fingerprint("snakechat.tok_eval"),
    shell:
        "python -m snakechat.tok_eval --tokenizer {params.tokenizer_dir} --name {wildcards.tokenizer}"
        " --manifest {input.manifest} --out {output} {params.args} > {log} 2>&1"
