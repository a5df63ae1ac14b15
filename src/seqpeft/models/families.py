"""Model families, model preparation and backbone loading (the classifier on top: ``seqpeft.models.classifier``).

Why a classifier of our own instead of ``AutoModelForSequenceClassification``: the Hugging Face
heads pool differently per family and break under prompt methods (a decoder given only
``inputs_embeds`` pools the last *position*, which is a pad in a right-padded batch; an encoder's
first token becomes a virtual token). ``SequenceClassifier`` pools from our own attention mask
after dropping prepended virtual tokens, so every method x family gives the same logits for a
sequence whether it is alone or in a padded batch. ``head: transformers`` opts into the family's
own class instead, for artifacts that peft's ``AutoPeftModelForSequenceClassification`` loads
(``seqpeft.models.hf_head``, with what it refuses).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.data.tokenize import load_tokenizer
from seqpeft.models.weights import checkpoint_dtype, loaded_dtype, read_tensors

# Modules of seqpeft's own architectures; importing one registers it with transformers' Auto classes.
NATIVE_ARCHITECTURES = ("seqpeft.models.dnabert2",)


@dataclass(frozen=True)
class PublishedHead:
    """Where a published sequence-classification checkpoint keeps its head.

    ``pooler`` names a dense layer (followed by tanh) between the pooled token and ``linear``,
    as in BERT-style classifiers, so such a head evaluates exactly as it was trained.
    """

    linear: str = "score"
    pooler: str | None = None


@dataclass(frozen=True)
class ModelFamily:
    """What seqpeft needs to know about an architecture to fine-tune it correctly."""

    name: str
    model_type: str
    decoder: bool
    lora_targets: tuple[str, ...]
    ia3_targets: tuple[str, ...]
    ia3_feedforward: tuple[str, ...]
    supports_prefix: bool = True
    build_config: Callable[..., Any] | None = None
    # Encoders ship a pooler we never use; an unused module gets no gradients (AdaLoRA fails on them).
    load_kwargs: tuple[tuple[str, Any], ...] = ()
    # Parameters (not modules) LoRA also adapts: Mixtral's fused 3-D expert weights.
    lora_target_parameters: tuple[str, ...] = ()
    # Passed to from_pretrained; None lets transformers choose (ESM, seqpeft's own DNABERT-2).
    attn_implementation: str | None = "sdpa"
    published_head: PublishedHead = PublishedHead()
    # A model type without a registered family: peft chooses target modules from its own table.
    peft_defaults: bool = False
    # The config key of the last hidden state's width (what the head reads): OPT's project_out maps
    # hidden_size to word_embed_proj_dim (1024 -> 512 in opt-350m).
    output_width_key: str = "hidden_size"

    @property
    def default_pooling(self) -> str:
        # Decoders only see the whole sequence at the last real token; encoders put it in [CLS].
        return "last" if self.decoder else "first"


def _sizes(spec: dict) -> dict[str, int]:
    """The size keys every tiny ``build:`` config shares, with the defaults of the demo models."""
    return {
        "hidden_size": spec.get("hidden_size", 64),
        "num_hidden_layers": spec.get("num_hidden_layers", 2),
        "num_attention_heads": spec.get("num_attention_heads", 4),
        "intermediate_size": spec.get("intermediate_size", 128),
    }


def _llama_like(config_cls_name: str) -> Callable[..., Any]:
    def build(spec: dict, vocab_size: int, special: dict, max_positions: int):
        import transformers

        config_cls = getattr(transformers, config_cls_name)
        extra = {}
        if config_cls_name == "MixtralConfig":
            extra = {
                "num_local_experts": spec.get("num_local_experts", 4),
                "num_experts_per_tok": spec.get("num_experts_per_tok", 1),
            }
        return config_cls(
            vocab_size=vocab_size,
            **_sizes(spec),
            num_key_value_heads=spec.get("num_key_value_heads", spec.get("num_attention_heads", 4)),
            max_position_embeddings=max_positions,
            pad_token_id=special["pad"],
            bos_token_id=special["cls"],
            eos_token_id=special["sep"],
            tie_word_embeddings=False,
            **extra,
        )

    return build


def _bert_config(spec: dict, vocab_size: int, special: dict, max_positions: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        **_sizes(spec),
        max_position_embeddings=max_positions,
        pad_token_id=special["pad"],
        hidden_dropout_prob=spec.get("dropout", 0.1),
        attention_probs_dropout_prob=spec.get("dropout", 0.1),
    )


def _esm_config(spec: dict, vocab_size: int, special: dict, max_positions: int):
    from transformers import EsmConfig

    return EsmConfig(
        vocab_size=vocab_size,
        **_sizes(spec),
        max_position_embeddings=max_positions,
        position_embedding_type="rotary",
        pad_token_id=special["pad"],
        mask_token_id=special.get("mask"),
        token_dropout=False,
        emb_layer_norm_before=False,
        hidden_dropout_prob=spec.get("dropout", 0.1),
        attention_probs_dropout_prob=spec.get("dropout", 0.1),
    )


def _opt_config(spec: dict, vocab_size: int, special: dict, max_positions: int):
    from transformers import OPTConfig

    hidden = spec.get("hidden_size", 64)
    return OPTConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        word_embed_proj_dim=hidden,
        num_hidden_layers=spec.get("num_hidden_layers", 2),
        num_attention_heads=spec.get("num_attention_heads", 4),
        ffn_dim=spec.get("intermediate_size", 128),
        max_position_embeddings=max_positions,
        pad_token_id=special["pad"],
        bos_token_id=special["cls"],
        eos_token_id=special["sep"],
    )


def _dnabert2_config(spec: dict, vocab_size: int, special: dict, max_positions: int):
    from seqpeft.models.dnabert2 import Dnabert2Config

    return Dnabert2Config(
        vocab_size=vocab_size,
        **_sizes(spec),
        max_position_embeddings=max_positions,
        alibi_starting_size=max_positions,
        pad_token_id=special["pad"],
        hidden_dropout_prob=spec.get("dropout", 0.1),
        attention_probs_dropout_prob=spec.get("attention_dropout", 0.0),
    )


_LLAMA_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily("llama", "llama", True, _LLAMA_PROJ, ("k_proj", "v_proj", "down_proj"), ("down_proj",),
                    build_config=_llama_like("LlamaConfig")),
        ModelFamily("mistral", "mistral", True, _LLAMA_PROJ, ("k_proj", "v_proj", "down_proj"), ("down_proj",),
                    build_config=_llama_like("MistralConfig")),
        # Mixtral experts are fused 3-D parameters in transformers 5, invisible to module-level tuners;
        # LoRA reaches them through peft's target_parameters.
        ModelFamily("mixtral", "mixtral", True, ("q_proj", "k_proj", "v_proj", "o_proj"), ("k_proj", "v_proj", "o_proj"),
                    ("o_proj",), build_config=_llama_like("MixtralConfig"),
                    lora_target_parameters=("mlp.experts.gate_up_proj", "mlp.experts.down_proj")),
        ModelFamily("opt", "opt", True, ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
                    ("k_proj", "v_proj", "fc2"), ("fc2",), build_config=_opt_config,
                    output_width_key="word_embed_proj_dim"),
        ModelFamily("bert", "bert", False, ("query", "key", "value", "dense"), ("key", "value", "output.dense"),
                    ("output.dense",), build_config=_bert_config, load_kwargs=(("add_pooling_layer", False),)),
        # ESM has no past-key-values support, so peft prefix tuning does not apply to it.
        ModelFamily("esm", "esm", False, ("query", "key", "value", "dense"), ("key", "value", "output.dense"),
                    ("output.dense",), supports_prefix=False, build_config=_esm_config,
                    load_kwargs=(("add_pooling_layer", False),), attn_implementation=None),
        # seqpeft.models.dnabert2: the published DNABERT-2 architecture without its remote code. Queries, keys
        # and values share one fused Wqkv, so IA3 rescales all three of them.
        ModelFamily("dnabert2", "seqpeft_dnabert2", False, ("Wqkv", "dense", "gated_layers", "wo"), ("Wqkv", "wo"),
                    ("wo",), build_config=_dnabert2_config, load_kwargs=(("add_pooling_layer", False),),
                    attn_implementation=None, published_head=PublishedHead("classifier", pooler="bert.pooler.dense")),
    )
}


def family_of(model_type: str) -> ModelFamily:
    """The family registered for a transformers ``model_type``, else one that defers to peft.

    An unregistered model type still trains: its target modules are peft's own defaults for that
    model type (an error says so when peft has none), and it pools like a decoder when
    transformers knows it only as a causal language model.
    """
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    decoder = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return ModelFamily(model_type, model_type, decoder, (), (), (), attn_implementation=None, peft_defaults=True)


def output_width(config, family: ModelFamily) -> int:
    """Width of the backbone's last hidden state: what the head reads (one place for every path)."""
    width = getattr(config, family.output_width_key, None)
    return int(width if width is not None else config.hidden_size)


