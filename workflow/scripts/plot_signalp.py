"""signalp_figures: MCC2/MCC1 grouped bars and the cleavage-site butterfly (w = 0) for one task,
with SignalP 6.0's published numbers where the config's `published:` table has them."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.analysis.signal_peptide import plot_task_figures

    sm = snakemake  # noqa: F821
    published = getattr(sm.input, "published", None) or None  # an empty list without `published:`
    plot_task_figures(Path(sm.input.table), sm.wildcards.task, {key: Path(value) for key, value in sm.output.items()},
                      methods=list(sm.config.get("methods", {})), published=published)
