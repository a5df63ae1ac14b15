"""Task kinds, one module (or folder) each: the plugins of ``seqpeft.core.registry``.

Each module here calls ``register_task_kind`` when imported; this package imports all of them, so
the first lookup of a kind (``seqpeft.core.registry.task_kinds``) finds every one, and a new kind
needs no line here. Kinds never import each other (an import-linter contract): what two kinds
share lives below them (``seqpeft.core``, ``seqpeft.training.predict``).

The names below are re-exported for the workflow's scripts and for users.
"""

from __future__ import annotations

import importlib
import pkgutil

from seqpeft.core.registry import (FOLDS, REPLICATES, TASK_KINDS, PartitionScheme, TaskKind, fold_indices,
                                   objective_for, predictions_frame, task_kind, task_kinds, task_splits,
                                   tokenize_task, write_test_predictions)
from seqpeft.methods.dsp import tokenize_dsp_task

for _module in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
    importlib.import_module(_module.name)

__all__ = ["FOLDS", "REPLICATES", "TASK_KINDS", "PartitionScheme", "TaskKind", "fold_indices", "objective_for",
           "predictions_frame", "task_kind", "task_kinds", "task_splits", "tokenize_dsp_task", "tokenize_task",
           "write_test_predictions"]
