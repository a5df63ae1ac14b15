"""signalp_figures: MCC2/MCC1 grouped bars and cleavage-site precision vs recall (w = 0) for one task."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.tasks.signal_peptide.report import plot_task_figures

    sm = snakemake  # noqa: F821
    plot_task_figures(Path(sm.input.table), sm.wildcards.task, {key: Path(value) for key, value in sm.output.items()},
                      methods=list(sm.config.get("methods", {})))
