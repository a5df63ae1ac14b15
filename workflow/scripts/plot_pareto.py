"""pareto_figure: test MCC against one cost axis for one task."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.analysis.plots import plot_pareto

    sm = snakemake  # noqa: F821
    plot_pareto(Path(sm.input.summary), sm.wildcards.task, sm.wildcards.axis, Path(sm.output.png), Path(sm.output.svg),
                methods=list(sm.config.get("methods", {})), table_csv=Path(sm.input.table))
