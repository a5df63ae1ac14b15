"""LoPA: low-rank, input-dependent soft prompts in front of a frozen backbone.

Z(x) = Z_S ⊙ σ(u(x) v(x)ᵀ): a prompt Z_S (m x d) shared by all inputs, gated by a rank-r
matrix whose factors u (m x r) and v (d x r) two small heads (Dropout → Linear → tanh → Linear)
compute from an encoding f(x) of the input. f(x) is the attention-masked mean of the frozen
backbone's own input embeddings, so no second model is needed and padding cannot change it.
The prompt is prepended to the input embeddings with an all-ones attention mask; the classifier
drops the m leading positions, so pooling and per-residue labels never see them.
Trained weights are saved as ``lopa_config.json`` + ``lopa.safetensors`` beside the run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

CONFIG_FILE = "lopa_config.json"
WEIGHTS_FILE = "lopa.safetensors"


@dataclass(frozen=True)
class LopaConfig:
    num_virtual_tokens: int = 10
    lp_rank: int = 1
    encoder_hidden_size: int = 64
    dropout: float = 0.1

    @classmethod
    def from_args(cls, args: dict) -> "LopaConfig":
        unknown = sorted(set(args) - set(cls.__dataclass_fields__))
        if unknown:
            from seqpeft.util.errors import SeqpeftInputError

            raise SeqpeftInputError(None, f"lopa: unknown arguments {unknown}.",
                                    fix=f"use only {sorted(cls.__dataclass_fields__)}.")
        return cls(**args)


def _module_class():
    import torch
    from torch import nn

    def factor_head(hidden: int, inner: int, out: int, dropout: float) -> nn.Module:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, inner), nn.Tanh(), nn.Linear(inner, out))

    class LopaModel(nn.Module):
        """The frozen backbone behind a LoPA prompt generator; called like the backbone."""

        def __init__(self, backbone, config: LopaConfig):
            super().__init__()
            self.backbone = backbone.requires_grad_(False)
            self.config = config
            embeddings = backbone.get_input_embeddings().weight
            hidden = embeddings.shape[1]
            m, r, inner = config.num_virtual_tokens, config.lp_rank, config.encoder_hidden_size
            # Scaled like the vocabulary embeddings; sampling rows could pick an all-zero pad row.
            self.shared_prompt = nn.Parameter(torch.randn(m, hidden) * float(embeddings.detach().float().std()))
            self.u_head = factor_head(hidden, inner, m * r, config.dropout)
            self.v_head = factor_head(hidden, inner, hidden * r, config.dropout)

        def prompt(self, embeds, attention_mask):
            mask = attention_mask.unsqueeze(-1).to(embeds.dtype)
            encoding = (embeds * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            batch, hidden = encoding.shape
            m, r = self.config.num_virtual_tokens, self.config.lp_rank
            u = self.u_head(encoding.float()).view(batch, m, r)
            v = self.v_head(encoding.float()).view(batch, hidden, r)
            return self.shared_prompt.unsqueeze(0) * torch.sigmoid(u @ v.transpose(1, 2))

        def forward(self, input_ids, attention_mask):
            embeds = self.backbone.get_input_embeddings()(input_ids)
            prompt = self.prompt(embeds.detach(), attention_mask).to(embeds.dtype)
            prompt_mask = attention_mask.new_ones(attention_mask.shape[0], prompt.shape[1])
            return self.backbone(inputs_embeds=torch.cat([prompt, embeds], dim=1),
                                 attention_mask=torch.cat([prompt_mask, attention_mask], dim=1))

        def generator_state(self) -> dict:
            return {name: param.detach().cpu().contiguous() for name, param in self.named_parameters()
                    if not name.startswith("backbone.")}

        def save_pretrained(self, directory) -> None:
            """What ``save_artifacts`` calls for adapter methods: the generator, never the backbone."""
            from safetensors.torch import save_file

            directory = Path(directory)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
            save_file(self.generator_state(), str(directory / WEIGHTS_FILE))

    return LopaModel


_LOPA_CLASS = None


def wrap(backbone, config: LopaConfig):
    global _LOPA_CLASS
    if _LOPA_CLASS is None:
        _LOPA_CLASS = _module_class()
    return _LOPA_CLASS(backbone, config)


def load(backbone, directory: Path):
    """Rebuild a trained LoPA model from ``save_pretrained`` output on its base backbone."""
    import torch
    from safetensors.torch import load_file

    directory = Path(directory)
    config = LopaConfig(**json.loads((directory / CONFIG_FILE).read_text()))
    model = wrap(backbone, config)
    state = load_file(str(directory / WEIGHTS_FILE))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in state:
                param.copy_(state[name])
    missing = set(model.generator_state()) - set(state)
    if missing:
        from seqpeft.util.errors import SeqpeftInputError

        raise SeqpeftInputError(directory, f"LoPA weights lack {sorted(missing)}.", fix="re-run the fine-tuning job.")
    return model
