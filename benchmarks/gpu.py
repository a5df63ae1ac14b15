"""GPU throughput, model FLOPs utilisation and peak memory: seqpeft's training step vs the seed recipe.

Randomly initialised models of the real sizes (no download): an NT-500M-like ESM encoder
(hidden 1280, 24 layers), ESM-2 650M (hidden 1280, 33 layers) and a 7B Llama-style decoder
(hidden 4096, 32 layers) for QLoRA; sequence classification over synthetic sequences whose
lengths spread like a real task's (uniform between half and all of max_length).

Both recipes train the same model the same way as far as numbers go: float32 weights, gradients
and optimizer state, forward passes under bf16 autocast where the GPU has native bf16 (what
``training.precision: auto`` picks, seqpeft.training.assemble.resolve_precision), fused AdamW. They differ
in what the benchmark is about:

- seed recipe: Hugging Face ``Trainer`` (``bf16=`` that same choice), the data set padded to its
  longest sequence, random batches.
- seqpeft: the workflow's own step (seqpeft.training.step.training_step with the objective's loss module,
  gradient clipping, fused AdamW as seqpeft.config.recipe makes it), length-bucketed batches with dynamic
  padding.

Timing: both skip the same number of warm-up steps (``--warmup``), then time the remaining steps
between CUDA synchronisations. Throughput counts real (non-padding) tokens only, so padding is
overhead, not credit. Peak memory: ``torch.cuda.max_memory_allocated`` from after the model is on
the GPU to the end of the run (what metrics.json's ``cuda_max_memory_allocated`` measures).

FLOPs per real token (``flops_per_token``; attention's sequence-length term left out, N = the
backbone's parameters without its embeddings, which cost a lookup, not a matmul):
full fine-tuning 6N (forward 2N, backward 4N); LoRA/QLoRA 4N + 6 x trainable (forward 2N,
activation gradients through every frozen layer 2N, weight gradients of the trainable ones only).
MFU = FLOPs/token x real tokens/s / peak dense bf16 FLOP/s of the detected GPU (``PEAK_TFLOPS``;
``--peak-tflops`` for a GPU not listed). A QLoRA step also dequantizes the 4-bit weights, which
the count leaves out.

    python benchmarks/gpu.py            # on a GPU; prints "skipped: no GPU" elsewhere
    python benchmarks/gpu.py --dry      # build the configs on the meta device and count FLOPs only
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from _common import median, print_table


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    config: dict
    method: str
    method_spec: dict
    quantize_4bit: bool = False
    max_length: int = 512
    batch_size: int = 16


NT500M = {"model_type": "esm", "vocab_size": 4107, "hidden_size": 1280, "num_hidden_layers": 24, "num_attention_heads": 20,
          "intermediate_size": 5120, "max_position_embeddings": 1002, "position_embedding_type": "rotary",
          "pad_token_id": 1, "mask_token_id": 2, "token_dropout": False}
ESM2_650M = {"model_type": "esm", "vocab_size": 33, "hidden_size": 1280, "num_hidden_layers": 33, "num_attention_heads": 20,
             "intermediate_size": 5120, "max_position_embeddings": 1026, "position_embedding_type": "rotary",
             "pad_token_id": 1, "mask_token_id": 32, "token_dropout": False}
LLAMA_7B = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "intermediate_size": 11008, "max_position_embeddings": 4096, "pad_token_id": 0}
ESM_LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["query", "key", "value", "dense"]}
LLAMA_LORA = {"r": 8, "lora_alpha": 16}

CASES = [
    Case("nt500m_lora", "esm", NT500M, "lora", ESM_LORA),
    Case("nt500m_full", "esm", NT500M, "full", {}),
    Case("esm2_650m_lora", "esm", ESM2_650M, "lora", ESM_LORA, max_length=128, batch_size=64),
    Case("esm2_650m_full", "esm", ESM2_650M, "full", {}, max_length=128, batch_size=64),
    Case("llama7b_qlora", "llama", LLAMA_7B, "lora", LLAMA_LORA, quantize_4bit=True, batch_size=8),
]

# Dense bf16 tensor-core peak, TFLOP/s, by the start of torch.cuda.get_device_name() (NVIDIA data
# sheets; without sparsity). Longest prefix wins. GPUs without native bf16 (T4, V100) are absent.
PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100 SXM": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H100 NVL": 835.0,
    "NVIDIA H100": 989.0, "NVIDIA H200": 989.0, "NVIDIA GH200": 989.0, "NVIDIA B200": 2250.0,
    "NVIDIA A100": 312.0, "NVIDIA A800": 312.0, "NVIDIA A40": 150.0, "NVIDIA A10": 125.0, "NVIDIA L40S": 362.0,
    "NVIDIA L40": 181.0, "NVIDIA L4": 121.0, "NVIDIA RTX 6000 Ada": 364.0, "NVIDIA GeForce RTX 4090": 165.0,
}


def peak_tflops(device_name: str, override: float | None) -> float | None:
    """The GPU's dense bf16 peak: ``override`` if given, else from ``PEAK_TFLOPS``; None if unknown."""
    if override:
        return override
    matches = [prefix for prefix in PEAK_TFLOPS if device_name.startswith(prefix)]
    return PEAK_TFLOPS[max(matches, key=len)] if matches else None


