"""aggregate: one row per run (summary.csv/.parquet) and per task x model x method (table.csv)."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.analysis.aggregate import write_summary

    sm = snakemake  # noqa: F821
    write_summary(
        [Path(f) for f in sm.input.metrics],
        Path(sm.output.summary),
        Path(sm.output.table),
        Path(sm.output.parquet),
        predictions_files=[Path(f) for f in sm.input.predictions],
        config=sm.config,
    )
