"""DNABERT-2 in plain PyTorch, so its published weights load without remote code or triton.

Why our own implementation: the checkpoint (``zhihan1996/DNABERT-2-117M``) ships its modelling
code (``bert_layers.py``, a MosaicBERT variant) to be run with ``trust_remote_code``; that code
imports a triton flash-attention kernel written for triton 2 and transformers 4 and breaks with
both of their current versions. The architecture itself is small, so it is written here with the
exact module names of the published code, and a published directory (``config.json`` whose
``auto_map`` points at ``bert_layers``) loads into it with the config class set explicitly.

The architecture, as published:

* embeddings: word + token-type (no position embeddings), LayerNorm, dropout;
* attention: one fused ``Wqkv`` projection (query, key, value blocks, each split by head),
  scores plus an ALiBi bias ``-slope_h * |i - j|`` and the padding mask, then the output
  ``dense`` and a post-LayerNorm residual;
* feed-forward: a gated linear unit, ``gated_layers`` (no bias) gives 2 x intermediate
  features, the first half through exact GELU times the second half, then ``wo`` and a
  post-LayerNorm residual (``layernorm``);
* an optional ``pooler`` (dense + tanh on the first token) that its sequence classifier uses.

The published code drops padded tokens between layers; here they stay in the batch but are
masked as keys, which gives the same values at real tokens, and they come back as zeros like
the published model returns them. Attention runs through ``torch.nn.functional.
scaled_dot_product_attention`` with the bias as an additive mask. Peft's prefix tuning works:
its key/value prefixes sit in front of the sequence, at the positions prompt tokens would take.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

MODEL_TYPE = "seqpeft_dnabert2"
# auto_map entries of the published checkpoint: this module replaces the classes they name.
PUBLISHED_MODULE = "bert_layers."


class Dnabert2Config(PreTrainedConfig):
    """The published DNABERT-2 configuration keys, with the 117M model's values as defaults."""

    model_type = MODEL_TYPE

    vocab_size: int = 4096
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.0
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    # The published code pre-computes the ALiBi matrix at this size; here it is informational,
    # the bias is computed for each input's length.
    alibi_starting_size: int = 512


