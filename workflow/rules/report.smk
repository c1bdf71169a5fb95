"""The report: one plot per rule (rebuilt only when its CSVs change), a report card per model, and the plan."""


rule plot:
    input:
        unpack(lambda w: PLOT_INPUTS[w.plot][1](w)),
    output:
        report(
            "results/plots/{plot}.png",
            caption="../report/plot.rst",
            category=lambda w: PLOT_INPUTS[w.plot][2],
        ),
    params:
        flag=lambda w: PLOT_INPUTS[w.plot][0],
        inputs=lambda w, input: labelled(dict(input.items()), "train_log.csv" if PLOT_INPUTS[w.plot][0] == "logs" else ""),
        code=code_fingerprint("snakechat.plots"),
    wildcard_constraints:
        plot="|".join(PLOT_INPUTS),
    log:
        "logs/plot/{plot}.log",
    benchmark:
        "results/benchmarks/plot/{plot}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m snakechat.plots {wildcards.plot} --{params.flag} {params.inputs} --out {output} > {log} 2>&1"


rule report_card:
    input:
        tok_eval=lambda w: f"results/tokenizer/{tokenizer_of(w.model)}/tok_eval.csv",
        base_loss="results/base_loss/{model}.json",
        base_eval="results/base_eval/{model}.csv",
        checkpoints=lambda w: [f"results/{s}/{w.model}" for s in chat_stages(w.model)],
        chat_evals=lambda w: [f"results/chat_eval/{w.model}/{s}.csv" for s in chat_stages(w.model)],
        benchmarks=lambda w: list(model_benchmarks(w.model).values()),
    output:
        report("results/report/{model}.md", caption="../report/report_card.rst", category="Report card"),
    params:
        checkpoints=lambda w: " ".join(f"{s}=results/{s}/{w.model}" for s in chat_stages(w.model)),
        chat_evals=lambda w: " ".join(f"{s}=results/chat_eval/{w.model}/{s}.csv" for s in chat_stages(w.model)),
        benchmarks=lambda w: labelled(model_benchmarks(w.model)),
        usd_per_gpu_hour=config["plan"]["usd_per_gpu_hour"],
        code=code_fingerprint("snakechat.report"),
    log:
        "logs/report_card/{model}.log",
    benchmark:
        "results/benchmarks/report_card/{model}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m snakechat.report --model {wildcards.model} --tok-eval {input.tok_eval} --base-loss {input.base_loss} "
        "--base-eval {input.base_eval} --checkpoint {params.checkpoints} --chat-eval {params.chat_evals} "
        "--benchmark {params.benchmarks} --gpu-hour-usd {params.usd_per_gpu_hour} --out {output} > {log} 2>&1"


rule plan:
    output:
        report("results/plan/{model}.md", caption="../report/plan.rst", category="Plan"),
    params:
        config=plan_config,
        code=code_fingerprint("snakechat.plan"),
    log:
        "logs/plan/{model}.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m snakechat.plan {wildcards.model} --config-json {params.config:q} --out {output} > {log} 2>&1"


localrules:
    plot,
    report_card,
    plan,


STAGE_TARGETS.append("results/report/{model}.md")
STAGE_TARGETS.append("results/plan/{model}.md")
STAGE_TARGETS.extend(f"results/plots/{plot}.png" for plot in PLOT_INPUTS)
