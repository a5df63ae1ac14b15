"""QLoRA: LoRA on a backbone loaded with 4-bit NF4 weights (double quantisation, bf16 compute).

Quantisation happens at load time, so the method contributes ``load_kwargs`` that the trainer
passes to ``models.load_backbone``; ``apply`` then runs peft's ``prepare_model_for_kbit_training``
and puts LoRA on top. bitsandbytes runs on CUDA and (0.50+) on CPU; where it cannot, the job
stops before loading anything, saying so.
"""

from __future__ import annotations

from seqpeft.errors import SeqpeftInputError

OWN_KEYS = ("compute_dtype", "double_quant", "quant_type", "gradient_checkpointing")


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
        from bitsandbytes.functional import quantize_4bit
        import torch

        quantize_4bit(torch.ones(64, dtype=torch.float32, device=_device()), quant_type="nf4")
    except Exception as error:  # any failure here means 4-bit loading cannot work on this machine
        raise SeqpeftInputError(None, f"qlora needs bitsandbytes 4-bit kernels, which do not run here ({type(error).__name__}: {error}).",
                                fix="install bitsandbytes>=0.45 (CPU backend from 0.50) or run qlora on a CUDA GPU; use lora otherwise.") from error


def _device() -> str:
    import torch

    # the current device: each rank of a multi-GPU job has set its own before loading
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


def load_kwargs(args: dict) -> dict:
    """``from_pretrained`` keyword arguments that load the backbone quantized."""
    import torch
    from transformers import BitsAndBytesConfig

    _require_bitsandbytes()
    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=args.get("quant_type", "nf4"),
        bnb_4bit_use_double_quant=bool(args.get("double_quant", True)),
        bnb_4bit_compute_dtype=getattr(torch, args.get("compute_dtype", "bfloat16")),
    )
    return {"quantization_config": config, "device_map": _device()}


def prepare(backbone, args: dict):
    """peft's k-bit preparation: frozen quantized weights, fp32 norms/embeddings."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=bool(args.get("gradient_checkpointing", False)))


def lora_args(args: dict) -> dict:
    return {key: value for key, value in args.items() if key not in OWN_KEYS}
