"""mcc_over_time_figure: dev MCC (the task kind's score) against training time for every run of one task."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.analysis.plots import plot_mcc_over_time

    sm = snakemake  # noqa: F821
    plot_mcc_over_time([Path(f) for f in sm.input.histories], sm.wildcards.task, Path(sm.output.png), Path(sm.output.svg),
                       methods=list(sm.config.get("methods", {})), score=sm.params.score)
