"""A sequence's logits must not depend on the batch it is in (padding, neighbours, methods)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import QLORA_TINY
from seqpeft.training.assemble import build_model
from seqpeft.methods.registry import METHOD_NAMES
from seqpeft.models.families import FAMILIES as FAMILY_REGISTRY

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


def _methods_for(family: str) -> list[str]:
    return [m for m in METHOD_NAMES if m != "qlora" and not (family == "esm" and m == "prefix_tuning")]


def _assert_batch_invariant(model, tokenizer, family: str, label: str, atol: float = 1e-4) -> None:
    rng = np.random.default_rng(1)
    letters = ALPHABET.get(family, ALPHABET["default"])
    sequences = ["".join(rng.choice(list(letters), size=n)) for n in (7, 23, 15, 40, 3)]
    per_residue = family == "esm"
    _perturb_trainable(model, seed=3)
    model.eval()
    encoded = tokenizer(sequences, padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "right"
    with torch.no_grad():
        batch_logits = model(encoded["input_ids"], encoded["attention_mask"])
        for row, sequence in enumerate(sequences):
            alone = tokenizer([sequence], return_tensors="pt")
            single = model(alone["input_ids"], alone["attention_mask"])[0]
            length = alone["input_ids"].shape[1]
            batched = batch_logits[row, :length] if per_residue else batch_logits[row]
            torch.testing.assert_close(batched, single, atol=atol, rtol=0, msg=lambda m: f"{label}: sequence {row}: {m}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pooling", [None, "mean"])
def test_logits_alone_equal_logits_in_padded_batch(tiny_model_dir, family, pooling):
    model_dir = tiny_model_dir(family)
    spec = {"pooling": pooling} if pooling else {}
    for method in _methods_for(family):
        model, _, _, loaded = build_model(model_dir, spec, method, {}, 3, family == "esm", total_steps=100, model_name=family)
        _assert_batch_invariant(model, loaded.tokenizer, family, f"{family}/{method}/{pooling}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pooling", [None, "mean"])
def test_qlora_logits_alone_equal_logits_in_padded_batch(tiny_model_dir, family, pooling, bnb_cpu_path):
    """On each bitsandbytes CPU path, as an inference load runs it. QLoRA computes in bf16 by default,
    whose rounding differs between batch shapes by ~1e-3; the property under test (masking, pooling)
    is checked with fp32 compute on the same 4-bit weights. The packed fused kernel computes in bf16
    whatever the compute dtype (bitsandbytes 0.50), so there the bound is bf16's: a masking or
    pooling error moves logits by far more."""
    from seqpeft.methods import qlora

    spec = {"pooling": pooling} if pooling else {}
    model, _, _, loaded = build_model(tiny_model_dir(family, **QLORA_TINY), spec, "qlora", {"compute_dtype": "float32"}, 3,
                                      family == "esm", total_steps=100, model_name=family)
    qlora.use_packed_cpu_kernel(model, True)
    _assert_batch_invariant(model, loaded.tokenizer, family, f"{family}/qlora/{pooling}/{bnb_cpu_path}",
                            atol=5e-3 if bnb_cpu_path == "packed" else 1e-4)