def build_config(case: Case):
    from transformers import AutoConfig

    values = dict(case.config)
    return AutoConfig.for_model(values.pop("model_type"), **values)


def count_params(case: Case) -> tuple[int, int]:
    """(all, embedding) parameters of the backbone, built on the meta device (no memory, no time)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(build_config(case))
    embedding = sum(p.numel() for module in model.modules() if isinstance(module, torch.nn.Embedding)
                    for p in module.parameters(recurse=False))
    return sum(p.numel() for p in model.parameters()), embedding


def flops_per_token(method: str, backbone_params: int, embedding_params: int, trainable: int) -> float:
    """Training FLOPs per token (see the module docstring): full 6N, a parameter-efficient method
    4N + 6 x its trainable parameters; N without the embeddings."""
    dense = backbone_params - embedding_params
    if method == "full":
        return 6.0 * dense
    return 4.0 * dense + 6.0 * trainable


def lora_trainable(case: Case) -> int:
    """Trainable parameters of the case's method on the meta device (LoRA matrices; all for full)."""
    import torch
    from transformers import AutoModel

    from seqpeft.methods.registry import MethodContext, resolve_method
    from seqpeft.models.families import FAMILIES

    with torch.device("meta"):
        backbone = AutoModel.from_config(build_config(case))
        method, args = resolve_method(case.method, case.method_spec)
        backbone = method.apply(backbone, args, MethodContext(FAMILIES[case.family], 1, case.name))
    return sum(p.numel() for p in backbone.parameters() if p.requires_grad)


