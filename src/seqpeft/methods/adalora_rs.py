"""AdaLoRA + random sampling (RS): a stochastic twist on AdaLoRA's budget masking.

After AdaLoRA masks every singular triplet below the budget threshold, RS drops each kept
triplet with probability p and re-admits each pruned one with probability p, so the budget
search keeps exploring instead of locking in early importance estimates. It is peft's own
``RankAllocator`` with one override, swapped into the AdaLoRA model after wrapping: no vendored
copy of peft. The draws come from a seeded ``torch.Generator`` so runs are reproducible, and
its state is part of the resumable method state.

What a re-admitted triplet starts from: LINGO's code (``peftnew/tuners/adalora.py``) zeroes every
unimportant singular value before the draw, so a re-admitted one restarts from zero and must regrow
from gradients (``rs_restore: false``, the seed's published behaviour); seqpeft's correction
(``rs_restore: true``, the default) gives it back the value it had before the masking step.
"""

from __future__ import annotations

from typing import Any

from seqpeft.methods import adalora
from seqpeft.methods.base import MethodContext, raise_problem

DEFAULT_PROBABILITY = 0.1


def _allocator_class():
    """Defined lazily: the Snakefile imports seqpeft.methods.registry, which must not import peft."""
    import torch
    from peft.tuners.adalora.layer import RankAllocator

    class RandomSamplingRankAllocator(RankAllocator):
        """peft's allocator whose budget mask is randomly perturbed after each masking step."""

        def __init__(self, model, peft_config, adapter_name, probability: float, seed: int, restore: bool):
            super().__init__(model, peft_config, adapter_name)
            self.probability = float(probability)
            self.restore = bool(restore)
            self.generator = torch.Generator().manual_seed(int(seed))

        def mask_to_budget(self, model, budget):
            # peft zeroes the pruned singular values in place; with restore, keep them so a
            # re-admitted triplet comes back with the value it had (LINGO's code: from zero).
            marker = f"lora_E.{self.adapter_name}"
            before = {n: p.detach().clone() for n, p in model.named_parameters() if marker in n}
            rank_pattern = super().mask_to_budget(model, budget)
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if name not in before:
                        continue
                    kept = torch.tensor(rank_pattern[name], dtype=torch.bool)
                    flip = torch.rand(kept.shape, generator=self.generator) < self.probability
                    kept = kept ^ flip
                    source = before[name] if self.restore else param.detach().clone()
                    values = torch.where(kept.view(-1, 1).to(param.device), source, torch.zeros_like(param))
                    param.copy_(values)
                    rank_pattern[name] = kept.tolist()
            return rank_pattern

    return RandomSamplingRankAllocator


def install(model, probability: float = DEFAULT_PROBABILITY, seed: int = 0, restore: bool = True):
    """Replace the AdaLoRA peft model's rank allocator by the RS one (same config, same budget;
    ``probability`` checked with the method's arguments, ``check_args``)."""
    tuner = model.base_model
    adapter = tuner.trainable_adapter_name
    tuner.rankallocator = _allocator_class()(tuner.model, tuner.peft_config[adapter], adapter, probability, seed, restore)
    return model


def save_generator(model) -> Any:
    return model.base_model.rankallocator.generator.get_state()


def load_generator(model, state) -> None:
    model.base_model.rankallocator.generator.set_state(state)


def check_args(args: dict) -> tuple[str, str, str] | None:
    probability = args.get("rs_probability", DEFAULT_PROBABILITY)
    if not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        return ("rs_probability", f"is {probability!r}, not a probability.", "set it between 0 and 1 (the seed uses 0.1).")
    return adalora.check_args(args)


def apply(backbone, args: dict, ctx: MethodContext):
    raise_problem(check_args(args), "adalora_rs")
    args = dict(args)
    probability = float(args.pop("rs_probability", DEFAULT_PROBABILITY))
    seed = int(args.pop("rs_seed", 0))
    restore = bool(args.pop("rs_restore", True))
    return install(adalora.apply(backbone, args, ctx), probability, seed, restore)


def save_state(model) -> dict:
    return {**adalora.save_state(model), "rs_generator": save_generator(model)}


def load_state(model, state: dict) -> None:
    adalora.load_state(model, state)
    load_generator(model, state["rs_generator"])
