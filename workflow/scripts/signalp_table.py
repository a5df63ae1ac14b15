"""signalp_table: mean ± sd over folds per model x method x kingdom x SP type."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.analysis.signal_peptide import write_signalp_table

    sm = snakemake  # noqa: F821
    write_signalp_table([Path(f) for f in sm.input.metrics], Path(sm.output.table))
