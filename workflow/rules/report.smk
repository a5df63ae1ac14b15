rule aggregate:
    input:
        metrics=run_files("metrics.json"),
        predictions=run_files("predictions_test.parquet"),
    output:
        summary=report(f"{R}/summary.csv", caption="../report/summary.rst", category="Tables"),
        table=report(f"{R}/table.csv", caption="../report/table.rst", category="Tables"),
        parquet=f"{R}/summary.parquet",
    log:
        f"{R}/logs/aggregate.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/aggregate.py"


rule statistics:
    input:
        summary=f"{R}/summary.csv",
        table=f"{R}/table.csv",
        predictions=run_files("predictions_test.parquet"),
    output:
        comparisons=report(f"{R}/comparisons.csv", caption="../report/comparisons.rst", category="Tables"),
        ranks=report(f"{R}/ranks.csv", caption="../report/ranks.rst", category="Tables"),
    log:
        f"{R}/logs/statistics.log",
    params:
        models=RUN_MODELS,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/statistics.py"


rule rank_figure:
    input:
        ranks=f"{R}/ranks.csv",
    output:
        png=report(f"{R}/figures/ranks_{{scope}}.png", caption="../report/ranks_figure.rst", category="Ranks",
                   labels={"figure": "critical difference: {scope}"}),
        svg=f"{R}/figures/ranks_{{scope}}.svg",
    log:
        f"{R}/logs/figures/ranks_{{scope}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/plot_ranks.py"


rule answer:
    input:
        table=f"{R}/table.csv",
        comparisons=f"{R}/comparisons.csv",
        ranks=f"{R}/ranks.csv",
        summary=f"{R}/summary.csv",
    output:
        answer=report(f"{R}/answer.md", caption="../report/answer.rst", category="1. Answer"),
        leaderboard=report(f"{R}/leaderboard.html", caption="../report/leaderboard.rst", category="1. Answer"),
    log:
        f"{R}/logs/answer.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/answer.py"


rule pareto_figure:
    input:
        summary=f"{R}/summary.csv",
        table=f"{R}/table.csv",
    output:
        png=report(f"{R}/figures/{{task}}/pareto_{{axis}}.png", caption="../report/pareto.rst",
                   category=task_family, subcategory="{task}", labels={"figure": "Pareto: MCC vs {axis}"}),
        svg=f"{R}/figures/{{task}}/pareto_{{axis}}.svg",
    log:
        f"{R}/logs/figures/{{task}}/pareto_{{axis}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/plot_pareto.py"


rule mcc_over_time_figure:
    input:
        histories=lambda wildcards: run_files("history.csv", task=wildcards.task),
    output:
        png=report(f"{R}/figures/{{task}}/mcc_over_time.png", caption="../report/mcc_over_time.rst",
                   category=task_family, subcategory="{task}", labels={"figure": "dev MCC over training time"}),
        svg=f"{R}/figures/{{task}}/mcc_over_time.svg",
    log:
        f"{R}/logs/figures/{{task}}/mcc_over_time.log",
    params:
        score=task_score,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/plot_mcc_over_time.py"


# ---- signal-peptide track: per-kingdom x type table over the 6 folds, and PEFT-SP's two figures ----


rule signalp_table:
    input:
        metrics=kind_run_metrics("signal_peptide"),
    output:
        table=report(f"{R}/signalp_table.csv", caption="../report/signalp_table.rst", category="Tables"),
    log:
        f"{R}/logs/signalp_table.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/signalp_table.py"


rule signalp_figures:
    input:
        table=f"{R}/signalp_table.csv",
        # SignalP 6.0's published numbers, drawn beside the methods (none without `published:`)
        published=PUBLISHED or [],
    output:
        mcc_png=report(f"{R}/figures/{{task}}/signalp_mcc.png", caption="../report/signalp_mcc.rst",
                       category=task_family, subcategory="{task}", labels={"figure": "signal peptides: MCC per kingdom x type"}),
        mcc_svg=f"{R}/figures/{{task}}/signalp_mcc.svg",
        cs_png=report(f"{R}/figures/{{task}}/signalp_cleavage_w0.png", caption="../report/signalp_cleavage.rst",
                      category=task_family, subcategory="{task}", labels={"figure": "signal peptides: cleavage sites (w = 0)"}),
        cs_svg=f"{R}/figures/{{task}}/signalp_cleavage_w0.svg",
    log:
        f"{R}/logs/figures/{{task}}/signalp.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/plot_signalp.py"


# ---- published numbers beside ours (config: published) ----


rule reproduction:
    input:
        published=PUBLISHED or [],
        summary=f"{R}/summary.csv",
        signalp=kind_run_metrics("signal_peptide"),
    output:
        table=report(f"{R}/reproduction.csv", caption="../report/reproduction_table.rst", category="Tables"),
        png=report(f"{R}/figures/reproduction.png", caption="../report/reproduction.rst", category="Reproduction",
                   labels={"figure": "published vs reproduced"}),
        svg=f"{R}/figures/reproduction.svg",
    log:
        f"{R}/logs/reproduction.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/reproduction.py"
