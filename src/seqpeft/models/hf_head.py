"""The transformers-head mode (``models.<name>.head: transformers``): the classifier is the model
family's own ``AutoModelForSequenceClassification`` (its pooling and head), so that a run's peft
adapter is a plain PEFT ``SEQ_CLS`` adapter that ``AutoPeftModelForSequenceClassification``
loads in one line, and a fully fine-tuned backbone one that ``AutoModelForSequenceClassification``
loads.

The default (``head: seqpeft``, ``seqpeft.models.classifier.SequenceClassifier``) pools from seqpeft's
own attention mask and is batch-invariant under every method; this mode gives that up for the
families' own heads (Llama/Mistral: last non-pad token and a bias-free ``score``; BERT: pooler +
``classifier``; ESM: its classification head) and so refuses what those heads cannot do right:
per-residue (signal-peptide) tasks, seqpeft's own backbone wrappers (``adapter``,
``deep_prompt``, ``lopa``), and virtual-token prompts on decoders, whose head would pool a pad.
"""

from __future__ import annotations

from pathlib import Path

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.schema import ENTRY, with_defaults

HEAD_MODES = ("seqpeft", "transformers")
TRANSFORMERS = "transformers"
# The head attributes of transformers' *ForSequenceClassification classes (peft's SEQ_CLS
# modules_to_save default).
HEAD_ATTRIBUTES = ("classifier", "score")
# Methods whose prompts reach a model as ``inputs_embeds`` only: a decoder's head then pools the
# last position, a pad in a right-padded batch.
EMBEDDING_PROMPTS = ("prompt_tuning", "p_tuning", "PromptTuningConfig", "PromptEncoderConfig")
LOAD_CLASS = "AutoPeftModelForSequenceClassification"


def head_mode(model_spec: dict | None) -> str:
    return str(with_defaults(model_spec or {}, "models", ENTRY)["head"])


def uses_transformers_head(model_spec: dict | None) -> bool:
    return head_mode(model_spec) == TRANSFORMERS


