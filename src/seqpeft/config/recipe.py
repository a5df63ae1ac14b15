"""Recipe knobs that published setups need: optimizer by name, LR schedule kind, dropping the top
transformer layers, LoRA on the last N layers only.

PEFT-SP (Zeng et al., Genome Research 2024) trains with ``torch.optim.Adamax`` (weight decay
1.2e-6), gradient clipping 0.25 and no scheduler; ``--remove_top_layers 1`` drops ESM-2's top
layer before the emission layer; LoRA sits in self-attention of the last ``--num_end_lora_layers``
layers. These map to ``training.optimizer`` / ``optimizer_args`` / ``scheduler: constant`` /
``max_grad_norm``, ``models.<m>.remove_top_layers`` and a LoRA method's ``last_n_layers``.

The Galaxy tutorial (Mistral-DNA) restores the best model by dev loss (``training.select_on:
loss``) and leaves its classification head frozen at its random initialisation
(``methods.<m>.train_head: false``, see ``freeze_head``).
"""

from __future__ import annotations

import inspect

from seqpeft.util.errors import SeqpeftInputError

SCHEDULERS = ("linear", "constant")
SELECT_ON = ("mcc", "loss")
# The adapter settings recorded in metrics.json (adapter_settings), where the peft config has them.
ADAPTER_KEYS = ("peft_type", "r", "lora_alpha", "lora_dropout", "bias", "target_modules", "target_parameters",
                "layers_to_transform", "init_r", "target_r", "tinit", "tfinal", "deltaT", "total_step", "beta1", "beta2",
                "orth_reg_weight", "num_virtual_tokens", "feedforward_modules", "modules_to_save")
# torch.optim names that are not optimizers.
_NOT_OPTIMIZERS = {"Optimizer", "lr_scheduler", "swa_utils"}


def optimizer_class(name: str):
    import torch

    candidate = getattr(torch.optim, str(name), None)
    if name in _NOT_OPTIMIZERS or not (inspect.isclass(candidate) and issubclass(candidate, torch.optim.Optimizer)):
        known = sorted(n for n in dir(torch.optim) if n not in _NOT_OPTIMIZERS and inspect.isclass(getattr(torch.optim, n))
                       and issubclass(getattr(torch.optim, n), torch.optim.Optimizer))
        raise SeqpeftInputError("training.optimizer", f"{name!r} is not a torch.optim optimizer.", fix=f"use one of {known}.")
    return candidate


def make_optimizer(name: str, args: dict, params, learning_rate: float, weight_decay: float, fused: bool):
    """``torch.optim.<name>(params, lr=learning_rate, weight_decay=weight_decay, **args)``; ``fused``
    only where the class has it (AdamW, Adam, SGD, ...), weight decay only where it takes one."""
    cls = optimizer_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    options = {"lr": learning_rate}
    if "weight_decay" in accepted:
        options["weight_decay"] = weight_decay
    elif weight_decay:
        raise SeqpeftInputError("training.weight_decay", f"torch.optim.{name} takes no weight decay.", fix="set weight_decay: 0.")
    if fused and "fused" in accepted and "fused" not in (args or {}):
        options["fused"] = True
    unknown = sorted(set(args or {}) - set(accepted))
    if unknown:
        raise SeqpeftInputError("training.optimizer_args", f"torch.optim.{name} has no argument(s) {unknown}.",
                                fix=f"use among {sorted(k for k in accepted if k not in ('self', 'params'))}.")
    options.update(args or {})
    return cls(params, **options)