def synthetic_lengths(case: Case, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(case.max_length // 2, case.max_length + 1, size=n)


def build_backbone(case: Case, device):
    """Random float32 backbone on ``device`` (the workflow loads float32 weights); QLoRA: every
    Linear replaced by an NF4 ``Linear4bit`` computing in bf16, as the workflow's qlora loads it."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModel.from_config(build_config(case), torch_dtype=torch.float32, attn_implementation="sdpa")
    if case.quantize_4bit:
        _quantize_linears(model, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return model


def _quantize_linears(model, device) -> None:
    import bitsandbytes as bnb
    import torch

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                quantized = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                              compute_dtype=torch.bfloat16, quant_type="nf4", device="cpu")
                quantized.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4").to(device)
                if child.bias is not None:
                    quantized.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, quantized)
                del child


def workflow_model(case: Case, steps: int, device):
    """The classifier as a fine-tuning job assembles it: backbone + method + head on ``device``, the
    objective attached, ``training.precision: auto`` applied; returns (model, method, objective, precision)."""
    import torch

    from seqpeft.training.assemble import apply_precision, resolve_precision
    from seqpeft.models.classifier import make_classifier
    from seqpeft.methods.registry import MethodContext, resolve_method
    from seqpeft.models.families import FAMILIES, LoadedBackbone
    from seqpeft.tasks import objective_for

    family = FAMILIES[case.family]
    backbone = build_backbone(case, device)
    method, args = resolve_method(case.method, case.method_spec)
    backbone = method.apply(backbone, args, MethodContext(family, steps, case.name))
    loaded = LoadedBackbone(backbone, family, int(case.config["hidden_size"]), tokenizer=None)
    model = make_classifier(loaded, 2)
    objective = objective_for("sequence_classification", {"kind": "sequence_classification"})
    objective.attach(model)
    model.to(device)
    precision, _ = resolve_precision(torch, "auto", device)
    apply_precision(torch, model, precision, device)
    return model, method, objective, precision


def synthetic_split(case: Case, n: int):
    from seqpeft.core.batching import Split
    from seqpeft.data.tokenize import TokenizedSplit

    lengths = synthetic_lengths(case, n, seed=0)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.random.default_rng(1).integers(4, 20, size=int(offsets[-1])).astype(np.int32)
    return Split(TokenizedSplit(ids, offsets, np.random.default_rng(2).integers(0, 2, size=n)), per_residue=False), lengths


class StepClock:
    """Real tokens and seconds of the steps after ``warmup``, timed between device synchronisations."""

    def __init__(self, device, warmup: int):
        self.device, self.warmup = device, warmup
        self.started, self.tokens, self.steps = None, 0, 0

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step_done(self, step: int, real_tokens: int) -> None:
        """Call after step ``step`` (0-based) with the real tokens it trained on."""
        if step + 1 == self.warmup:
            self._sync()
            self.started = time.perf_counter()
        elif step + 1 > self.warmup:
            self.tokens += real_tokens
            self.steps += 1

    def result(self) -> dict:
        self._sync()
        seconds = time.perf_counter() - self.started
        return {"tokens_per_s": self.tokens / seconds, "timed_steps": self.steps}


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device) -> float:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def run_seqpeft(case: Case, steps: int, device, warmup: int = 3) -> dict:
    """``steps`` optimizer steps of the workflow's training step (seqpeft.training.loop.train_step's work)."""
    import torch

    from seqpeft.core.batching import length_bucketed_batches
    from seqpeft.training.distributed import SINGLE
    from seqpeft.core.objectives import loss_module
    from seqpeft.config.recipe import make_optimizer
    from seqpeft.training.step import training_step

    model, method, objective, precision = workflow_model(case, steps, device)
    split, lengths = synthetic_split(case, steps * case.batch_size)
    batches = length_bucketed_batches(lengths, case.batch_size, 64, np.random.default_rng(0))[:steps]
    loss_model = loss_module(model, objective)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer("AdamW", {}, params, 1e-4, 0.0, fused=device.type in ("cpu", "cuda"))
    model.train()
    reset_peak(device)
    clock = StepClock(device, warmup)
    for step, indices in enumerate(batches):
        training_step(torch, loss_model, method, split, indices, 1, case.max_length, device, case.batch_size,
                      objective, SINGLE, model)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if method.after_optimizer_step is not None:
            method.after_optimizer_step(model.backbone, step + 1)
        optimizer.zero_grad(set_to_none=True)
        clock.step_done(step, int(lengths[indices].sum()))
    return {**clock.result(), "peak_gb": peak_gb(device), "precision": precision}


def run_seed_recipe(case: Case, steps: int, device, warmup: int = 3) -> dict:
    """The same model through the Hugging Face ``Trainer``, padded to the longest sequence, random batches."""
    import tempfile

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model, _, _, precision = workflow_model(case, steps, device)
    model.__dict__.pop("forward", None)  # the Trainer's own autocast (bf16=) instead of seqpeft's wrapper
    n = steps * case.batch_size
    lengths = synthetic_lengths(case, n, seed=0)
    width = int(lengths.max())
    input_ids = torch.ones((n, width), dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    rng = np.random.default_rng(1)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.from_numpy(rng.integers(4, 20, size=length))
        attention[row, :length] = 1
    labels = torch.from_numpy(np.random.default_rng(2).integers(0, 2, size=n))
    served: list[int] = []  # rows in the order the Trainer's loader asks for them (no workers: no prefetch)

    class Padded(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            served.append(int(i))
            return {"input_ids": input_ids[i], "attention_mask": attention[i], "labels": labels[i]}

    class ClassifierTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logits = model(inputs["input_ids"], inputs["attention_mask"])
            return torch.nn.functional.cross_entropy(logits.float(), inputs["labels"])

    clock = StepClock(device, warmup)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            rows = served[(state.global_step - 1) * case.batch_size:state.global_step * case.batch_size]
            clock.step_done(state.global_step - 1, int(lengths[rows].sum()))

    reset_peak(device)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, bf16=precision == "bf16", per_device_train_batch_size=case.batch_size,
                                 max_steps=steps, save_strategy="no", report_to="none", disable_tqdm=True,
                                 learning_rate=1e-4, max_grad_norm=1.0, optim="adamw_torch_fused",
                                 remove_unused_columns=False, dataloader_num_workers=0, use_cpu=device.type == "cpu")
        ClassifierTrainer(model=model, args=args, train_dataset=Padded(), callbacks=[Clock()]).train()
    return {**clock.result(), "peak_gb": peak_gb(device), "precision": precision}


RECIPES = {"seed_recipe": run_seed_recipe, "seqpeft": run_seqpeft}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="build configs and count FLOPs only (no GPU needed)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timing, on both recipes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the GPU, TFLOP/s (default: from PEAK_TFLOPS by the GPU's name)")
    parser.add_argument("--cases", nargs="*", default=[c.name for c in CASES])
    args = parser.parse_args()
    import torch

    cases = [c for c in CASES if c.name in args.cases]
    params = {c.name: count_params(c) for c in cases}
    flops = {c.name: flops_per_token(c.method, *params[c.name], lora_trainable(c)) for c in cases}
    if args.dry or not torch.cuda.is_available():
        print_table(["case", "method", "parameters", "embedding", "FLOPs/token", "max_length", "batch"],
                    [[c.name, c.method + (" 4-bit" if c.quantize_4bit else ""), f"{params[c.name][0]:,}",
                      f"{params[c.name][1]:,}", f"{flops[c.name]:.3g}", c.max_length, c.batch_size] for c in cases])
        if not torch.cuda.is_available():
            print("skipped: no GPU")
        return

    device = torch.device("cuda", torch.cuda.current_device())
    name = torch.cuda.get_device_name(device)
    peak = peak_tflops(name, args.peak_tflops)
    rows, figures = [], {}
    for case in cases:
        runs = {recipe: [] for recipe in RECIPES}
        for repeat in range(args.repeats):
            for recipe, run in RECIPES.items():
                runs[recipe].append(run(case, args.steps, device, args.warmup))
                torch.cuda.empty_cache()
                print(f"  {case.name} {recipe} repeat {repeat + 1}: {runs[recipe][-1]}", flush=True)
        for recipe, results in runs.items():
            tps = median(r["tokens_per_s"] for r in results)
            mfu = flops[case.name] * tps / (peak * 1e12) if peak else float("nan")
            peak_memory = max(r["peak_gb"] for r in results)
            rows.append([case.name, recipe, results[0]["precision"], f"{tps:,.0f}", f"{100 * mfu:.1f}%", f"{peak_memory:.2f}"])
            figures[(case.name, recipe)] = (mfu, peak_memory)
    print(f"device: {name}, peak {peak if peak else 'unknown (pass --peak-tflops)'} TFLOP/s dense bf16")
    print_table(["case", "recipe", "precision", "real tokens/s", "MFU", "peak GB"], rows)
    lora_mfu = figures.get(("nt500m_lora", "seqpeft"), (float("nan"),))[0]
    qlora_peak = figures.get(("llama7b_qlora", "seqpeft"), (0, float("nan")))[1]
    print(f"lora_mfu: {lora_mfu:.3f} qlora_7b_peak_gb: {qlora_peak:.2f}")


if __name__ == "__main__":
    main()
