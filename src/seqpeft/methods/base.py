"""What every method shares: ``Method`` (its hooks into the loop), the ``MethodContext`` it is
applied with, the ``METHODS`` table ``register`` fills, and the target-module helpers peft
methods use. Imports no torch/peft at import time (the workflow reads the table while parsing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from seqpeft.util.errors import SeqpeftInputError


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


def raise_problem(problem: tuple[str, str, str] | None, method: str) -> None:
    """A ``Method.check_args`` finding, raised in the job as the config check words it."""
    if problem:
        option, text, fix = problem
        raise SeqpeftInputError(None, f"{method}: {option} {text}", fix=fix)


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def targets_of(args: dict, default: tuple[str, ...], key: str = "target_modules") -> list[str] | str | None:
    """The method's own targets, else the family's; None (peft's defaults) for an unregistered family."""
    value = args.get(key) or default
    if not value:
        return None
    return value if isinstance(value, str) else list(value)


def module_leaves(backbone) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, _ in backbone.named_modules() if name})


def check_targets(backbone, targets: list[str] | str | None, method: str, model_name: str) -> None:
    """Fail early, listing the model's module names, when a target module does not exist."""
    if targets is None or isinstance(targets, str):
        return
    names = [name for name, _ in backbone.named_modules()]
    missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if missing:
        raise SeqpeftInputError(
            None, f"method {method!r}: target modules {missing} do not exist in model {model_name!r}.",
            fix=f"choose target_modules among the model's module names: {module_leaves(backbone)}.",
        )


def peft_wrap(backbone, config):
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
                fix=f"set target_modules in the method entry, among the model's module names: {module_leaves(backbone)}.",
            ) from error
        raise
