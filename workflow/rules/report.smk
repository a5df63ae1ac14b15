rule aggregate:
    input:
        metrics=run_files("metrics.json"),
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


rule pareto_figure:
    input:
        summary=f"{R}/summary.csv",
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
        histories=task_histories,
    output:
        png=report(f"{R}/figures/{{task}}/mcc_over_time.png", caption="../report/mcc_over_time.rst",
                   category=task_family, subcategory="{task}", labels={"figure": "dev MCC over training time"}),
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
