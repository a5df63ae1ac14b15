"""A sequence's logits must not depend on the batch it is in (padding, neighbours, methods)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqpeft.assemble import build_model
from seqpeft.methods import METHOD_NAMES
from seqpeft.models import FAMILIES as FAMILY_REGISTRY

# every family seqpeft can build a tiny model of, from the registry
FAMILIES = sorted(name for name, family in FAMILY_REGISTRY.items() if family.build_config is not None)
ALPHABET = {"esm": "ACDEFGHIKLMNPQRSTVWY", "default": "ACGT"}


def _perturb_trainable(model, seed: int) -> None:
    # LoRA-style adapters start as the identity; give every trainable tensor a random value so
    # the test sees the adapter's effect on the computation, not a no-op.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


# QLoRA computes in bf16 by default, whose rounding differs between batch shapes by ~1e-3; the
# property under test (masking, pooling) is checked with fp32 compute on the same 4-bit weights.
METHOD_SPECS = {"qlora": {"compute_dtype": "float32"}}


def _methods_for(family: str) -> list[str]:
    return [m for m in METHOD_NAMES if not (family == "esm" and m == "prefix_tuning")]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pooling", [None, "mean"])
def test_logits_alone_equal_logits_in_padded_batch(tiny_model_dir, family, pooling):
    model_dir = tiny_model_dir(family)
    rng = np.random.default_rng(1)
    letters = ALPHABET.get(family, ALPHABET["default"])
    sequences = ["".join(rng.choice(list(letters), size=n)) for n in (7, 23, 15, 40, 3)]
    per_residue = family == "esm"
    for method in _methods_for(family):
        spec = {"pooling": pooling} if pooling else {}
        model, _, _, loaded = build_model(model_dir, spec, method, METHOD_SPECS.get(method, {}), 3, per_residue, total_steps=100, model_name=family)
        _perturb_trainable(model, seed=3)
        model.eval()
        tokenizer = loaded.tokenizer
        encoded = tokenizer(sequences, padding=True, return_tensors="pt")
        assert tokenizer.padding_side == "right"
        with torch.no_grad():
            batch_logits = model(encoded["input_ids"], encoded["attention_mask"])
            for row, sequence in enumerate(sequences):
                alone = tokenizer([sequence], return_tensors="pt")
                single = model(alone["input_ids"], alone["attention_mask"])[0]
                length = alone["input_ids"].shape[1]
                batched = batch_logits[row, :length] if per_residue else batch_logits[row]
                torch.testing.assert_close(batched, single, atol=1e-4, rtol=0,
                                           msg=lambda m: f"{family}/{method}/{pooling}: sequence {row}: {m}")
