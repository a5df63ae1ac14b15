"""rehearsal: every job's rehearsal row in one rehearsal.csv, and the short table in the log."""

import json
from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.preflight.rehearse import format_table, read_rows, write_rows

    sm = snakemake  # noqa: F821
    write_rows([json.loads(Path(path).read_text()) for path in sm.input.rows], Path(sm.output.table))
    print(format_table(read_rows(Path(sm.output.table))))
