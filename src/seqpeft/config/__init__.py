"""The workflow config as the library reads it: the schema (the one home of every default),
the job matrix and each job's slice, result paths, pins, training and tuning settings, and the
recipe knobs published setups need. Cross-checks that need the registries above live in
``seqpeft.preflight``."""
