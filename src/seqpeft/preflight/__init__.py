"""What is checked and planned before any job runs: the config's cross-reference checks
(``check``, run when the workflow loads) and ``seqpeft plan``."""
