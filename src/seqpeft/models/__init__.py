"""Backbones: model families and loading (``families``), seqpeft's own DNABERT-2, hub downloads at
a commit and model preparation, 4-bit loading plans, the transformers-head mode and the
classifier (backbone + pooling + head) every method trains."""
