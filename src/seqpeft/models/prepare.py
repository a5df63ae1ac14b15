"""Model preparation: a model directory that ``from_pretrained`` loads offline, made once per model
by the ``prepare_model`` rule (a seeded tiny model built from a config, or a pinned hub download),
so that training jobs never touch the network."""

from __future__ import annotations

from pathlib import Path

from seqpeft.util.atomic import atomic_directory
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.models.hub import download_hub_model
from seqpeft.models.families import FAMILIES, register_native_architectures
from seqpeft.config.schema import ENTRY, with_defaults


def prepare_model(name: str, spec: dict, out_dir: Path, tokenizer_dir: Path | None = None) -> None:
    """Materialise a model directory that ``from_pretrained`` loads offline.

    ``build`` entries become a randomly initialised tiny model (seeded) saved with its tokenizer;
    ``hub`` entries are downloaded once (pinned revision; ``.bin`` weights converted to safetensors
    without running pickled code) and checked to load whole (``seqpeft.models.hub``), so GPU jobs never
    touch the network.
    """
    with atomic_directory(out_dir) as tmp:
        if "build" in spec:
            _build_tiny_model(name, spec, tmp, tokenizer_dir)
        elif "hub" in spec:
            _download_hub_model(name, spec, tmp)
        else:
            raise SeqpeftInputError(None, f"model {name!r} needs 'build' or 'hub' to be prepared.",
                                    fix="local models ('path:') are used in place and need no preparation.")


def _build_tiny_model(name: str, spec: dict, out_dir: Path, tokenizer_dir: Path | None) -> None:
    import torch
    from transformers import AutoModel, PreTrainedTokenizerFast

    if tokenizer_dir is None:
        raise SeqpeftInputError(None, f"built model {name!r} has no tokenizer.", fix="set models.<name>.tokenizer.")
    build = with_defaults(spec["build"], "models", ENTRY, "build")
    family_name = build["family"]  # the schema requires it
    if family_name not in FAMILIES:
        raise SeqpeftInputError(None, f"models.{name}.build.family: unknown family {family_name!r}.",
                                fix=f"use one of {sorted(FAMILIES)}.")
    register_native_architectures()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    special = {
        "pad": tokenizer.pad_token_id,
        "cls": tokenizer.cls_token_id,
        "sep": tokenizer.sep_token_id,
        "mask": tokenizer.mask_token_id,
    }
    # Room for the longest input plus virtual tokens of prompt methods.
    max_positions = int(spec["max_length"]) + 128
    config = FAMILIES[family_name].build_config(build, len(tokenizer), special, max_positions)
    torch.manual_seed(int(build["seed"]))
    model = AutoModel.from_config(config, **dict(FAMILIES[family_name].load_kwargs))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _download_hub_model(name: str, spec: dict, out_dir: Path) -> None:
    check_remote_code_policy(name, spec)
    download_hub_model(name, spec, out_dir)


def check_remote_code_policy(name: str, spec: dict) -> None:
    """Refuse repository code unless the entry opts in *and* pins the exact commit it vetted."""
    if not spec.get("trust_remote_code"):
        return
    revision = str(spec.get("revision") or "")
    if len(revision) != 40 or any(c not in "0123456789abcdef" for c in revision):
        raise SeqpeftInputError(
            None,
            f"model {name!r} sets trust_remote_code but its revision {revision or '(none)'!r} is not a pinned commit.",
            fix=f"set models.{name}.revision to the 40-hex commit hash whose code you reviewed.",
        )
