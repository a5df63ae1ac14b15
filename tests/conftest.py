"""Shared fixtures: the ../shared material, tiny models built from configs, small data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def shared_path(relative: str) -> Path:
    """A file under ../shared; fails (not skips) under CI when it is missing."""
    path = SHARED / relative
    if not path.exists():
        message = f"{path} is missing (../shared must sit beside the checkout)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "seed": 0}
TOKENIZER_OF_FAMILY = {"llama": "nucleotide", "mistral": "nucleotide", "mixtral": "nucleotide", "opt": "nucleotide",
                       "bert": "nucleotide", "esm": "esm", "dnabert2": "nucleotide"}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Build (once per session) a tiny model directory of a family, with its tokenizer."""
    from seqpeft.models import prepare_model
    from seqpeft.tokenize import build_tokenizer

    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in built:
            tokenizer_kind = TOKENIZER_OF_FAMILY[family]
            tokenizer_dir = root / f"tokenizer_{tokenizer_kind}"
            if not tokenizer_dir.exists():
                build_tokenizer({"kind": tokenizer_kind}, tokenizer_dir)
            spec = {"build": {"family": family, **TINY}, "tokenizer": tokenizer_kind, "max_length": 128}
            prepare_model(family, spec, root / family, tokenizer_dir)
            built[family] = root / family
        return built[family]

    return make
