"""rehearse_job: a few steps of one fine-tuning job (seqpeft.preflight.rehearse); its row, ok or not."""

from pathlib import Path

import psutil
from _script import finetune_job, logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from dataclasses import asdict

    from seqpeft.util.atomic import write_json_atomic
    from seqpeft.preflight.rehearse import rehearse

    sm = snakemake  # noqa: F821
    job = finetune_job(sm, Path(sm.output.row).parent, gpus=int(sm.resources.gpu))
    row = rehearse(job, int(sm.params.steps), started=psutil.Process().create_time())
    print(f"[seqpeft] rehearsal: {row.outcome}")
    write_json_atomic(Path(sm.output.row), asdict(row))
