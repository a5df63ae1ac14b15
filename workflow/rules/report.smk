rule aggregate:
    input:
        metrics=run_files("metrics.json"),
    output:
        summary=f"{R}/summary.csv",
        table=f"{R}/table.csv",
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


rule pareto_figure:
    input:
        summary=f"{R}/summary.csv",
    output:
        png=f"{R}/figures/{{task}}/pareto_{{axis}}.png",
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
        histories=task_histories,
    output:
        png=f"{R}/figures/{{task}}/mcc_over_time.png",
        svg=f"{R}/figures/{{task}}/mcc_over_time.svg",
    log:
        f"{R}/logs/figures/{{task}}/mcc_over_time.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/plot_mcc_over_time.py"
