"""Pretraining shards: generated from the built-in world, or downloaded (a local rule either way)."""

import shlex


def dataset_flags(wildcards):
    """The module's command-line arguments for one dataset entry of the config."""
    d = config["datasets"][wildcards.dataset]
    if d["kind"] == "synthetic":
        return f"synthetic --shards {d['shards']} --seed {d['seed']} --docs-per-shard {d['docs_per_shard']}"
    flags = [
        f"http --shards {d['shards']} --url {shlex.quote(d['url'])}",
        f"--retries {d['retries']} --timeout {d['timeout']} --backoff {d['backoff']} --workers {d['workers']}",
    ]
    flags += [f"--sha256 {shlex.quote(f'{name}={digest}')}" for name, digest in sorted(d["sha256"].items())]
    flags += [f"--bytes {shlex.quote(f'{name}={size}')}" for name, size in sorted(d["bytes"].items())]
    return " ".join(flags)


localrules:
    dataset,


rule dataset:
    output:
        "results/data/{dataset}/manifest.json",
    params:
        args=dataset_flags,
        code=code_fingerprint("snakechat.dataset"),
    log:
        "logs/dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/dataset/{dataset}.tsv"
    shell:
        "python -m snakechat.dataset {params.args} --manifest {output} > {log} 2>&1"


STAGE_TARGETS.append("results/data/{dataset}/manifest.json")
