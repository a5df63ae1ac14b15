"""answer: answer.md and the report's leaderboard, from the tables."""

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.analysis.answer import write_answer

    sm = snakemake  # noqa: F821
    write_answer(sm.input.table, sm.input.comparisons, sm.input.ranks, sm.input.summary, sm.output.answer,
                 sm.output.leaderboard, sm.config)
