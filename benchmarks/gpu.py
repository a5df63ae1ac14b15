"""GPU throughput, model FLOPs utilisation and peak memory: seqpeft's path vs the seed recipe.

Randomly initialised models of the real sizes (no download): an NT-500M-like ESM encoder
(hidden 1280, 24 layers), ESM-2 650M (hidden 1280, 33 layers) and a 7B Llama-style decoder
(hidden 4096, 32 layers) for QLoRA. bf16 on the GPU, sequence classification over synthetic
sequences whose lengths spread like a real task's (uniform between half and all of max_length).

- seed recipe: Hugging Face ``Trainer`` (``bf16=True``: fp32 weights under autocast), the data set
  padded to its longest sequence, random batches.
- seqpeft: the model in bf16 with seqpeft's classifier and method registry, batches from
  ``length_bucketed_batches`` with dynamic padding (``collate``), one ``_training_step`` per batch.

Throughput counts real (non-padding) tokens only, so padding is overhead, not credit.
MFU = 6 x N x real tokens/s / peak bf16 FLOP/s, N = all parameters of the model (the usual
6N-per-token training estimate, attention FLOPs left out; for LoRA/QLoRA the backward pass skips
the frozen weight gradients, so 6N overstates the work by about a third and MFU is optimistic by
that much). Peak FLOP/s: H100 / H200 SXM dense bf16, 989 TFLOP/s (``--peak-tflops`` to change).

    python benchmarks/gpu.py            # on a GPU; prints "skipped: no GPU" elsewhere
    python benchmarks/gpu.py --dry      # build the configs on the meta device and count FLOPs only
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from _common import print_table


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


def build_config(case: Case):
    from transformers import AutoConfig

    values = dict(case.config)
    return AutoConfig.for_model(values.pop("model_type"), **values)


def count_params(case: Case) -> int:
    """All parameters of the backbone, built on the meta device (no memory, no time)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(build_config(case))
    return sum(p.numel() for p in model.parameters())


def flops_per_token(params: int) -> float:
    return 6.0 * params


