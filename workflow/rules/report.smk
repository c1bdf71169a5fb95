"""The report: one plot per rule (rebuilt only when its CSVs change), a report card per model, and the plan."""


rule plot:
    input:
        unpack(plot_inputs),
    output:
        report("results/plots/{plot}.png", caption="../report/plot.rst", category=plot_category),
    log:
        "logs/plot/{plot}.log",
    benchmark:
        "results/benchmarks/plot/{plot}.tsv"
    wildcard_constraints:
        plot="|".join(PLOT_INPUTS),
    conda:
        "../../environment.yml"
    params:
        args=plot_args,
        code=code_fingerprint("snakechat.plots"),
    shell:
        "python -m snakechat.plots {wildcards.plot} {params.args} --out {output} > {log} 2>&1"


rule report_card:
    input:
        tok_eval=model_tok_eval,
        base_loss="results/base_loss/{model}.json",
        base_eval="results/base_eval/{model}.csv",
        checkpoints=paths_of(stage_checkpoints),
        chat_evals=paths_of(stage_chat_evals),
        benchmarks=paths_of(model_benchmarks),
    output:
        report("results/report/{model}.md", caption="../report/report_card.rst", category="Report card"),
    log:
        "logs/report_card/{model}.log",
    benchmark:
        "results/benchmarks/report_card/{model}.tsv"
    conda:
        "../../environment.yml"
    params:
        checkpoints=labelled_args(stage_checkpoints),
        chat_evals=labelled_args(stage_chat_evals),
        benchmarks=labelled_args(model_benchmarks),
        usd_per_gpu_hour=config["plan"]["usd_per_gpu_hour"],
        code=code_fingerprint("snakechat.report"),
    shell:
        "python -m snakechat.report --model {wildcards.model} --tok-eval {input.tok_eval} --base-loss {input.base_loss} "
        "--base-eval {input.base_eval} --checkpoint {params.checkpoints} --chat-eval {params.chat_evals} "
        "--benchmark {params.benchmarks} --gpu-hour-usd {params.usd_per_gpu_hour} --out {output} > {log} 2>&1"


rule plan:
    output:
        report("results/plan/{model}.md", caption="../report/plan.rst", category="Plan"),
    log:
        "logs/plan/{model}.log",
    conda:
        "../../environment.yml"
    params:
        config=plan_config,
        code=code_fingerprint("snakechat.plan"),
    shell:
        "python -m snakechat.plan {wildcards.model} --config-json {params.config:q} --out {output} > {log} 2>&1"


localrules:
    plot,
    report_card,
    plan,
