"""What a finished run leaves: the trained weights (adapter, trainable tensors or backbone, head,
CRF, pooler) with the tokenizer and a description, the evaluation history; and rebuilding a trained
classifier from them."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from seqpeft.util.atomic import atomic_directory, write_json_atomic, write_text_atomic
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.models.hf_head import uses_transformers_head
from seqpeft.methods.registry import resolve_method
from seqpeft.models.classifier import make_classifier
from seqpeft.models.families import load_backbone
from seqpeft.core.registry import objective_for

HISTORY_COLUMNS = ["step", "epoch", "wall_seconds", "train_loss", "dev_loss"]  # + dev_<metric> of the kind


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
            point_adapter_at_base(tmp / "adapter", description)
            backbone_kind = "adapter"
        elif any(p.requires_grad for name, p in model.backbone.named_parameters() if not _in_head(model, name)):
            model.backbone.save_pretrained(tmp / "backbone")
            backbone_kind = "backbone"
        # under head: transformers the head is its modules by path, also inside the adapter or backbone
        head = model.head_state() if hasattr(model, "head_state") else model.head.state_dict()
        save_file({k: v.detach().cpu().contiguous() for k, v in head.items()}, str(tmp / "head.safetensors"))
        if getattr(model, "crf", None) is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.crf.state_dict().items()}, str(tmp / "crf.safetensors"))
        if getattr(model, "pooler", None) is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.pooler.state_dict().items()}, str(tmp / "pooler.safetensors"))
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_json_atomic(tmp / "seqpeft.json", {**description, "weights": backbone_kind, "format": 1})


def _in_head(model, name: str) -> bool:
    """A parameter of the head inside a transformers-head backbone (saved in head.safetensors)."""
    return any(name == head or name.startswith(head + ".") for head in getattr(model, "head_names", ()))


def write_history(path: Path, rows: list[dict], metrics: tuple[str, ...] = ("mcc", "accuracy")) -> None:
    """history.csv: one row per dev evaluation; ``metrics`` are the task kind's (TaskKind.history_metrics)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS + [f"dev_{metric}" for metric in metrics],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(Path(path), buffer.getvalue())


def base_model_reference(model_dir: Path, artifacts_dir: Path, model_spec: dict) -> dict:
    """seqpeft.json's base-model fields: the path relative to the artifacts (holds when the whole
    results tree moves), the absolute path (holds when only the artifacts are copied), and the
    hub id + revision of a downloaded model (holds anywhere with the hub or its cache)."""
    model_dir = Path(model_dir).resolve()
    reference = {"base_model": str(model_dir),
                 "base_model_relative": os.path.relpath(model_dir, Path(artifacts_dir).resolve())}
    if model_spec.get("hub"):
        reference["base_model_hub"] = {"id": model_spec["hub"], "revision": model_spec.get("revision")}
    return reference


def point_adapter_at_base(adapter_dir: Path, description: dict) -> None:
    """adapter_config.json's ``base_model_name_or_path``: the hub id (and ``revision``) of a hub
    model, else the absolute path, never the job's working-directory-relative path, so that
    ``PeftModel.from_pretrained(AutoModel.from_pretrained(config.base_model_name_or_path), ...)``
    works from any directory."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file() or "base_model" not in description:
        return
    config = json.loads(config_path.read_text())
    hub = description.get("base_model_hub")
    config["base_model_name_or_path"] = hub["id"] if hub else description["base_model"]
    if hub and hub.get("revision"):
        config["revision"] = hub["revision"]
    write_json_atomic(config_path, config)


def resolve_base_model(artifacts_dir: Path, description: dict) -> Path:
    """The base model directory of a run's artifacts: relative to the artifacts, else absolute;
    neither found is an error naming both and the fix (``--model BASE --adapter ARTIFACTS``)."""
    if description.get("weights") == "backbone":
        return Path(artifacts_dir) / "backbone"
    candidates = []
    if description.get("base_model_relative"):
        candidates.append(Path(artifacts_dir) / description["base_model_relative"])
    candidates.append(Path(description["base_model"]))
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    hub = description.get("base_model_hub")
    source = f" (hub {hub['id']} at revision {hub.get('revision')})" if hub else ""
    raise SeqpeftInputError(Path(artifacts_dir) / "seqpeft.json", "the base model the run was trained on is not at "
                            f"{' nor at '.join(str(c) for c in candidates)}{source}.",
                            fix="pass the base model directory: seqpeft predict|evaluate --model BASE_MODEL_DIR "
                                f"--adapter {artifacts_dir} ...")


def load_trained(artifacts_dir: Path, base_model_dir: Path | None = None, device: str = "cpu"):
    """Rebuild a trained classifier from a run's ``artifacts`` directory (for predict/evaluate), on
    ``device`` (the predictor's: a quantized backbone is placed at load time, not by ``.to``)."""
    import torch

    from seqpeft.training.assemble import method_context
    from safetensors.torch import load_file

    artifacts_dir = Path(artifacts_dir)
    description_path = artifacts_dir / "seqpeft.json"
    if not description_path.is_file():
        raise SeqpeftInputError(artifacts_dir, "is not a seqpeft run's artifacts directory (no seqpeft.json).",
                                fix="pass results/runs/<task>/<model>/<method>/<partition>/artifacts.")
    description = json.loads(description_path.read_text())
    base = Path(base_model_dir) if base_model_dir is not None else resolve_base_model(artifacts_dir, description)
    if description["weights"] == "backbone":
        base = artifacts_dir / "backbone"
    method, args = resolve_method(description["method"], description.get("method_spec") or {})
    extra = method.load_kwargs(args, device) if method.load_kwargs is not None else None
    num_labels = int(description["num_labels"]) if uses_transformers_head(description.get("model_spec")) else None
    loaded = load_backbone(base, description.get("model_spec"), num_labels=num_labels, extra_kwargs=extra,
                           tokenizer_dir=artifacts_dir / "tokenizer")
    if description["weights"] == "adapter":
        from peft import PeftModel

        if method.load_adapter is not None:
            loaded.backbone = method.load_adapter(loaded.backbone, artifacts_dir / "adapter")
        else:
            loaded.backbone = PeftModel.from_pretrained(loaded.backbone, str(artifacts_dir / "adapter"))
    if description["weights"] == "trainable":
        loaded.backbone = method.apply(loaded.backbone, args, method_context(loaded, 1, description.get("model", "")))
        trained = load_file(str(artifacts_dir / "trainable.safetensors"))
        unknown = set(trained) - {name for name, _ in loaded.backbone.named_parameters()}
        if unknown:
            raise SeqpeftInputError(artifacts_dir, f"trainable weights {sorted(unknown)[:3]} do not fit the rebuilt model.",
                                    fix="load the run with the seqpeft version that trained it.")
        loaded.backbone.load_state_dict(trained, strict=False)
    head = load_file(str(artifacts_dir / "head.safetensors"))
    if loaded.head_modules:  # head: transformers (seqpeft.models.hf_head)
        model = make_classifier(loaded, description["num_labels"])
        with torch.no_grad():
            model.load_head_state(head)
        model.eval()
        return model, loaded, description
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
        objective_for(description["task_kind"], description).attach(model)
        model.crf.load_state_dict(load_file(str(artifacts_dir / "crf.safetensors")))
    model.eval()
    loaded.tokenizer = load_tokenizer_dir(artifacts_dir / "tokenizer")
    return model, loaded, description


def load_tokenizer_dir(path: Path):
    from seqpeft.data.tokenize import load_tokenizer

    return load_tokenizer(path)