def synthetic_lengths(case: Case, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(case.max_length // 2, case.max_length + 1, size=n)


def build_backbone(case: Case, dtype):
    """Random backbone on the GPU; QLoRA: every decoder Linear replaced by an NF4 ``Linear4bit``."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModel.from_config(build_config(case), torch_dtype=dtype, attn_implementation="sdpa")
    if case.quantize_4bit:
        _quantize_linears(model)
        torch.cuda.empty_cache()
    return model


def _quantize_linears(model) -> None:
    import bitsandbytes as bnb
    import torch

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                quantized = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                              compute_dtype=torch.bfloat16, quant_type="nf4", device="cpu")
                quantized.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4").to("cuda")
                if child.bias is not None:
                    quantized.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, quantized)
                del child


def seqpeft_model(case: Case, steps: int, dtype):
    from seqpeft.methods.registry import MethodContext, resolve_method
    from seqpeft.models.classifier import make_classifier
    from seqpeft.models.families import FAMILIES, LoadedBackbone

    family = FAMILIES[case.family]
    backbone = build_backbone(case, dtype)
    method, args = resolve_method(case.method, case.method_spec)
    backbone = method.apply(backbone, args, MethodContext(family, steps, case.name))
    loaded = LoadedBackbone(backbone, family, int(case.config["hidden_size"]), tokenizer=None)
    model = make_classifier(loaded, 2)
    model.head.to(device="cuda", dtype=dtype)  # the backbone is already on the GPU in its dtype (or NF4)
    return model, method


def run_seqpeft(case: Case, steps: int) -> dict:
    import torch

    from seqpeft.data.tokenize import TokenizedSplit
    from seqpeft.core.batching import Split, length_bucketed_batches
    from seqpeft.training.step import training_step

    model, method = seqpeft_model(case, steps, torch.bfloat16)
    n = steps * case.batch_size
    lengths = synthetic_lengths(case, n, seed=0)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.random.default_rng(1).integers(4, 20, size=int(offsets[-1])).astype(np.int32)
    split = Split(TokenizedSplit(ids, offsets, np.random.default_rng(2).integers(0, 2, size=n)), per_residue=False)
    batches = length_bucketed_batches(lengths, case.batch_size, 64, np.random.default_rng(0))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    model.train()
    warmup = 3
    torch.cuda.reset_peak_memory_stats()
    for step, indices in enumerate(batches):
        if step == warmup:
            torch.cuda.synchronize()
            started, tokens = time.perf_counter(), 0
        training_step(torch, model, method, split, indices, 1, case.max_length, torch.device("cuda"), case.batch_size)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            tokens += int(lengths[indices].sum())
    torch.cuda.synchronize()
    return {"tokens_per_s": tokens / (time.perf_counter() - started), "peak_gb": torch.cuda.max_memory_allocated() / 2**30}


def run_seed_recipe(case: Case, steps: int) -> dict:
    import tempfile

    import torch
    from transformers import Trainer, TrainingArguments

    model, _ = seqpeft_model(case, steps, torch.float32 if not case.quantize_4bit else torch.bfloat16)
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

    class Padded(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"input_ids": input_ids[i], "attention_mask": attention[i], "labels": labels[i]}

    class ClassifierTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logits = model(inputs["input_ids"], inputs["attention_mask"])
            return torch.nn.functional.cross_entropy(logits.float(), inputs["labels"])

    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, bf16=True, per_device_train_batch_size=case.batch_size, max_steps=steps,
                                 save_strategy="no", report_to="none", disable_tqdm=True, learning_rate=1e-4,
                                 remove_unused_columns=False, dataloader_num_workers=2)
        trainer = ClassifierTrainer(model=model, args=args, train_dataset=Padded())
        result = trainer.train()
    real_tokens = int(lengths.sum())
    return {"tokens_per_s": real_tokens / result.metrics["train_runtime"], "peak_gb": torch.cuda.max_memory_allocated() / 2**30}


RECIPES = {"seed_recipe": run_seed_recipe, "seqpeft": run_seqpeft}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="build configs and count FLOPs only (no GPU needed)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--cases", nargs="*", default=[c.name for c in CASES])
    args = parser.parse_args()
    import torch

    cases = [c for c in CASES if c.name in args.cases]
    params = {c.name: count_params(c) for c in cases}
    if args.dry or not torch.cuda.is_available():
        print_table(["case", "method", "parameters", "FLOPs/token (6N)", "max_length", "batch"],
                    [[c.name, c.method + (" 4-bit" if c.quantize_4bit else ""), f"{params[c.name]:,}",
                      f"{flops_per_token(params[c.name]):.3g}", c.max_length, c.batch_size] for c in cases])
        if not torch.cuda.is_available():
            print("skipped: no GPU")
        return

    from _common import median

    rows, figures = [], {}
    for case in cases:
        runs = {name: [] for name in RECIPES}
        for repeat in range(args.repeats):
            for name, recipe in RECIPES.items():
                runs[name].append(recipe(case, args.steps))
                torch.cuda.empty_cache()
                print(f"  {case.name} {name} repeat {repeat + 1}: {runs[name][-1]}", flush=True)
        for name, results in runs.items():
            tps = median(r["tokens_per_s"] for r in results)
            mfu = flops_per_token(params[case.name]) * tps / (args.peak_tflops * 1e12)
            peak = max(r["peak_gb"] for r in results)
            rows.append([case.name, name, f"{tps:,.0f}", f"{100 * mfu:.1f}%", f"{peak:.2f}"])
            figures[(case.name, name)] = (mfu, peak)
    print(f"device: {torch.cuda.get_device_name()}")
    print_table(["case", "recipe", "real tokens/s", "MFU (6N)", "peak GB"], rows)
    lora_mfu = figures.get(("nt500m_lora", "seqpeft"), (float("nan"),))[0]
    qlora_peak = figures.get(("llama7b_qlora", "seqpeft"), (0, float("nan")))[1]
    print(f"lora_mfu: {lora_mfu:.3f} qlora_7b_peak_gb: {qlora_peak:.2f}")


if __name__ == "__main__":
    main()