def make_scheduler(kind: str, optimizer, warmup_steps: int, total_steps: int):
    """linear: warm-up then linear decay to 0 (the default); constant: warm-up then the learning
    rate as set (no scheduler when warmup_ratio is 0, as PEFT-SP trains)."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    if kind == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    raise SeqpeftInputError("training.scheduler", f"{kind!r} is not a schedule.", fix=f"use one of {SCHEDULERS}.")


def transformer_layers(backbone):
    """(parent module, attribute name, ModuleList) of the backbone's stack of transformer layers:
    the first ModuleList as long as ``config.num_hidden_layers`` (ESM/BERT ``encoder.layer``,
    decoders' ``layers``)."""
    from torch import nn

    depth = int(getattr(backbone.config, "num_hidden_layers", -1) or -1)
    for name, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth and name:
            parent_name, _, attribute = name.rpartition(".")
            return backbone.get_submodule(parent_name) if parent_name else backbone, attribute, module
    raise SeqpeftInputError(None, f"no stack of {depth} transformer layers found in {type(backbone).__name__}.",
                            fix="drop remove_top_layers / last_n_layers for this model.")


def drop_top_layers(backbone, count: int, where) -> None:
    """Remove the top ``count`` transformer layers of a loaded backbone (PEFT-SP's
    ``--remove_top_layers``): the head reads the output of the layer below them.

    The config keeps the checkpoint's depth, so the checkpoint (and a fully fine-tuned backbone
    saved from the shortened model, whose missing top layer loads at random and is cut again)
    always loads; ``backbone.seqpeft_layers`` is the depth in use.
    """
    from torch import nn

    parent, attribute, layers = transformer_layers(backbone)
    if int(count) >= len(layers):
        raise SeqpeftInputError(where, f"remove_top_layers: {count} would leave none of its {len(layers)} layers.",
                                fix=f"use at most {len(layers) - 1}.")
    setattr(parent, attribute, nn.ModuleList(list(layers)[:len(layers) - int(count)]))
    backbone.seqpeft_layers = len(layers) - int(count)


def last_layers(backbone, count: int) -> list[int]:
    """Indices of the last ``count`` transformer layers of the checkpoint, as PEFT-SP counts them
    (``range(len(esm2.layers) - count, len(esm2.layers))``), less any removed top layers; all
    layers when ``count`` exceeds the depth (PEFT-SP's 150M setting asks for 33 of 30 layers)."""
    depth = int(getattr(backbone.config, "num_hidden_layers", 0) or 0)
    kept = int(getattr(backbone, "seqpeft_layers", 0) or depth)
    if int(count) < 1 or depth < 1:
        raise SeqpeftInputError("last_n_layers", f"needs a positive count and a model with layers (got {count}, {depth} layers).",
                                fix="e.g. last_n_layers: 33.")
    if int(count) > depth:
        print(f"[seqpeft] last_n_layers: {count} > the model's {depth} layers; using all of them")
    layers = [index for index in range(max(0, depth - int(count)), depth) if index < kept]
    if not layers:
        raise SeqpeftInputError("last_n_layers", f"the last {count} of {depth} layers were all removed (remove_top_layers).",
                                fix=f"use last_n_layers above {depth - kept}.")
    return layers


def selection_score(dev: dict, select_on: str) -> float:
    """The dev score model selection and early stopping maximise: MCC (or the objective's own
    ``selection``, e.g. PEFT-SP's detection + CS MCC) for ``mcc``, minus the dev loss for ``loss``
    (the Hugging Face Trainer's default ``metric_for_best_model``, which the Galaxy tutorial keeps)."""
    if select_on == "loss":
        return -float(dev["loss"])
    if select_on == "mcc":
        return float(dev["selection"] if "selection" in dev else dev["mcc"])
    raise SeqpeftInputError("training.select_on", f"{select_on!r} is not a selection criterion.", fix=f"use one of {SELECT_ON}.")


def freeze_head(model) -> None:
    """Leave the task head (and pooler) at its random initialisation, untrained.

    What the Galaxy tutorial's ``model.add_adapter(LoraConfig(task_type="SEQ_CLS", ...))`` does
    (checked on transformers 5.24 / peft 0.21): ``add_adapter`` calls ``peft.inject_adapter_in_model``,
    which marks only the adapter weights trainable (``BaseTuner._mark_only_adapters_as_trainable``);
    the ``score`` head is put in ``modules_to_save`` (and so kept trainable) only by
    ``PeftModelForSequenceClassification``, which ``get_peft_model`` builds and ``add_adapter`` does not.

    PEFT-SP's LoRA runs do the same to the emission Linear and the CRF (Adamax gets only
    ``model_seq.esm2.layers``): call it again once the objective has attached ``model.crf``.
    """
    for module in (model.head, getattr(model, "pooler", None), getattr(model, "crf", None)):
        if module is not None:
            module.requires_grad_(False)


HEAD_PARTS = ("head", "crf")


def head_snapshot(model) -> dict:
    """CPU copies of the task head's and CRF's weights as built, to tell in metrics.json whether
    training changed them (``unchanged_from_init``: PEFT-SP's LoRA runs leave both at random init)."""
    return {part: {k: v.detach().float().cpu().clone() for k, v in _weights(getattr(model, part)).items()}
            for part in HEAD_PARTS if getattr(model, part, None) is not None}


def _weights(part) -> dict:
    """A module's state dict; for a list of modules (``head: transformers``), theirs by index."""
    if hasattr(part, "state_dict"):
        return part.state_dict()
    return {f"{i}.{k}": v for i, module in enumerate(part) for k, v in module.state_dict().items()}


def unchanged_from_init(snapshot: dict | None, model) -> dict:
    """{part: whether every weight of it equals its snapshot} for the head and the CRF."""
    if not snapshot:
        return {}
    import torch

    def whole(value):  # a sharded (FSDP) weight is gathered: every rank computes the metrics
        value = value.detach()
        return (value.full_tensor() if hasattr(value, "full_tensor") else value).float().cpu()

    return {part: all(torch.equal(whole(v), weights[k]) for k, v in _weights(getattr(model, part)).items())
            for part, weights in snapshot.items()}


def adapter_settings(backbone) -> dict | None:
    """The active peft config's settings in effect (targets after family defaults, AdaLoRA's
    schedule, ...), for metrics.json; None for a backbone without one."""
    configs = getattr(backbone, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        return None
    config = configs.get(getattr(backbone, "active_adapter", None)) or next(iter(configs.values()))
    settings = {}
    for key in ADAPTER_KEYS:
        value = getattr(config, key, None)
        if value is None:
            continue
        if isinstance(value, (set, frozenset)):
            value = sorted(value)
        elif not isinstance(value, (str, int, float, bool, list, tuple)):
            value = str(value)
        settings[key] = list(value) if isinstance(value, tuple) else value
    return settings
