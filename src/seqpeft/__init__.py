"""seqpeft: a reproducible benchmark of parameter-efficient fine-tuning for biological sequence models.

The package is importable without torch: heavy libraries are imported inside the functions that
need them, because every Snakemake job (and every SLURM job) re-parses the workflow, which imports
the light parts of this package (config checks, registries of names).
"""

__version__ = "0.1.0"
