"""Hub models fetched once, at a commit, with their weights checked where they are fetched.

``download_hub_model`` is the hub half of ``prepare_model``: it resolves the commit (the pinned
``revision``, else, in an ``allow_unpinned`` run, the commit its branch points to now), lists the
repository's files at that commit, downloads configs, tokenizer files and the weights
(safetensors when the commit has them, else ``pytorch_model*.bin``), converts pickled ``.bin``
checkpoints to safetensors through torch's ``weights_only=True`` unpickler (which builds tensors
and plain containers and nothing else: a pickle that would call code is refused, naming the file,
before anything runs), and finally loads the model once on CPU (on the meta device for large
models) to check that every tensor the architecture expects is in the checkpoint. A failure here
costs one CPU job; without it, it would cost every GPU job of the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.pins import DEFAULT_BRANCH, MODEL_RECORD, resolve_model, write_record

# Checkpoints above this many bytes are checked on the meta device (names and shapes, no memory).
META_BYTES = 2 << 30
# Parameters an architecture declares that published checkpoints legitimately lack.
OPTIONAL_PREFIXES = ("contact_head.", "pooler.", "lm_head.", "cls.")
_ALWAYS = ["*.json", "*.txt", "*.model", "tokenizer*"]


def download_hub_model(name: str, spec: dict, out_dir: Path) -> dict:
    """Download ``spec['hub']`` at its commit into ``out_dir`` and check its weights; returns the
    record written to ``out_dir/seqpeft-pin.json`` (hub, commit, pinned, weights converted)."""
    from huggingface_hub import HfApi, snapshot_download

    hub = str(spec["hub"])
    pinned = bool(spec.get("revision"))
    commit = str(spec["revision"]) if pinned else resolve_model(hub, str(spec.get("branch") or DEFAULT_BRANCH))
    files = [sibling.rfilename for sibling in HfApi().model_info(hub, revision=commit).siblings or []]
    patterns, ignore = list(_ALWAYS), []
    if any(f.endswith(".safetensors") for f in files):
        patterns.append("*.safetensors")
        ignore.append("pytorch_model*.bin.index.json")  # the index of pickled weights we do not fetch
    else:
        patterns.append("pytorch_model*.bin")
    if spec.get("trust_remote_code"):
        patterns.append("*.py")
    snapshot_download(repo_id=hub, revision=commit, local_dir=out_dir, allow_patterns=patterns,
                      ignore_patterns=ignore or None)
    _remove_download_cache(out_dir)
    try:
        converted = convert_pickled_weights(out_dir)
        verify_weights(out_dir, spec, files)
    except SeqpeftInputError as error:
        raise _named_in_repository(error, out_dir, hub, commit) from None
    record = {"hub": hub, "revision": commit, "pinned": pinned,
              "converted": [path.name for path in converted]}
    if not pinned:
        record["branch"] = str(spec.get("branch") or DEFAULT_BRANCH)
    write_record(out_dir / MODEL_RECORD, record)
    return record


def _named_in_repository(error: SeqpeftInputError, out_dir: Path, hub: str, commit: str) -> SeqpeftInputError:
    """An error about a downloaded file, naming it in the repository rather than in the staging
    directory (``prepare_model`` deletes that directory before anyone reads the message)."""
    from dataclasses import replace

    try:
        inside = Path(str(error.path)).relative_to(out_dir)
    except ValueError:
        return error
    return replace(error, path=f"hub {hub}@{commit}" + (f": {inside}" if str(inside) != "." else ""))


def _remove_download_cache(out_dir: Path) -> None:
    import shutil

    shutil.rmtree(out_dir / ".cache", ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# .bin -> safetensors, without running pickled code


def load_pickled_state_dict(path: Path) -> dict:
    """A ``.bin`` state dict through torch's ``weights_only`` unpickler; code is never run."""
    import pickle

    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as error:
        from seqpeft.util.errors import unpickler_reason

        first = unpickler_reason(error)
        raise SeqpeftInputError(
            path, f"is not a plain tensor checkpoint: torch's weights_only unpickler refused it ({first}); "
                  "nothing in it was run.",
            fix="the pickle carries code or non-tensor objects: do not load it. Use a commit or repository "
                "that ships safetensors (or tensors only).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SeqpeftInputError(path, "does not hold a state dict (a mapping of names to tensors).",
                                fix="use a commit of the repository whose weights are a saved state dict.")
    return state