# Weights load in float32 whatever the checkpoint holds (float16 OPT, bfloat16 Llama-3.2): bf16 comes
# only from autocast or an explicit setting, so full fine-tuning keeps float32 master weights.
LOAD_DTYPE = "float32"


def register_native_architectures() -> None:
    """Make seqpeft's own architectures known to transformers' Auto classes (idempotent)."""
    import importlib

    for module in NATIVE_ARCHITECTURES:
        importlib.import_module(module)


@dataclass
class LoadedBackbone:
    backbone: Any
    family: ModelFamily
    hidden_size: int
    tokenizer: Any
    pretrained_head: dict[str, Any] = field(default_factory=dict)
    # from_pretrained's missing/unexpected/mismatched keys (seqpeft.models.hub.verify_weights checks them)
    loading_info: dict[str, Any] = field(default_factory=dict)
    quantization: dict | None = None  # QLoRA: which layers got 4-bit weights (seqpeft.models.quantization)
    # head: transformers (seqpeft.models.hf_head): the class's head modules, and the from_pretrained
    # arguments the one-line load needs beyond the base model's config.json
    head_modules: tuple[str, ...] = ()
    from_pretrained_kwargs: dict[str, Any] = field(default_factory=dict)
    # {"checkpoint": dtype the weight files hold, "loaded": dtype of the parameters} (metrics.json)
    weights_dtype: dict[str, str | None] = field(default_factory=dict)


