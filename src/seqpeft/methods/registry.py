"""Registry of fine-tuning methods.

Each method turns a loaded backbone into the thing that trains (a peft model, or the backbone
with some parameters frozen) and may hook into the training loop (AdaLoRA's budget schedule).
The module imports no torch/peft at import time: the workflow reads ``METHOD_NAMES`` and the
descriptions while parsing the DAG.
"""

from __future__ import annotations

from typing import Callable

from seqpeft.methods import adalora, adalora_rs
from seqpeft.methods.base import METHODS, Method, MethodContext, check_targets, peft_wrap, register, targets_of
from seqpeft.methods.lopa import LopaConfig
from seqpeft.methods.qlora import OWN_KEYS as QLORA_OWN_KEYS
from seqpeft.util.errors import SeqpeftInputError

__all__ = ["METHODS", "METHOD_NAMES", "Method", "MethodContext", "passthrough_method", "register", "resolve_method"]


def _full(backbone, args: dict, ctx: MethodContext):
    backbone.requires_grad_(True)
    return backbone


def _frozen(backbone, args: dict, ctx: MethodContext):
    backbone.requires_grad_(False)
    return backbone


def _lora(backbone, args: dict, ctx: MethodContext):
    from peft import LoraConfig

    targets = targets_of(args, ctx.family.lora_targets)
    check_targets(backbone, targets, "lora", ctx.model_name)
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
    return peft_wrap(backbone, ctx.peft_config(LoraConfig, options))


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
        return peft_wrap(backbone, ctx.peft_config(getattr(peft, config_name), options))

    return apply


def _ia3(backbone, args: dict, ctx: MethodContext):
    from peft import IA3Config

    targets = targets_of(args, ctx.family.ia3_targets)
    feedforward = targets_of(args, ctx.family.ia3_feedforward, "feedforward_modules")
    check_targets(backbone, targets, "ia3", ctx.model_name)
    return peft_wrap(backbone, ctx.peft_config(IA3Config, {**args, "target_modules": targets,
                                                                "feedforward_modules": feedforward}))


register(Method("full", "Full fine-tuning: every backbone weight and the head train.", _full, uses_peft=False))
register(Method("frozen", "Frozen backbone, linear probe: only the task head trains.", _frozen, uses_peft=False))
register(Method("lora", "LoRA: low-rank updates on the family's attention/MLP projections (peft).", _lora,
                peft_config="LoraConfig", options=("last_n_layers",), on_family_parameters=True))
register(Method("adalora", "AdaLoRA: SVD-form LoRA whose rank budget is reallocated every step (peft, driven correctly).",
                adalora.apply, after_optimizer_step=adalora.after_step, extra_loss=adalora.orthogonality,
                save_state=adalora.save_state, load_state=adalora.load_state, peft_config="AdaLoraConfig",
                options=("allocate_every",), check_args=adalora.check_args))
register(Method("adalora_rs", "AdaLoRA + random sampling: each budget mask step drops kept / re-admits pruned triplets with prob. rs_probability.",
                adalora_rs.apply, after_optimizer_step=adalora.after_step, extra_loss=adalora.orthogonality,
                save_state=adalora_rs.save_state, load_state=adalora_rs.load_state, peft_config="AdaLoraConfig",
                options=("rs_probability", "rs_seed", "rs_restore", "allocate_every"), check_args=adalora_rs.check_args))
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
            options["target_modules"] = targets_of({}, ctx.family.lora_targets)
        if options.get("target_modules") is not None:
            check_targets(backbone, options["target_modules"], config_class, ctx.model_name)
        return peft_wrap(backbone, ctx.peft_config(config_cls, options))

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


