"""The tokenizer: trained on a dataset's training shards (tok_train), then measured (tok_eval)."""

import json
import shlex


def tokenizer_cfg(wildcards):
    return config["tokenizers"][wildcards.tokenizer]


def dataset_manifest(wildcards):
    return f"results/data/{dataset_of_tokenizer(wildcards.tokenizer)}/manifest.json"


rule tok_train:
    input:
        dataset_manifest,
    output:
        tokenizer="results/tokenizer/{tokenizer}/tokenizer.json",
        token_bytes="results/tokenizer/{tokenizer}/token_bytes.json",
        meta="results/tokenizer/{tokenizer}/meta.json",
    params:
        out=subpath(output.tokenizer, parent=True),
        vocab_size=lambda w: tokenizer_cfg(w)["vocab_size"],
        max_chars=lambda w: tokenizer_cfg(w)["max_chars"],
        doc_cap=lambda w: tokenizer_cfg(w)["doc_cap"],
        code=code_fingerprint("snakechat.tok_train"),
    threads: 2
    log:
        "logs/tok_train/{tokenizer}.log",
    benchmark:
        "results/benchmarks/tok_train/{tokenizer}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m snakechat.tok_train --manifest {input} --out {params.out}"
        " --vocab-size {params.vocab_size} --max-chars {params.max_chars} --doc-cap {params.doc_cap} > {log} 2>&1"


rule tok_eval:
    input:
        tokenizer="results/tokenizer/{tokenizer}/tokenizer.json",
        manifest=dataset_manifest,
    output:
        "results/tokenizer/{tokenizer}/tok_eval.csv",
    params:
        tokenizer_dir=subpath(input.tokenizer, parent=True),
        eval_chars=lambda w: tokenizer_cfg(w)["eval_chars"],
        doc_cap=lambda w: tokenizer_cfg(w)["doc_cap"],
        references=lambda w: shlex.quote(json.dumps(tokenizer_cfg(w)["references"])),
        reference_timeout=lambda w: tokenizer_cfg(w)["reference_timeout"],
        code=code_fingerprint("snakechat.tok_eval"),
    threads: 2
    log:
        "logs/tok_eval/{tokenizer}.log",
    benchmark:
        "results/benchmarks/tok_eval/{tokenizer}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m snakechat.tok_eval --tokenizer {params.tokenizer_dir} --name {wildcards.tokenizer} --manifest {input.manifest}"
        " --out {output} --sample-chars {params.eval_chars} --doc-cap {params.doc_cap}"
        " --references {params.references} --reference-timeout {params.reference_timeout} > {log} 2>&1"


STAGE_TARGETS.append("results/tokenizer/{tokenizer}/tok_eval.csv")
