"""derive_source: write a sequence-level task from another source's SignalP 6.0 FASTA."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.tasks.signal_peptide.derived import derive_signalp_task

    sm = snakemake  # noqa: F821
    spec = {key: value for key, value in dict(sm.params.spec).items() if key not in ("from", "path")}
    written = derive_signalp_task(Path(sm.input.fasta), Path(sm.output[0]), spec.pop("derive"), **spec)
    print(f"[seqpeft] source {sm.wildcards.source}: {written}")
