"""Weight files as they lie on disk: named tensors and the dtype a checkpoint holds, read without
building a model (safetensors headers; pickled ``.bin`` only through torch's weights-only loader)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def checkpoint_dtype(weights: list[Path]) -> str | None:
    """The floating dtype the weight files hold (the most common one by tensor count), read from
    the safetensors headers (a pickled ``.bin``: through torch's weights-only loader, memory-mapped)."""
    import collections
    import struct

    counts: collections.Counter = collections.Counter()
    names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    for path in weights:
        if path.suffix == ".safetensors":
            with open(path, "rb") as handle:
                header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
            counts.update(names[entry["dtype"]] for key, entry in header.items()
                          if key != "__metadata__" and entry.get("dtype") in names)
        else:
            import torch

            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            counts.update(str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point())
    return counts.most_common(1)[0][0] if counts else None


def loaded_dtype(model) -> str | None:
    """The dtype most floating parameters of ``model`` have after loading."""
    import collections

    counts = collections.Counter(str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.is_floating_point())
    return counts.most_common(1)[0][0] if counts else None


def read_tensors(weights: list[Path], names: set[str]) -> dict[str, Any]:
    """The named tensors found in safetensors (or, when allowed, pickled .bin) weight files."""
    from safetensors import safe_open

    found: dict[str, Any] = {}
    for path in weights:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                found.update({name: handle.get_tensor(name) for name in names & set(handle.keys())})
        else:
            import torch

            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            found.update({name: state[name] for name in names & set(state)})
    return found
