"""Sweeps (config `sweeps:`): a series of depths and scaling-law runs at fixed FLOP budgets. Every run
is an ordinary model trained by base_train (results/base/<run>); these rules only tabulate, fit
and plot them. Not part of the default target: name results/series/<name>.csv,
results/scaling/<name>.csv or their plots under results/plots/."""


rule series_table:
    input:
        checkpoints=sweep_checkpoints("series"),
        base_evals=series_base_evals,
    output:
        report("results/series/{sweep}.csv", caption="../report/sweep.rst", category="Sweeps"),
    log:
        "logs/sweep/series/{sweep}.log",
    conda:
        "../../environment.yml"
    params:
        runs=sweep_runs_json("series"),
        code=code_fingerprint("snakechat.sweep"),
    shell:
        "python -m snakechat.sweep series --runs {params.runs:q} --out {output} > {log} 2>&1"


rule scaling_table:
    input:
        checkpoints=sweep_checkpoints("scaling"),
    output:
        report("results/scaling/{sweep}.csv", caption="../report/sweep.rst", category="Sweeps"),
    log:
        "logs/sweep/scaling/{sweep}.log",
    conda:
        "../../environment.yml"
    params:
        runs=sweep_runs_json("scaling"),
        code=code_fingerprint("snakechat.sweep"),
    shell:
        "python -m snakechat.sweep scaling --runs {params.runs:q} --out {output} > {log} 2>&1"


rule sweep_plot:
    input:
        "results/{kind}/{sweep}.csv",
    output:
        report("results/plots/{kind}/{sweep}.png", caption="../report/sweep_plot.rst", category="Sweeps"),
    log:
        "logs/plot/{kind}/{sweep}.log",
    wildcard_constraints:
        kind="series|scaling",
    conda:
        "../../environment.yml"
    params:
        code=code_fingerprint("snakechat.plots"),
    shell:
        "python -m snakechat.plots {wildcards.kind} --csv {input} --out {output} > {log} 2>&1"


localrules:
    series_table,
    scaling_table,
    sweep_plot,
