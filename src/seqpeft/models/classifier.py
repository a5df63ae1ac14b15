"""The classifier every method trains: backbone (possibly peft-wrapped) + pooling + linear head,
batch-invariant by design; a published head is reused when the model has one."""

from __future__ import annotations

from seqpeft.util.errors import SeqpeftInputError

POOLINGS = ("last", "first", "mean")


def _build_classifier_class():
    import torch
    from torch import nn

    class SequenceClassifier(nn.Module):
        """Backbone (possibly peft-wrapped) + pooling + linear head, batch-invariant by design.

        ``per_residue`` heads emit one logit vector per real token (labels are aligned by the
        caller); sequence heads pool one vector per sequence.
        """

        def __init__(self, backbone, hidden_size: int, num_labels: int, pooling: str,
                     per_residue: bool = False, dropout: float = 0.1, head_bias: bool = True):
            super().__init__()
            if pooling not in POOLINGS:
                raise SeqpeftInputError(None, f"unknown pooling {pooling!r}.", fix=f"use one of {POOLINGS}.")
            self.backbone = backbone
            self.pooling = pooling
            self.per_residue = per_residue
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(hidden_size, num_labels, bias=head_bias)
            # dense + tanh between pooling and head, only for a published head trained behind one.
            self.pooler = None

        def attach_pooler(self) -> None:
            hidden_size = self.head.in_features
            self.pooler = nn.Linear(hidden_size, hidden_size).to(self.head.weight.device)

        def hidden_states(self, input_ids, attention_mask):
            output = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            # Prompt methods prepend virtual tokens: keep only the positions of the real tokens.
            return hidden[:, hidden.shape[1] - input_ids.shape[1]:]

        def pool(self, hidden, attention_mask):
            if self.pooling == "first":
                return hidden[:, 0]
            if self.pooling == "last":
                last = attention_mask.sum(dim=1) - 1
                return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            mask = attention_mask.unsqueeze(-1).bool()
            summed = hidden.masked_fill(~mask, 0.0).sum(dim=1)
            return summed / mask.sum(dim=1).clamp(min=1)

        def forward(self, input_ids, attention_mask):
            hidden = self.hidden_states(input_ids, attention_mask)
            if self.per_residue:
                return self.head(self.dropout(hidden))
            pooled = self.pool(hidden, attention_mask)
            if self.pooler is not None:
                pooled = torch.tanh(self.pooler(pooled))
            return self.head(self.dropout(pooled))

    return SequenceClassifier


_CLASSIFIER_CLASS = None


def make_classifier(loaded, num_labels: int, pooling: str | None = None,
                    per_residue: bool = False, dropout: float = 0.1):
    """Wrap a ``seqpeft.models.families.LoadedBackbone`` into ``SequenceClassifier``, reusing a published head if one was found."""
    import torch

    if loaded.head_modules:  # head: transformers (seqpeft.models.hf_head): the family's own pooling and head
        from seqpeft.models.hf_head import make_transformers_classifier

        return make_transformers_classifier(loaded)
    global _CLASSIFIER_CLASS
    if _CLASSIFIER_CLASS is None:
        _CLASSIFIER_CLASS = _build_classifier_class()
    pretrained = loaded.pretrained_head if not per_residue else {}
    model = _CLASSIFIER_CLASS(
        loaded.backbone, loaded.hidden_size, num_labels, pooling or loaded.family.default_pooling,
        per_residue=per_residue, dropout=dropout, head_bias=not pretrained or "bias" in pretrained,
    )
    if pretrained:
        with torch.no_grad():
            model.head.weight.copy_(pretrained["weight"])
            if "bias" in pretrained:
                model.head.bias.copy_(pretrained["bias"])
            if "pooler_weight" in pretrained:
                model.attach_pooler()
                model.pooler.weight.copy_(pretrained["pooler_weight"])
                model.pooler.bias.copy_(pretrained["pooler_bias"])
    return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; peft's frozen base weights count in the total only,
    and the frozen originals of the modules peft trains a copy of (``modules_to_save``) not at all."""
    trainable = sum(parameter_count(p) for p in model.parameters() if p.requires_grad)
    total = sum(parameter_count(p) for name, p in model.named_parameters() if ".original_module." not in name)
    return trainable, total


def parameter_count(param) -> int:
    """Parameters a tensor stands for, as peft counts them (``get_nb_trainable_parameters``): a
    bitsandbytes 4-bit weight packs two values per byte of its storage, so its ``numel()`` is a
    fraction of the layer's parameters."""
    if type(param).__name__ != "Params4bit":
        return param.numel()
    return param.numel() * 2 * param.element_size()
