"""Data in and out of files: validated readers of task files (CSV, FASTA, SignalP 6.0 FASTA),
pinned downloads, unlabelled sequences for prediction, tokenizers and the tokenized-task cache."""
