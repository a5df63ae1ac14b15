"""Registry of fine-tuning methods.

Each method turns a loaded backbone into the thing that trains (a peft model, or the backbone
with some parameters frozen) and may hook into the training loop (AdaLoRA's budget schedule).
The module imports no torch/peft at import time: the workflow reads ``METHOD_NAMES`` and the
descriptions while parsing the DAG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.methods.lopa import LopaConfig
from seqpeft.methods.qlora import OWN_KEYS as QLORA_OWN_KEYS


@dataclass
class MethodContext:
    """What a method needs to know beyond its own arguments."""

    family: Any  # seqpeft.models.families.ModelFamily
    total_steps: int
    model_name: str = ""
    # head: transformers (seqpeft.models.hf_head): SEQ_CLS, with the head modules the checkpoint lacks
    # beyond peft's own (classifier, score) in modules_to_save
    task_type: str = "FEATURE_EXTRACTION"
    modules_to_save: tuple[str, ...] = ()

    def peft_config(self, config_cls, options: dict):
        """``config_cls(**options)`` with this context's task type (and head modules to save)."""
        options = dict(options)
        if self.modules_to_save and "modules_to_save" in getattr(config_cls, "__dataclass_fields__", {}):
            options["modules_to_save"] = list(dict.fromkeys([*(options.get("modules_to_save") or []),
                                                             *self.modules_to_save]))
        return config_cls(task_type=self.task_type, **options)


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    apply: Callable[[Any, dict, MethodContext], Any]
    after_optimizer_step: Callable[[Any, int], None] | None = None
    extra_loss: Callable[[Any], Any] | None = None
    uses_peft: bool = True
    # State outside the parameters that a resumed run needs (AdaLoRA's importance estimates).
    save_state: Callable[[Any], Any] | None = None
    load_state: Callable[[Any, Any], None] | None = None
    # Methods of seqpeft's own (seqpeft.methods.adapters): artifacts keep only the backbone's trainable
    # parameters, re-applied onto the base model when a run is loaded.
    saves_trainable: bool = False
    # Extra from_pretrained arguments for the backbone (QLoRA's 4-bit quantization), from the method args.
    load_kwargs: Callable[..., dict] | None = None  # (args, device=None): from_pretrained arguments
    # Rebuilds saved adapter weights on the base backbone for non-peft adapters (default: PeftModel).
    load_adapter: Callable[[Any, Any], Any] | None = None
    # What a config entry may set (checked before any job, seqpeft.methods.options): the fields of this
    # peft config class, if any, and seqpeft's own arguments of the method.
    peft_config: str | None = None
    options: tuple[str, ...] = ()
    # LoRA on the family's expert parameters (ModelFamily.lora_target_parameters) unless the entry
    # sets target_parameters: peft allows no dropout there (seqpeft.methods.options.pairing_problem)
    on_family_parameters: bool = False
    # What the arguments alone show to be impossible, as (option, problem, fix) or None: run by the
    # config check before any job (seqpeft.methods.options.option_problem) and again by the job.
    check_args: Callable[[dict], tuple[str, str, str] | None] | None = None


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def _targets(args: dict, default: tuple[str, ...], key: str = "target_modules") -> list[str] | str | None:
    """The method's own targets, else the family's; None (peft's defaults) for an unregistered family."""
    value = args.get(key) or default
    if not value:
        return None
    return value if isinstance(value, str) else list(value)


def _module_leaves(backbone) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, _ in backbone.named_modules() if name})


def _check_targets(backbone, targets: list[str] | str | None, method: str, model_name: str) -> None:
    """Fail early, listing the model's module names, when a target module does not exist."""
    if targets is None or isinstance(targets, str):
        return
    names = [name for name, _ in backbone.named_modules()]
    missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if missing:
        raise SeqpeftInputError(
            None, f"method {method!r}: target modules {missing} do not exist in model {model_name!r}.",
            fix=f"choose target_modules among the model's module names: {_module_leaves(backbone)}.",
        )


