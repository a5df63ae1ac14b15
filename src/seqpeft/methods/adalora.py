"""AdaLoRA as a seqpeft method: SVD-form LoRA (peft's ``AdaLoraConfig``) whose rank budget is
reallocated on the optimizer steps (peft's ``update_and_allocate``, which the HF Trainer never
calls), its schedule scaled to the run's length, its orthogonal regulariser added to the loss and
its importance estimates saved with a checkpoint. Random sampling on top: ``adalora_rs``."""

from __future__ import annotations

from seqpeft.methods.base import MethodContext, check_targets, peft_wrap, raise_problem, targets_of
from seqpeft.util.errors import SeqpeftInputError


def adalora_schedule(total_steps: int, args: dict) -> dict:
    """AdaLoRA's tinit/tfinal/deltaT scaled to the real number of optimizer steps.

    The seed code hard-coded ``total_step``; here it comes from epochs x steps per epoch, with
    warm-up (no pruning) for the first 10 % and a fixed budget for the last 20 %, unless the
    method sets ``total_step`` itself (LINGO as published: 7485, whatever the run's length).
    """
    fixed = bool(args.get("total_step"))
    total_steps = int(args["total_step"]) if fixed else max(int(total_steps), 10)
    tinit = int(args.get("tinit", max(1, total_steps // 10)))
    tfinal = int(args.get("tfinal", max(1, total_steps // 5)))
    if tinit + tfinal >= total_steps:
        raise SeqpeftInputError(None, f"adalora: tinit ({tinit}) + tfinal ({tfinal}) must be below total_step ({total_steps}"
                                f"{'' if fixed else ': epochs x optimizer steps per epoch'}).",
                                fix=("raise total_step or lower tinit/tfinal." if fixed else
                                     "train for more steps or lower tinit/tfinal."))
    delta = int(args.get("deltaT", max(1, (total_steps - tinit - tfinal) // 20)))
    return {"total_step": total_steps, "tinit": tinit, "tfinal": tfinal, "deltaT": delta}


def check_args(args: dict) -> tuple[str, str, str] | None:
    """A negative ``allocate_every``; with ``total_step`` set, a schedule whose tinit + tfinal
    leaves no step to prune in (without it the run's length decides, known only in the job)."""
    every = args.get("allocate_every", 1)
    if not isinstance(every, int) or every < 0:
        return ("allocate_every", f"is {every!r}, not a step count.",
                "1 (every optimizer step, peft's documented use), 50 (LINGO's DSP scripts) or 0 (never).")
    if args.get("total_step"):
        try:
            adalora_schedule(0, args)
        except SeqpeftInputError as error:
            return ("tinit" if "tinit" in args or "tfinal" not in args else "tfinal", error.problem, error.fix)
    return None


def apply(backbone, args: dict, ctx: MethodContext):
    from peft import AdaLoraConfig

    raise_problem(check_args(args), "adalora")
    args = dict(args)
    every = int(args.pop("allocate_every", 1))
    targets = targets_of(args, ctx.family.lora_targets)
    check_targets(backbone, targets, "adalora", ctx.model_name)
    options = {"init_r": 12, "target_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, **args}
    options.update(adalora_schedule(ctx.total_steps, args))
    options["target_modules"] = targets
    model = peft_wrap(backbone, ctx.peft_config(AdaLoraConfig, options))
    model.seqpeft_allocate_every = every
    return model


def after_step(model, global_step: int) -> None:
    # The HF Trainer never calls this; without it AdaLoRA is LoRA with extra parameters.
    # allocate_every: LINGO's CustomTrainer calls it every 50 steps; its train_opt125m.py never (0).
    every = getattr(model, "seqpeft_allocate_every", 1)
    if every and global_step % every == 0:
        model.base_model.update_and_allocate(global_step)


def save_state(model) -> dict:
    allocator = model.base_model.rankallocator
    config = model.peft_config[model.active_adapter]
    return {"ipt": allocator.ipt, "exp_avg_ipt": allocator.exp_avg_ipt, "exp_avg_unc": allocator.exp_avg_unc,
            "rank_pattern": config.rank_pattern}


def load_state(model, state: dict) -> None:
    allocator = model.base_model.rankallocator
    allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc = state["ipt"], state["exp_avg_ipt"], state["exp_avg_unc"]
    model.peft_config[model.active_adapter].rank_pattern = state["rank_pattern"]


def orthogonality(model):
    """AdaLoRA's orthogonal regulariser (peft only adds it when the model itself returns a loss)."""
    import torch

    config = model.peft_config[model.active_adapter]
    penalties = []
    for name, param in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and param.requires_grad:
            cov = param @ param.T if "lora_A" in name else param.T @ param
            penalties.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)))
    if not penalties:
        return None
    return config.orth_reg_weight * torch.stack(penalties).mean()