def alibi_slopes(num_heads: int) -> list[float]:
    """Per-head ALiBi slopes: a geometric sequence for 2^k heads (1/2 ... 1/256 for 8 heads).

    Other head counts take the slopes of the nearest smaller power of two, then every other
    slope of the next power of two (the ALiBi paper's rule, which the published model uses).
    """
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def alibi_bias(num_heads: int, query_length: int, key_length: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(heads, queries, keys) bias ``-slope * |query position - key position|``.

    Queries are the last ``query_length`` of the ``key_length`` positions: keys in front of them
    are a prefix (peft prefix tuning), placed where prepended tokens would be.
    """
    slopes = torch.tensor(alibi_slopes(num_heads), device=device, dtype=torch.float32)
    keys = torch.arange(key_length, device=device)
    queries = torch.arange(key_length - query_length, key_length, device=device)
    distance = (queries[:, None] - keys[None, :]).abs().to(torch.float32)
    return (-slopes[:, None, None] * distance).to(dtype)


class Dnabert2Embeddings(nn.Module):
    def __init__(self, config: Dnabert2Config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, inputs_embeds=None) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


class Dnabert2SelfAttention(nn.Module):
    def __init__(self, config: Dnabert2Config):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of "
                             f"num_attention_heads {config.num_attention_heads}.")
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.dropout_prob = float(config.attention_probs_dropout_prob)
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None = None):
        batch, length, _ = hidden.shape
        # Wqkv's output is [query | key | value], each block split into heads.
        query, key, value = self.Wqkv(hidden).view(batch, length, 3, self.num_heads, self.head_size).unbind(dim=2)
        query, key, value = (t.transpose(1, 2) for t in (query, key, value))  # (batch, heads, length, head)
        if prefix is not None:
            key = torch.cat([prefix[0].to(key.dtype), key], dim=2)
            value = torch.cat([prefix[1].to(value.dtype), value], dim=2)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype),
                                                 dropout_p=self.dropout_prob if self.training else 0.0)
        return context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_size)


class Dnabert2SelfOutput(nn.Module):
    def __init__(self, config: Dnabert2Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class Dnabert2Attention(nn.Module):
    def __init__(self, config: Dnabert2Config):
        super().__init__()
        self.self = Dnabert2SelfAttention(config)
        self.output = Dnabert2SelfOutput(config)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor, prefix=None) -> torch.Tensor:
        return self.output(self.self(hidden, bias, prefix), hidden)


class Dnabert2GatedMLP(nn.Module):
    def __init__(self, config: Dnabert2Config):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.act = nn.GELU(approximate="none")
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gate, value = self.gated_layers(hidden).split(self.intermediate_size, dim=-1)
        return self.layernorm(self.wo(self.dropout(self.act(gate) * value)) + hidden)


class Dnabert2Layer(nn.Module):
    def __init__(self, config: Dnabert2Config):
        super().__init__()
        self.attention = Dnabert2Attention(config)
        self.mlp = Dnabert2GatedMLP(config)

    def forward(self, hidden_states: torch.Tensor, bias: torch.Tensor, prefix=None) -> torch.Tensor:
        return self.mlp(self.attention(hidden_states, bias, prefix))


class Dnabert2Encoder(nn.Module):
    def __init__(self, config: Dnabert2Config):
        super().__init__()
        self.layer = nn.ModuleList(Dnabert2Layer(config) for _ in range(config.num_hidden_layers))


class Dnabert2Pooler(nn.Module):
    def __init__(self, config: Dnabert2Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden[:, 0]))


def _layer_prefix(past_key_values: Any, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Layer ``index``'s (key, value) prefix from a transformers Cache or a legacy tuple."""
    if past_key_values is None:
        return None
    layers = getattr(past_key_values, "layers", None)
    if layers is not None:
        layer = layers[index]
        return (layer.keys, layer.values) if getattr(layer, "is_initialized", True) else None
    return tuple(past_key_values[index][:2])


class Dnabert2Model(PreTrainedModel):
    """The bare DNABERT-2 encoder; state-dict keys as in the published ``bert_layers.BertModel``."""

    config_class = Dnabert2Config
    config: Dnabert2Config
    base_model_prefix = "bert"
    _no_split_modules = ["Dnabert2Embeddings", "Dnabert2Layer"]

    def __init__(self, config: Dnabert2Config, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = Dnabert2Embeddings(config)
        self.encoder = Dnabert2Encoder(config)
        self.pooler = Dnabert2Pooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                past_key_values=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                use_cache=None) -> BaseModelOutputWithPooling | tuple:
        # position_ids are accepted for interface compatibility; ALiBi positions come from the order.
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds.")
        if output_attentions:
            raise ValueError("DNABERT-2 attention runs through scaled_dot_product_attention and returns no weights.")
        hidden = self.embeddings(input_ids, token_type_ids, inputs_embeds)
        batch, length = hidden.shape[:2]
        first_prefix = _layer_prefix(past_key_values, 0)
        prefix_length = first_prefix[0].shape[2] if first_prefix is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(batch, prefix_length + length, dtype=torch.long, device=hidden.device)
        if attention_mask.shape[1] != prefix_length + length:
            raise ValueError(f"attention_mask covers {attention_mask.shape[1]} positions, expected "
                             f"{prefix_length} prefix + {length} tokens.")
        padding = (attention_mask == 0)[:, None, None, :]
        bias = alibi_bias(self.config.num_attention_heads, length, prefix_length + length, hidden.device)[None]
        bias = bias.masked_fill(padding, torch.finfo(torch.float32).min)

        all_hidden = [hidden] if output_hidden_states else None
        for index, layer in enumerate(self.encoder.layer):
            hidden = layer(hidden, bias, _layer_prefix(past_key_values, index))
            if all_hidden is not None:
                all_hidden.append(hidden)
        # Padded positions come out as zeros, as the published (unpadding) model returns them.
        hidden = hidden * attention_mask[:, prefix_length:, None].to(hidden.dtype)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return tuple(v for v in (hidden, pooled, tuple(all_hidden) if all_hidden else None) if v is not None)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled,
                                          hidden_states=tuple(all_hidden) if all_hidden else None)


AutoConfig.register(MODEL_TYPE, Dnabert2Config, exist_ok=True)
AutoModel.register(Dnabert2Config, Dnabert2Model, exist_ok=True)


def is_published_config(raw: dict) -> bool:
    """A config.json of the published DNABERT-2 code: its ``auto_map`` names ``bert_layers`` classes."""
    auto_map = raw.get("auto_map") or {}
    named = [str(v) for v in auto_map.values()] if isinstance(auto_map, dict) else []
    return raw.get("model_type") in (None, "bert") and any(PUBLISHED_MODULE in name for name in named)


def config_from_published(raw: dict) -> Dnabert2Config:
    """Our config from a published config.json, keeping only the keys our config class has.

    ``auto_map`` (the remote classes) and the remote ``architectures`` are dropped, so a model
    saved again loads through seqpeft's classes too.
    """
    from dataclasses import fields

    known = {f.name for f in fields(Dnabert2Config)} - {"architectures", "transformers_version", "dtype"}
    return Dnabert2Config(**{key: value for key, value in raw.items() if key in known})
