"""derive_source: write a sequence-level task from another source's SignalP 6.0 FASTA."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.tasks.signal_peptide.derived import derive_signalp_task

    sm = snakemake  # noqa: F821
    spec = {key: value for key, value in dict(sm.params.spec).items() if key != "from"}
    source = Path(sm.input.source)
    fasta = source if source.is_file() else source / spec.pop("path")  # a local copy may be the file itself
    spec.pop("path", None)
    written = derive_signalp_task(fasta, Path(sm.output[0]), spec.pop("derive"), **spec)
    print(f"[seqpeft] source {sm.wildcards.source}: {written}")