def load_backbone(model_dir: Path, spec: dict | None = None, num_labels: int | None = None,
                  extra_kwargs: dict | None = None, tokenizer_dir: Path | None = None) -> LoadedBackbone:
    """Load the bare backbone (no task head) from a prepared or local model directory.

    A checkpoint saved with a sequence-classification head (a decoder's ``score``, DNABERT-2's
    ``classifier`` behind its pooler) returns it in ``pretrained_head`` when its shape fits
    ``num_labels``, so a published fine-tuned checkpoint evaluates exactly as it was trained.
    A published DNABERT-2 directory loads into seqpeft's own implementation: its remote code
    never runs, whatever ``trust_remote_code`` says. ``extra_kwargs`` come from the method
    (QLoRA's quantization config); ``tokenizer_dir`` is for weights saved without their tokenizer
    (a run's fully fine-tuned ``artifacts/backbone``). With ``head: transformers`` in ``spec``
    the model loads as its family's ``*ForSequenceClassification`` with ``num_labels`` outputs
    (``seqpeft.models.hf_head``).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from seqpeft.models.hf_head import missing_head_modules, prepare_config, uses_transformers_head
    from seqpeft.util.quiet import new_head_expected

    spec = spec or {}
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise SeqpeftInputError(model_dir, "is not a model directory (no config.json).",
                                fix="point the model entry at a directory saved with save_pretrained, or re-run prepare_model.")
    register_native_architectures()
    import torch

    from seqpeft.models import dnabert2

    raw_config = json.loads((Path(model_dir) / "config.json").read_text())
    trust = bool(spec.get("trust_remote_code", False))
    tokenizer = None
    if dnabert2.is_published_config(raw_config):
        config, model_class, trust = dnabert2.config_from_published(raw_config), dnabert2.Dnabert2Model, False
        if raw_config.get("pad_token_id") is None:  # the published config has none: [PAD] is 3, not 0 ([UNK])
            tokenizer = load_tokenizer(tokenizer_dir or model_dir)
            config.pad_token_id = tokenizer.pad_token_id
    else:
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust)
        model_class = AutoModel
    transformers_head = uses_transformers_head(spec)
    load_extra = {}
    if transformers_head:  # seqpeft.models.hf_head.check_applicable refused the rest before
        model_class = AutoModelForSequenceClassification
        tokenizer = tokenizer or load_tokenizer(tokenizer_dir or model_dir)
        load_extra = prepare_config(config, int(num_labels or 2), tokenizer.pad_token_id)
    family = family_of(config.model_type)
    declared = spec.get("family") or (spec.get("build") or {}).get("family")
    if declared and declared != family.name:
        raise SeqpeftInputError(model_dir, f"is a {family.name} model but its config entry says family {declared!r}.",
                                fix=f"set family: {family.name} (it decides target modules and which methods apply).")
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights and not spec.get("allow_pickle"):
        raise SeqpeftInputError(model_dir, "has no .safetensors weights.",
                                fix="convert the weights to safetensors, or set allow_pickle: true for this model if you trust the files.")
    if not weights:
        weights = sorted(model_dir.glob("*.bin"))
    family_kwargs = {} if transformers_head else dict(family.load_kwargs)
    kwargs = {"config": config, "use_safetensors": not spec.get("allow_pickle"), "dtype": getattr(torch, LOAD_DTYPE),
              **family_kwargs, **(extra_kwargs or {})}
    if trust:
        kwargs["trust_remote_code"] = True
    if family.attn_implementation:
        kwargs["attn_implementation"] = family.attn_implementation
    quantization = _plan_quantization(kwargs, model_class, config, family, trust)
    try:
        with new_head_expected() if transformers_head else contextlib.nullcontext():
            backbone, loading = model_class.from_pretrained(str(model_dir), output_loading_info=True, **kwargs)
    except Exception as error:  # safetensors raises its own SafetensorError, outside the usual hierarchy
        import pickle

        from seqpeft.util.errors import unpickler_reason

        text = f"{type(error).__name__} {error}".lower()
        if isinstance(error, pickle.UnpicklingError):  # allow_pickle: true, and the .bin carries more than tensors
            raise SeqpeftInputError(model_dir / weights[0].name if weights else model_dir,
                                    f"is not a plain tensor checkpoint: torch's weights_only unpickler refused it "
                                    f"({unpickler_reason(error)}); nothing in it was run.",
                                    fix="the pickle carries code or non-tensor objects: do not load it. Use weights "
                                        "saved as safetensors (or a .bin of tensors only).") from None
        if "safetensor" in text or "header" in text or "deserializ" in text:
            raise SeqpeftInputError(model_dir, f"its weights could not be read ({error}).",
                                    fix="the safetensors file is corrupt or truncated: delete the directory and prepare it again.") from error
        raise
    if model_class not in (AutoModel, AutoModelForSequenceClassification) and loading.get("missing_keys"):
        # Our own implementation must receive every weight: a renamed key would silently stay random.
        raise SeqpeftInputError(model_dir, f"weights {sorted(loading['missing_keys'])[:5]} are missing from the checkpoint.",
                                fix="the directory does not hold a DNABERT-2 checkpoint of this configuration.")
    if spec.get("remove_top_layers"):
        from seqpeft.config.recipe import drop_top_layers

        drop_top_layers(backbone, int(spec["remove_top_layers"]), model_dir)
    head = _read_pretrained_head(weights, num_labels, family.published_head) if num_labels and not transformers_head else {}
    if quantization is not None:
        from seqpeft.models.quantization import precision_census

        quantization = {**quantization.as_dict(), "parameters": precision_census(backbone)}
    loaded = LoadedBackbone(backbone, family, output_width(config, family), tokenizer or load_tokenizer(tokenizer_dir or model_dir),
                            head, dict(loading), quantization,
                            weights_dtype={"checkpoint": checkpoint_dtype(weights), "loaded": loaded_dtype(backbone)})
    if transformers_head:
        loaded.head_modules = missing_head_modules(backbone, loading)
        loaded.from_pretrained_kwargs = load_extra
    return loaded


def _plan_quantization(kwargs: dict, model_class, config, family: ModelFamily, trust: bool):
    """For a 4-bit load: keep the layers bitsandbytes' kernels cannot take unquantized, said on stderr."""
    if "quantization_config" not in kwargs:
        return None
    import sys

    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    from seqpeft.models.quantization import plan_quantization

    with torch.device("meta"):
        if model_class is AutoModelForSequenceClassification:
            skeleton = model_class.from_config(config, trust_remote_code=trust)
        elif model_class is AutoModel:
            skeleton = AutoModel.from_config(config, trust_remote_code=trust, **dict(family.load_kwargs))
        else:
            skeleton = model_class(config, **dict(family.load_kwargs))
    plan = plan_quantization(kwargs, skeleton)
    if plan is not None and plan.message():
        print(plan.message(), file=sys.stderr)
    return plan


def _read_pretrained_head(weights: list[Path], num_labels: int, layout: PublishedHead = PublishedHead()) -> dict[str, Any]:
    names = {f"{layout.linear}.weight", f"{layout.linear}.bias"}
    if layout.pooler:
        names |= {f"{layout.pooler}.weight", f"{layout.pooler}.bias"}
    tensors = read_tensors(weights, names)
    weight = tensors.get(f"{layout.linear}.weight")
    if weight is None or weight.shape[0] != num_labels:
        return {}
    head = {"weight": weight}
    if f"{layout.linear}.bias" in tensors:
        head["bias"] = tensors[f"{layout.linear}.bias"]
    if layout.pooler:
        if f"{layout.pooler}.weight" not in tensors:
            return {}  # a classifier whose pooler is missing cannot reproduce the published logits
        head["pooler_weight"] = tensors[f"{layout.pooler}.weight"]
        head["pooler_bias"] = tensors[f"{layout.pooler}.bias"]
    return head
