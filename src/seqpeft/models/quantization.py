"""Which Linear layers of a backbone a 4-bit load quantizes (QLoRA's loading half; the method is
``seqpeft.methods.qlora``).

bitsandbytes' fused AVX512-BF16 CPU kernel needs an output width that is a multiple of 32 and an
input width that is a multiple of the 4-bit block size (64); other layers crash when it repacks
them. The plan keeps such layers unquantized, decided from their shapes, the same on every
machine, and ``metrics.json`` records it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BLOCKSIZE = 64  # bitsandbytes' 4-bit block size (Params4bit's default)
PACKED_ROW_BLOCK = 32  # rows per tile of the fused AVX512-BF16 kernel


def kernels_accept(in_features: int, out_features: int) -> bool:
    """Whether every bitsandbytes 4-bit path (CUDA, CPU, CPU packed) takes a Linear of this shape."""
    return in_features % BLOCKSIZE == 0 and out_features % PACKED_ROW_BLOCK == 0


@dataclass
class QuantizationPlan:
    """Which Linear layers of a backbone get 4-bit weights; recorded in ``metrics.json``."""

    quant_type: str
    quantized: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # name -> "in->out", left unquantized
    double_quant: bool | None = None
    compute_dtype: str | None = None

    def as_dict(self) -> dict:
        return {"quant_type": self.quant_type, "double_quant": self.double_quant, "compute_dtype": self.compute_dtype,
                "quantized_layers": len(self.quantized), "unquantized_layers": dict(self.kept)}

    def message(self) -> str | None:
        if not self.kept:
            return None
        shown = ", ".join(f"{name} ({shape})" for name, shape in list(self.kept.items())[:8])
        more = f" and {len(self.kept) - 8} more" if len(self.kept) > 8 else ""
        return (f"[seqpeft] qlora: {len(self.kept)} of {len(self.kept) + len(self.quantized)} Linear layers stay "
                f"unquantized, because bitsandbytes' 4-bit kernels need an input width that is a multiple of "
                f"{BLOCKSIZE} and an output width that is a multiple of {PACKED_ROW_BLOCK}: {shown}{more}")


def plan_quantization(kwargs: dict, skeleton) -> QuantizationPlan | None:
    """Exclude from 4-bit quantization the Linear layers of ``skeleton`` (the backbone built on the
    meta device) that the kernels cannot take; edits ``kwargs['quantization_config']`` in place.
    None when ``kwargs`` asks for no 4-bit quantization."""
    from torch import nn
    from transformers.quantizers.base import get_keys_to_not_convert

    config = (kwargs or {}).get("quantization_config")
    if config is None or not getattr(config, "load_in_4bit", False):
        return None
    plan = QuantizationPlan(config.bnb_4bit_quant_type, double_quant=bool(config.bnb_4bit_use_double_quant),
                            compute_dtype=str(config.bnb_4bit_compute_dtype).removeprefix("torch."))
    skipped_by_default = set(config.llm_int8_skip_modules or get_keys_to_not_convert(skeleton))
    for name, module in skeleton.named_modules():
        if not isinstance(module, nn.Linear) or name in skipped_by_default:
            continue
        if kernels_accept(module.in_features, module.out_features):
            plan.quantized.append(name)
        else:
            plan.kept[name] = f"{module.in_features}->{module.out_features}"
    if plan.kept:
        # An explicit skip list replaces transformers' default one, so it carries the defaults too.
        config.llm_int8_skip_modules = sorted(skipped_by_default | set(plan.kept))
    return plan


def precision_census(backbone) -> dict:
    """Which weights a 4-bit load left in 4 bits and which in higher precision, for metrics.json:
    per storage kind (``4bit`` or the dtype) the tensors, parameters and bytes, and per parameter
    name (layer indices as ``*``) its kind and totals. Under transformers 5 a Mixtral's experts are
    fused 3-D parameters (``mlp.experts.gate_up_proj`` / ``down_proj``) that bitsandbytes, which
    quantizes Linear layers only, leaves in full precision; transformers 4 had per-expert Linears."""
    import re

    import bitsandbytes as bnb

    kinds: dict[str, dict] = {}
    names: dict[str, dict] = {}
    for name, param in backbone.named_parameters():
        if isinstance(param, bnb.nn.Params4bit) and getattr(param, "quant_state", None) is not None:
            kind, count = "4bit", int(param.quant_state.shape.numel())
        else:
            kind, count = str(param.dtype).removeprefix("torch."), int(param.numel())
        size = int(param.numel() * param.element_size())
        for key, table in ((kind, kinds), (re.sub(r"\.\d+\.", ".*.", name), names)):
            entry = table.setdefault(key, {"kind": kind, "tensors": 0, "parameters": 0, "bytes": 0})
            entry["tensors"] += 1
            entry["parameters"] += count
            entry["bytes"] += size
    for entry in kinds.values():
        del entry["kind"]
    return {"by_kind": kinds, "by_name": names}