def _peft_wrap(backbone, config):
    from peft import get_peft_model

    try:
        return get_peft_model(backbone, config)
    except ValueError as error:
        # Only reachable for an unregistered family left to peft's defaults, which has none for it.
        if getattr(config, "target_modules", "") is None and "target_modules" in str(error):
            model_type = getattr(backbone.config, "model_type", "?")
            raise SeqpeftInputError(
                None, f"{type(config).__name__}: model type {model_type!r} has no family in seqpeft.models.families.FAMILIES "
                "and peft has no default target modules for it.",
                fix=f"set target_modules in the method entry, among the model's module names: {_module_leaves(backbone)}.",
            ) from error
        raise


def _full(backbone, args: dict, ctx: MethodContext):
    backbone.requires_grad_(True)
    return backbone


def _frozen(backbone, args: dict, ctx: MethodContext):
    backbone.requires_grad_(False)
    return backbone


def _lora(backbone, args: dict, ctx: MethodContext):
    from peft import LoraConfig

    targets = _targets(args, ctx.family.lora_targets)
    _check_targets(backbone, targets, "lora", ctx.model_name)
    args = dict(args)
    if "last_n_layers" in args:  # PEFT-SP's --num_end_lora_layers: layers_to_transform counted from the top
        from seqpeft.config.recipe import last_layers

        if "layers_to_transform" in args:
            raise SeqpeftInputError(None, "lora: last_n_layers and layers_to_transform both given.", fix="keep one of them.")
        args["layers_to_transform"] = last_layers(backbone, args.pop("last_n_layers"))
    options = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, **args, "target_modules": targets}
    if "target_parameters" not in args and ctx.family.lora_target_parameters:
        # peft's parameter-level LoRA has no dropout: without an explicit lora_dropout it is 0 here,
        # with one the user chooses (target_parameters: [] keeps dropout on the modules only).
        options["target_parameters"] = list(ctx.family.lora_target_parameters)
        options["lora_dropout"] = args.get("lora_dropout", 0.0)
    return _peft_wrap(backbone, ctx.peft_config(LoraConfig, options))


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


def _adalora_check(args: dict) -> tuple[str, str, str] | None:
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


def _adalora_rs_check(args: dict) -> tuple[str, str, str] | None:
    probability = args.get("rs_probability", 0.0)
    if not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        return ("rs_probability", f"is {probability!r}, not a probability.", "set it between 0 and 1 (the seed uses 0.1).")
    return _adalora_check(args)


def _raise_on(problem: tuple[str, str, str] | None, method: str) -> None:
    if problem:
        option, text, fix = problem
        raise SeqpeftInputError(None, f"{method}: {option} {text}", fix=fix)


