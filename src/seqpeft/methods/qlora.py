"""QLoRA: LoRA on a backbone loaded with 4-bit weights (NF4 by default, double quantisation, bf16 compute).

Quantisation happens at load time, so the method contributes ``load_kwargs`` that the trainer
passes to ``models.load_backbone``; ``apply`` then runs peft's ``prepare_model_for_kbit_training``
and puts LoRA on top. bitsandbytes runs on CUDA and (0.50+) on CPU; where it cannot, the job
stops before loading anything, saying so.

Two facts of bitsandbytes' CPU backend shape this module:

- On CPUs with AVX512-BF16, a ``Linear4bit`` run in eval mode without gradients repacks its
  weights for a fused kernel. That kernel needs the output width to be a multiple of 32 and the
  input width a multiple of the 4-bit block size (64); other layers crash in the repacking. Which
  layers are quantized is therefore decided from their shapes, the same way on every machine (so
  a config gives the same model on any CPU or GPU): layers the kernels cannot take stay
  unquantized and are listed in the run's log and ``metrics.json``.
- The packed kernel has no autograd formula: a layer packed during a dev evaluation passes no
  gradient to its input when training resumes, and unpacking re-quantizes its block scales.
  Training models never pack (``prepare``); inference-only loads keep bitsandbytes' choice.
"""

from __future__ import annotations

from seqpeft.models.quantization import (BLOCKSIZE, PACKED_ROW_BLOCK, QuantizationPlan,  # noqa: F401 (re-exported)
                                         kernels_accept, plan_quantization, precision_census)
from seqpeft.util.errors import SeqpeftInputError

OWN_KEYS = ("compute_dtype", "double_quant", "quant_type", "gradient_checkpointing")


def _require_bitsandbytes(device: str) -> None:
    try:
        import bitsandbytes  # noqa: F401
        from bitsandbytes.functional import quantize_4bit
        import torch

        quantize_4bit(torch.ones(64, dtype=torch.float32, device=device), quant_type="nf4")
    except Exception as error:  # any failure here means 4-bit loading cannot work on this machine
        raise SeqpeftInputError(None, f"qlora needs bitsandbytes 4-bit kernels, which do not run here ({type(error).__name__}: {error}).",
                                fix="install bitsandbytes>=0.45 (CPU backend from 0.50) or run qlora on a CUDA GPU; use lora otherwise.") from error


def _device() -> str:
    import torch

    # the current device: each rank of a multi-GPU job has set its own before loading
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


def load_kwargs(args: dict, device: str | None = None) -> dict:
    """``from_pretrained`` keyword arguments that load the backbone quantized, onto ``device``
    (default: training's, the current CUDA device where one is visible, else the CPU). The
    predictor passes its own device: weights and inputs must be on one device."""
    import torch
    from transformers import BitsAndBytesConfig

    device = device or _device()
    _require_bitsandbytes(device)
    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=args.get("quant_type", "nf4"),
        bnb_4bit_use_double_quant=bool(args.get("double_quant", True)),
        bnb_4bit_compute_dtype=getattr(torch, args.get("compute_dtype", "bfloat16")),
    )
    return {"quantization_config": config, "device_map": device}


def use_packed_cpu_kernel(model, enabled: bool) -> None:
    """Let (where the CPU has AVX512-BF16) or forbid the 4-bit layers of ``model`` to repack their
    weights for bitsandbytes' fused inference kernel. Forbidding it unpacks none: call it before
    the first evaluation."""
    import bitsandbytes as bnb
    from bitsandbytes.nn import modules as bnb_modules

    supported = bool(bnb_modules.has_avx512bf16())
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = enabled and supported


def prepare(backbone, args: dict):
    """peft's k-bit preparation: frozen quantized weights, fp32 norms/embeddings; no packed
    kernel while training (see the module docstring)."""
    from peft import prepare_model_for_kbit_training

    use_packed_cpu_kernel(backbone, False)
    return prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=bool(args.get("gradient_checkpointing", False)))


def lora_args(args: dict) -> dict:
    return {key: value for key, value in args.items() if key not in OWN_KEYS}