def check_applicable(model_name: str, model_dir: Path, model_spec: dict, method_name: str, method_spec: dict,
                     method, per_residue: bool) -> None:
    """Refuse, naming ``models.<name>.head`` and the fix, what the family's own head cannot train."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)

    from seqpeft.models import dnabert2  # importing it registers seqpeft's DNABERT-2 with AutoConfig

    key = f"models.{model_name}.head"
    fix = f"set {key}: seqpeft (the default), whose classifier works for every family, task and method"
    if per_residue:
        raise SeqpeftInputError(None, f"{key}: transformers classifies whole sequences; a signal-peptide task needs a "
                                "label per residue and a CRF.", fix=f"{fix}.")
    import json

    raw = json.loads((Path(model_dir) / "config.json").read_text()) if (Path(model_dir) / "config.json").is_file() else {}
    if dnabert2.is_published_config(raw):
        model_type = raw.get("model_type", "bert (DNABERT-2)")
        have_class = False
    else:
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=bool(model_spec.get("trust_remote_code")))
        model_type = config.model_type
        have_class = model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    if not have_class:
        raise SeqpeftInputError(None, f"{key}: transformers, but model type {model_type!r} has no transformers "
                                "sequence-classification class (AutoModelForSequenceClassification).", fix=f"{fix}.")
    registry_name = method_spec.get("peft") or method.name
    if method.saves_trainable or method.load_adapter is not None:
        raise SeqpeftInputError(None, f"{key}: transformers, but method {method_name!r} ({method.name}) is seqpeft's own "
                                "wrapper around the backbone, which the transformers head does not see.",
                                fix=f"{fix}, or train a peft method (lora, adalora, ia3, ...), full or frozen on this model.")
    # a decoder: transformers knows it as a causal language model and not as a masked one (as seqpeft.models.families.family_of)
    decoder = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if registry_name in EMBEDDING_PROMPTS and decoder:
        raise SeqpeftInputError(None, f"{key}: transformers, but method {method_name!r} prepends virtual tokens as "
                                f"inputs_embeds, and the {model_type} head then pools the last position, a pad in a "
                                "padded batch.", fix=f"{fix}, or use prefix_tuning / lora on this model.")


def check_prefix_support(model, model_name: str, method_name: str, method_spec: dict, method) -> None:
    """peft's SEQ_CLS prefix tuning hands its prefixes to the class's (or its transformer's)
    ``past_key_values`` argument; refuse a model whose forward has none (BERT in transformers 5
    calls it ``cache``), before training, as peft would at the first step."""
    import inspect

    if (method_spec.get("peft") or method.name) not in ("prefix_tuning", "PrefixTuningConfig"):
        return
    inner = getattr(model, getattr(model, "base_model_prefix", ""), None)
    for module in (model, inner):
        if module is not None and "past_key_values" in inspect.signature(module.forward).parameters:
            return
    raise SeqpeftInputError(None, f"models.{model_name}.head: transformers, but method {method_name!r} (prefix tuning) "
                            f"needs a past_key_values argument that {type(model).__name__}.forward does not take.",
                            fix=f"set models.{model_name}.head: seqpeft (the default), whose prefix tuning works on "
                                "this model, or use prompt_tuning / lora.")


def missing_head_modules(model, loading_info: dict) -> tuple[str, ...]:
    """The modules the class's head consists of: its head attribute, plus every module whose
    weights the checkpoint lacks (BERT's pooler in a checkpoint saved without one). Those are new
    at every load, so they train and are saved with the head (peft's ``modules_to_save``)."""
    heads = [name for name in HEAD_ATTRIBUTES if hasattr(model, name)]
    modules = dict(model.named_modules())
    for key in loading_info.get("missing_keys") or ():
        module = key.rsplit(".", 1)[0]
        while module and module not in modules:
            module = module.rsplit(".", 1)[0] if "." in module else ""
        if module and not any(module == head or module.startswith(head + ".") for head in heads):
            heads.append(module)
    return tuple(dict.fromkeys(heads))


def prepare_config(config, num_labels: int, tokenizer_pad_id: int | None) -> dict:
    """Give the config what the class needs (labels, a pad id for a decoder's last-token pooling);
    returns the ``from_pretrained`` arguments a user must add to the one-line load because the
    base model's own config.json lacks them."""
    extra = {}
    if int(getattr(config, "num_labels", 2)) != int(num_labels):
        extra["num_labels"] = int(num_labels)
    config.num_labels = int(num_labels)
    if getattr(config, "pad_token_id", None) is None and tokenizer_pad_id is not None:
        config.pad_token_id = int(tokenizer_pad_id)
        extra["pad_token_id"] = int(tokenizer_pad_id)
    return extra


def head_description(model, loaded, model_spec: dict) -> dict:
    """seqpeft.json's head fields: the mode, and under ``head: transformers`` the class and what
    the one-line ``AutoPeftModelForSequenceClassification`` load needs beyond the base config."""
    description = {"head": head_mode(model_spec)}
    if loaded.head_modules:
        backbone = model.backbone
        base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
        description.update({"transformers_class": type(base).__name__, "head_modules": list(loaded.head_modules),
                            "from_pretrained_kwargs": dict(loaded.from_pretrained_kwargs)})
    return description


def _build_class():
    from torch import nn

    class TransformersHeadClassifier(nn.Module):
        """The family's own ``*ForSequenceClassification`` (possibly peft-wrapped) behind the
        interface of ``seqpeft.models.classifier.SequenceClassifier``: ``forward(input_ids, attention_mask)``
        gives logits, ``backbone`` is what the method wrapped and what is saved, ``head`` the
        task-head modules (the trained copies, under peft)."""

        head_mode = TRANSFORMERS
        per_residue = False
        pooler = None
        pooling = TRANSFORMERS

        def __init__(self, backbone, head_names: tuple[str, ...]):
            super().__init__()
            self.backbone = backbone
            self.head_names = tuple(head_names)

        def _base(self):
            backbone = self.backbone
            return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone

        def head_module(self, name: str):
            module = self._base().get_submodule(name)
            trained = getattr(module, "modules_to_save", None)  # peft's ModulesToSaveWrapper
            if isinstance(trained, nn.ModuleDict) and len(trained):
                return trained[next(iter(trained))]
            return module

        @property
        def head(self):
            return nn.ModuleList([self.head_module(name) for name in self.head_names])

        def head_state(self) -> dict:
            return {f"{name}.{key}": value for name in self.head_names
                    for key, value in self.head_module(name).state_dict().items()}

        def load_head_state(self, state: dict) -> None:
            for name in self.head_names:
                part = {key[len(name) + 1:]: value for key, value in state.items() if key.startswith(name + ".")}
                if part:
                    self.head_module(name).load_state_dict(part)

        def forward(self, input_ids, attention_mask):
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask).logits

    return TransformersHeadClassifier


_CLASS = None


def make_transformers_classifier(loaded):
    """Wrap a backbone loaded as ``*ForSequenceClassification``; its head modules train."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _build_class()
    model = _CLASS(loaded.backbone, loaded.head_modules)
    for module in model.head:
        module.requires_grad_(True)
    return model