def _safetensors_name(bin_name: str) -> str:
    # pytorch_model.bin -> model.safetensors; pytorch_model-00001-of-00002.bin -> model-00001-of-00002.safetensors
    stem = bin_name[: -len(".bin")]
    if stem.startswith("pytorch_model"):
        stem = "model" + stem[len("pytorch_model"):]
    return stem + ".safetensors"


def convert_pickled_weights(model_dir: Path) -> list[Path]:
    """Replace every ``*.bin`` checkpoint (and its shard index) in ``model_dir`` by safetensors.

    Every file is unpickled (weights-only) before anything is written, so a refused file leaves
    the directory as it was. Tensors sharing memory (tied weights) are stored once each.
    """
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    bins = sorted(model_dir.glob("*.bin"))
    if not bins:
        return []
    states = {path: load_pickled_state_dict(path) for path in bins}
    written = []
    for path, state in states.items():
        seen: set[int] = set()
        tensors = {}
        for key, tensor in state.items():
            tensor = tensor.detach()
            pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
            # safetensors refuses shared storage: a tied or viewed tensor gets its own copy
            tensors[key] = tensor.clone().contiguous() if pointer in seen or not tensor.is_contiguous() else tensor
            if pointer != -1:
                seen.add(pointer)
        target = model_dir / _safetensors_name(path.name)
        save_file(tensors, str(target), metadata={"format": "pt"})
        written.append(target)
    index = model_dir / "pytorch_model.bin.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {key: _safetensors_name(value) for key, value in data.get("weight_map", {}).items()}
        (model_dir / "model.safetensors.index.json").write_text(json.dumps(data, indent=2) + "\n")
        index.unlink()
    for path in bins:
        path.unlink()
    return written


# ---------------------------------------------------------------------------------------------
# the weight check


def verify_weights(model_dir: Path, spec: dict, repo_files: list[str] | None = None) -> None:
    """Fail unless ``model_dir`` has weights holding every tensor its architecture expects.

    The model is loaded once (CPU, or the meta device for checkpoints over 2 GiB) through
    ``seqpeft.models.families.load_backbone``, i.e. exactly as the fine-tuning jobs will load it, and the
    loader's missing and mismatched keys are checked (parameters published checkpoints never
    carry, like ESM's contact head, excepted).
    """
    from seqpeft.models.families import load_backbone
    from seqpeft.models.hf_head import HEAD_ATTRIBUTES, uses_transformers_head

    model_dir = Path(model_dir)
    if not any(model_dir.glob("*.safetensors")):
        listed = ", ".join(sorted(repo_files or [p.name for p in model_dir.iterdir()])) or "(none)"
        raise SeqpeftInputError(
            model_dir, f"has no loadable weights (no .safetensors or pytorch_model*.bin; files: {listed}).",
            fix="check the repository and revision: the commit may predate the weights upload, or keep them "
                "under another name.")
    weight_bytes = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
    extra = {"device_map": "meta"} if weight_bytes > META_BYTES else {}
    try:
        loaded = load_backbone(model_dir, {k: v for k, v in spec.items() if k != "allow_pickle"}, extra_kwargs=extra)
    except SeqpeftInputError:
        raise
    except Exception as error:  # noqa: BLE001 - any loader failure is a bad download: say where
        raise SeqpeftInputError(model_dir, f"the downloaded model does not load ({type(error).__name__}: {error}).",
                                fix="check the repository, revision and family in the config.") from error
    info = loaded.loading_info or {}
    # head: transformers loads the family's *ForSequenceClassification, whose new head (score,
    # classifier) no pretrained checkpoint holds: fine-tuning initialises it
    optional = OPTIONAL_PREFIXES + (tuple(f"{name}." for name in HEAD_ATTRIBUTES) if uses_transformers_head(spec) else ())
    missing = sorted(key for key in info.get("missing_keys", []) if not key.startswith(optional))
    mismatched = [f"{item[0]} {tuple(item[1])} vs {tuple(item[2])}" if isinstance(item, (tuple, list)) and len(item) == 3
                  else str(item) for item in info.get("mismatched_keys", [])]
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} tensor(s) missing ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
        if mismatched:
            problems.append(f"{len(mismatched)} with the wrong shape ({', '.join(mismatched[:3])})")
        raise SeqpeftInputError(model_dir, f"the checkpoint does not hold the whole model: {'; '.join(problems)}.",
                                fix="the weights do not match config.json: check the repository and revision "
                                    "(a partial upload?), then prepare the model again.")
