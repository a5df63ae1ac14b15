"""Methods peft does not provide: bottleneck adapters and deep prompts (P-tuning v2 for ESM).

Both wrap modules of the loaded backbone rather than patching transformers, so they work on any
registered family. Their trained weights are only the new parameters, saved and re-applied by
``seqpeft.training.artifacts`` (``Method.saves_trainable``), never a full copy of the backbone.

* Bottleneck adapter (Houlsby-style, as PEFT-SP uses on ESM-2): two per block, on the output of
  the attention-output projection and of the feed-forward output projection:
  ``h + up(ReLU(down(LayerNorm(h))))`` with ``up`` zero-initialised, so training starts from the
  pretrained function exactly.
* Deep prompts: ``num_virtual_tokens`` trainable vectors prepended to the input embeddings and
  overwritten by a fresh trainable set before every later layer. ESM has no past-key-values, so
  peft's prefix tuning does not apply; this is the same idea done on the hidden states.
"""

from __future__ import annotations

import re

import torch
from torch import nn

# Per family: regexes of the full module names whose outputs get an adapter (attention, feed-forward).
ADAPTER_SITES: dict[str, tuple[str, ...]] = {
    "esm": (r"\.attention\.output\.dense$", r"\.layer\.\d+\.output\.dense$"),
    "bert": (r"\.attention\.output\.dense$", r"\.layer\.\d+\.output\.dense$"),
    "dnabert2": (r"\.attention\.output\.dense$", r"\.mlp\.wo$"),  # the GLU's output projection
    "llama": (r"\.self_attn\.o_proj$", r"\.mlp\.down_proj$"),
    "mistral": (r"\.self_attn\.o_proj$", r"\.mlp\.down_proj$"),
    "opt": (r"\.self_attn\.out_proj$", r"\.fc2$"),
    "mixtral": (r"\.self_attn\.o_proj$",),  # experts are fused 3-D parameters, not modules
}


class Bottleneck(nn.Module):
    def __init__(self, hidden: int, bottleneck: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(torch.relu(self.down(self.norm(hidden))))


class WithAdapter(nn.Module):
    """A frozen projection followed by a trainable bottleneck adapter."""

    def __init__(self, base: nn.Module, hidden: int, bottleneck: int):
        super().__init__()
        self.base = base
        self.adapter = Bottleneck(hidden, bottleneck)

    def forward(self, *args, **kwargs):
        return self.adapter(self.base(*args, **kwargs))


def adapter_parameter_count(hidden: int, bottleneck: int) -> int:
    """LayerNorm (2h) + down (h*b + b) + up (b*h + h)."""
    return 2 * hidden + hidden * bottleneck + bottleneck + bottleneck * hidden + hidden


def add_adapters(backbone, family: str, hidden: int, bottleneck: int | None = None) -> list[str]:
    """Freeze the backbone and wrap every adapter site; returns the wrapped module names."""
    if family not in ADAPTER_SITES:
        from seqpeft.util.errors import SeqpeftInputError

        raise SeqpeftInputError(None, f"adapter: no adapter sites registered for family {family!r}.",
                                fix=f"register them in seqpeft.methods.adapters.ADAPTER_SITES (known: {sorted(ADAPTER_SITES)}).")
    bottleneck = int(bottleneck or hidden // 2)
    backbone.requires_grad_(False)
    patterns = [re.compile(p) for p in ADAPTER_SITES[family]]
    names = [name for name, _ in backbone.named_modules() if any(p.search("." + name) for p in patterns)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        setattr(parent, child, WithAdapter(getattr(parent, child), hidden, bottleneck))
    return names


def _encoder_layers(backbone) -> nn.ModuleList:
    for path in ("encoder.layer", "layers", "decoder.layers", "model.layers"):
        try:
            module = backbone.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList):
            return module
    from seqpeft.util.errors import SeqpeftInputError

    raise SeqpeftInputError(None, "deep_prompt: the backbone's layer list was not found.",
                            fix="deep prompts support ESM, BERT and Llama-style backbones.")


class DeepPromptBackbone(nn.Module):
    """A frozen backbone with trainable prompts at the front of the sequence before every layer.

    The output keeps the prompt positions at the front; ``SequenceClassifier`` drops them by
    length, so per-residue logits stay aligned with the residues.
    """

    def __init__(self, backbone, hidden: int, num_virtual_tokens: int):
        super().__init__()
        backbone.requires_grad_(False)
        self.backbone = backbone
        self.config = backbone.config
        self.num_virtual_tokens = num_virtual_tokens
        layers = _encoder_layers(backbone)
        self.prompts = nn.Parameter(torch.randn(len(layers), num_virtual_tokens, hidden) * 0.02)
        for index, layer in enumerate(layers):
            if index:
                layer.register_forward_pre_hook(self._reinsert(index), with_kwargs=True)

    def _reinsert(self, index: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            prompt = self.prompts[index].to(hidden.dtype).expand(hidden.shape[0], -1, -1)
            hidden = torch.cat([prompt, hidden[:, self.num_virtual_tokens:]], dim=1)
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        return hook

    def forward(self, input_ids, attention_mask):
        embeddings = self.backbone.get_input_embeddings()(input_ids)
        prompt = self.prompts[0].to(embeddings.dtype).expand(input_ids.shape[0], -1, -1)
        ones = torch.ones(input_ids.shape[0], self.num_virtual_tokens, dtype=attention_mask.dtype, device=attention_mask.device)
        return self.backbone(inputs_embeds=torch.cat([prompt, embeddings], dim=1),
                             attention_mask=torch.cat([ones, attention_mask], dim=1))


def apply_adapter(backbone, args: dict, ctx):
    add_adapters(backbone, ctx.family.name, int(backbone.config.hidden_size), args.get("bottleneck"))
    return backbone


def apply_deep_prompt(backbone, args: dict, ctx):
    return DeepPromptBackbone(backbone, int(backbone.config.hidden_size), int(args.get("num_virtual_tokens", 10)))