def _adalora(backbone, args: dict, ctx: MethodContext):
    from peft import AdaLoraConfig

    _raise_on(_adalora_check(args), "adalora")
    args = dict(args)
    every = int(args.pop("allocate_every", 1))
    targets = _targets(args, ctx.family.lora_targets)
    _check_targets(backbone, targets, "adalora", ctx.model_name)
    options = {"init_r": 12, "target_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, **args}
    options.update(adalora_schedule(ctx.total_steps, args))
    options["target_modules"] = targets
    model = _peft_wrap(backbone, ctx.peft_config(AdaLoraConfig, options))
    model.seqpeft_allocate_every = every
    return model


def _adalora_step(model, global_step: int) -> None:
    # The HF Trainer never calls this; without it AdaLoRA is LoRA with extra parameters.
    # allocate_every: LINGO's CustomTrainer calls it every 50 steps; its train_opt125m.py never (0).
    every = getattr(model, "seqpeft_allocate_every", 1)
    if every and global_step % every == 0:
        model.base_model.update_and_allocate(global_step)


def _adalora_save_state(model) -> dict:
    allocator = model.base_model.rankallocator
    config = model.peft_config[model.active_adapter]
    return {"ipt": allocator.ipt, "exp_avg_ipt": allocator.exp_avg_ipt, "exp_avg_unc": allocator.exp_avg_unc,
            "rank_pattern": config.rank_pattern}


def _adalora_load_state(model, state: dict) -> None:
    allocator = model.base_model.rankallocator
    allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc = state["ipt"], state["exp_avg_ipt"], state["exp_avg_unc"]
    model.peft_config[model.active_adapter].rank_pattern = state["rank_pattern"]


def _adalora_orthogonality(model):
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


def _adalora_rs(backbone, args: dict, ctx: MethodContext):
    from seqpeft.methods import adalora_rs

    _raise_on(_adalora_rs_check(args), "adalora_rs")
    args = dict(args)
    probability = float(args.pop("rs_probability", adalora_rs.DEFAULT_PROBABILITY))
    seed = int(args.pop("rs_seed", 0))
    restore = bool(args.pop("rs_restore", True))
    return adalora_rs.install(_adalora(backbone, args, ctx), probability, seed, restore)


def _adalora_rs_save_state(model) -> dict:
    from seqpeft.methods import adalora_rs

    return {**_adalora_save_state(model), "rs_generator": adalora_rs.save_generator(model)}


def _adalora_rs_load_state(model, state: dict) -> None:
    from seqpeft.methods import adalora_rs

    _adalora_load_state(model, state)
    adalora_rs.load_generator(model, state["rs_generator"])


def _qlora(backbone, args: dict, ctx: MethodContext):
    from seqpeft.methods import qlora

    return _lora(qlora.prepare(backbone, args), qlora.lora_args(args), ctx)


def _qlora_load_kwargs(args: dict, device: str | None = None) -> dict:
    from seqpeft.methods import qlora

    return qlora.load_kwargs(args, device)


def _lopa(backbone, args: dict, ctx: MethodContext):
    from seqpeft.methods import lopa

    return lopa.wrap(backbone, lopa.LopaConfig.from_args(args))


def _lopa_load(backbone, directory):
    from seqpeft.methods import lopa

    return lopa.load(backbone, directory)


def _prompt_learning(config_name: str, defaults: dict) -> Callable:
    def apply(backbone, args: dict, ctx: MethodContext):
        import peft

        if config_name == "PrefixTuningConfig" and not ctx.family.supports_prefix:
            raise SeqpeftInputError(
                None, f"prefix_tuning does not apply to model {ctx.model_name!r} ({ctx.family.name} has no past-key-values support).",
                fix="remove prefix_tuning for this model from the experiments, or use prompt_tuning / p_tuning.",
            )
        options = {**defaults, **args}
        if config_name != "PrefixTuningConfig" and "token_dim" not in options:
            # virtual tokens join the input embeddings, which need not be hidden_size wide (OPT-350m's
            # are word_embed_proj_dim, 512 vs 1024); peft would size them from hidden_size
            options["token_dim"] = int(backbone.get_input_embeddings().embedding_dim)
        return _peft_wrap(backbone, ctx.peft_config(getattr(peft, config_name), options))

    return apply


def _ia3(backbone, args: dict, ctx: MethodContext):
    from peft import IA3Config

    targets = _targets(args, ctx.family.ia3_targets)
    feedforward = _targets(args, ctx.family.ia3_feedforward, "feedforward_modules")
    _check_targets(backbone, targets, "ia3", ctx.model_name)
    return _peft_wrap(backbone, ctx.peft_config(IA3Config, {**args, "target_modules": targets,
                                                                "feedforward_modules": feedforward}))


register(Method("full", "Full fine-tuning: every backbone weight and the head train.", _full, uses_peft=False))
register(Method("frozen", "Frozen backbone, linear probe: only the task head trains.", _frozen, uses_peft=False))
register(Method("lora", "LoRA: low-rank updates on the family's attention/MLP projections (peft).", _lora,
                peft_config="LoraConfig", options=("last_n_layers",), on_family_parameters=True))
register(Method("adalora", "AdaLoRA: SVD-form LoRA whose rank budget is reallocated every step (peft, driven correctly).",
                _adalora, after_optimizer_step=_adalora_step, extra_loss=_adalora_orthogonality,
                save_state=_adalora_save_state, load_state=_adalora_load_state, peft_config="AdaLoraConfig",
                options=("allocate_every",), check_args=_adalora_check))
register(Method("adalora_rs", "AdaLoRA + random sampling: each budget mask step drops kept / re-admits pruned triplets with prob. rs_probability.",
                _adalora_rs, after_optimizer_step=_adalora_step, extra_loss=_adalora_orthogonality,
                save_state=_adalora_rs_save_state, load_state=_adalora_rs_load_state, peft_config="AdaLoraConfig",
                options=("rs_probability", "rs_seed", "rs_restore", "allocate_every"), check_args=_adalora_rs_check))
register(Method("qlora", "QLoRA: LoRA on a 4-bit NF4 backbone (double quantisation, bf16 compute; bitsandbytes).",
                _qlora, load_kwargs=_qlora_load_kwargs, peft_config="LoraConfig",
                options=("last_n_layers", *QLORA_OWN_KEYS), on_family_parameters=True))
register(Method("prompt_tuning", "Prompt tuning: trainable virtual tokens prepended to the input embeddings (peft).",
                _prompt_learning("PromptTuningConfig", {"num_virtual_tokens": 10}), peft_config="PromptTuningConfig"))
register(Method("prefix_tuning", "Prefix tuning (P-tuning v2): trainable key/value prefixes at every layer (peft).",
                _prompt_learning("PrefixTuningConfig", {"num_virtual_tokens": 10}), peft_config="PrefixTuningConfig"))
register(Method("p_tuning", "P-tuning: virtual tokens produced by a small MLP prompt encoder (peft).",
                _prompt_learning("PromptEncoderConfig", {"num_virtual_tokens": 10, "encoder_hidden_size": 64}),
                peft_config="PromptEncoderConfig"))
register(Method("lopa", "LoPA: per-input soft prompt Z_S * sigmoid(u v^T) from mean-pooled frozen embeddings (num_virtual_tokens, lp_rank).",
                _lopa, load_adapter=_lopa_load, options=tuple(LopaConfig.__dataclass_fields__)))
register(Method("ia3", "IA3: learned rescaling of keys, values and feed-forward activations (peft).", _ia3,
                peft_config="IA3Config"))



def _adapter(backbone, args: dict, ctx: MethodContext):
    from seqpeft.methods.adapters import apply_adapter

    return apply_adapter(backbone, args, ctx)


def _deep_prompt(backbone, args: dict, ctx: MethodContext):
    from seqpeft.methods.adapters import apply_deep_prompt

    return apply_deep_prompt(backbone, args, ctx)


register(Method("adapter", "Bottleneck adapters: two per block (after attention and feed-forward outputs), hidden/2, ReLU, "
                "LayerNorm, residual, zero-init up-projection.", _adapter, uses_peft=False, saves_trainable=True,
                options=("bottleneck",)))
register(Method("deep_prompt", "Deep prompts (P-tuning v2 on hidden states): trainable virtual tokens re-inserted before every "
                "layer; works on ESM, where peft prefix tuning does not.", _deep_prompt, uses_peft=False, saves_trainable=True,
                options=("num_virtual_tokens",)))

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def passthrough_method(config_class: str) -> Method:
    """Any other peft config class by name, e.g. ``LoHaConfig``, with the entry's arguments."""

    def apply(backbone, args: dict, ctx: MethodContext):
        import peft

        config_cls = getattr(peft, config_class, None)
        if config_cls is None or not config_class.endswith("Config"):
            raise SeqpeftInputError(None, f"peft has no config class {config_class!r}.",
                                    fix="name a peft config class, e.g. LoHaConfig, LoKrConfig, VeraConfig.")
        options = dict(args)
        if "target_modules" in config_cls.__dataclass_fields__ and "target_modules" not in options:
            options["target_modules"] = _targets({}, ctx.family.lora_targets)
        if options.get("target_modules") is not None:
            _check_targets(backbone, options["target_modules"], config_class, ctx.model_name)
        return _peft_wrap(backbone, ctx.peft_config(config_cls, options))

    return Method(config_class, f"peft pass-through: {config_class}", apply, peft_config=config_class)


# Keys of a method entry that are not method arguments (``dsp`` switches on domain-shift
# prompting for the variant: it changes the inputs, not the method, see seqpeft.methods.dsp).
RESERVED_KEYS = ("method", "peft", "training", "description", "dsp", "train_head", "signal_peptide")  # train_head: seqpeft.training.assemble.build_model; signal_peptide: seqpeft.config.settings.FinetuneJob


def resolve_method(name: str, spec: dict) -> tuple[Method, dict]:
    """The registry entry for a config method entry, and the arguments to pass to it."""
    args = {key: value for key, value in spec.items() if key not in RESERVED_KEYS}
    if "peft" in spec:
        return passthrough_method(spec["peft"]), args
    registry_name = spec.get("method", name)
    if registry_name not in METHODS:
        raise SeqpeftInputError(None, f"unknown method {registry_name!r} (methods.{name}).",
                                fix=f"use one of {sorted(METHODS)} or 'peft: <ConfigClass>' for any other peft method.")
    return METHODS[registry_name], args


