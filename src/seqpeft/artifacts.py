"""What a finished run leaves: the trained weights (adapter, trainable tensors or backbone, head,
CRF, pooler) with the tokenizer and a description, the evaluation history; and rebuilding a trained
classifier from them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from seqpeft.atomic import atomic_directory, write_json_atomic, write_text_atomic
from seqpeft.errors import SeqpeftInputError
from seqpeft.methods import MethodContext, resolve_method
from seqpeft.classifier import make_classifier
from seqpeft.models import load_backbone
from seqpeft.objectives import objective_for

HISTORY_COLUMNS = ["step", "epoch", "wall_seconds", "train_loss", "dev_loss", "dev_mcc", "dev_accuracy"]


def save_artifacts(model, uses_peft: bool, tokenizer, out_dir: Path, description: dict, trainable_only: bool = False) -> None:
    """The trained adapter (peft ``save_pretrained``), or full backbone, plus head and tokenizer."""
    from safetensors.torch import save_file

    with atomic_directory(out_dir) as tmp:
        backbone_kind = "frozen"
        if trainable_only:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.backbone.named_parameters() if v.requires_grad},
                      str(tmp / "trainable.safetensors"))
            backbone_kind = "trainable"
        elif uses_peft:
            model.backbone.save_pretrained(tmp / "adapter")
            backbone_kind = "adapter"
        elif any(p.requires_grad for p in model.backbone.parameters()):
            model.backbone.save_pretrained(tmp / "backbone")
            backbone_kind = "backbone"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, str(tmp / "head.safetensors"))
        if getattr(model, "crf", None) is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.crf.state_dict().items()}, str(tmp / "crf.safetensors"))
        if getattr(model, "pooler", None) is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.pooler.state_dict().items()}, str(tmp / "pooler.safetensors"))
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_json_atomic(tmp / "seqpeft.json", {**description, "weights": backbone_kind, "format": 1})


def write_history(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(Path(path), buffer.getvalue())


def load_trained(artifacts_dir: Path, base_model_dir: Path | None = None):
    """Rebuild a trained classifier from a run's ``artifacts`` directory (for predict/evaluate)."""
    import torch
    from safetensors.torch import load_file


    artifacts_dir = Path(artifacts_dir)
    description_path = artifacts_dir / "seqpeft.json"
    if not description_path.is_file():
        raise SeqpeftInputError(artifacts_dir, "is not a seqpeft run's artifacts directory (no seqpeft.json).",
                                fix="pass results/runs/<task>/<model>/<method>/<partition>/artifacts.")
    description = json.loads(description_path.read_text())
    base = Path(base_model_dir or description["base_model"])
    if description["weights"] == "backbone":
        base = artifacts_dir / "backbone"
    method, args = resolve_method(description["method"], description.get("method_spec") or {})
    extra = method.load_kwargs(args) if method.load_kwargs is not None else None
    loaded = load_backbone(base, description.get("model_spec"), extra_kwargs=extra, tokenizer_dir=artifacts_dir / "tokenizer")
    if description["weights"] == "adapter":
        from peft import PeftModel

        if method.load_adapter is not None:
            loaded.backbone = method.load_adapter(loaded.backbone, artifacts_dir / "adapter")
        else:
            loaded.backbone = PeftModel.from_pretrained(loaded.backbone, str(artifacts_dir / "adapter"))
    if description["weights"] == "trainable":
        loaded.backbone = method.apply(loaded.backbone, args, MethodContext(loaded.family, 1, description.get("model", "")))
        trained = load_file(str(artifacts_dir / "trainable.safetensors"))
        unknown = set(trained) - {name for name, _ in loaded.backbone.named_parameters()}
        if unknown:
            raise SeqpeftInputError(artifacts_dir, f"trainable weights {sorted(unknown)[:3]} do not fit the rebuilt model.",
                                    fix="load the run with the seqpeft version that trained it.")
        loaded.backbone.load_state_dict(trained, strict=False)
    head = load_file(str(artifacts_dir / "head.safetensors"))
    loaded.pretrained_head = {}
    model = make_classifier(loaded, description["num_labels"], pooling=description["pooling"],
                            per_residue=description["per_residue"])
    if "bias" not in head:
        model.head.bias = None
    with torch.no_grad():
        model.head.load_state_dict(head)
        if (artifacts_dir / "pooler.safetensors").is_file():
            model.attach_pooler()
            model.pooler.load_state_dict(load_file(str(artifacts_dir / "pooler.safetensors")))
    if (artifacts_dir / "crf.safetensors").is_file():
        objective_for(description["task_kind"]).attach(model)
        model.crf.load_state_dict(load_file(str(artifacts_dir / "crf.safetensors")))
    model.eval()
    loaded.tokenizer = load_tokenizer_dir(artifacts_dir / "tokenizer")
    return model, loaded, description


def load_tokenizer_dir(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
