"""What a training objective is: the loss, the extra modules that train, how dev/test are scored.

Each task kind (``seqpeft.tasks``) defines its objective. The training loop stays one loop: it asks the objective for the head width, the
modules to attach (the signal-peptide CRF), the loss of a micro-batch and the evaluation dict,
whose ``selection`` value picks the best checkpoint (dev MCC for sequence classification;
detection MCC + cleavage-site MCC, kingdom-averaged, for signal peptides as PEFT-SP selects).
Evaluation is two steps, per-sequence predictions and the score of a whole split, so that the
ranks of a multi-process job can each predict a share and score the gathered predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Objective:
    name: str
    num_outputs: Callable[[int], int]
    attach: Callable[[Any], None]
    loss: Callable[..., Any]  # (model, logits, labels, attention, split, indices) -> summed loss tensor
    normaliser: Callable[[list, np.ndarray], int]  # (collated micro-batches, batch indices) -> divisor
    predict: Callable[..., dict]  # (model, split, pad_id, max_length, batch_size, device) -> per-sequence arrays
    score: Callable[[Any, dict], dict]  # (split, predictions) -> metrics

    def evaluate(self, model, split, pad_id: int, max_length: int, batch_size: int, device) -> dict:
        return self.score(split, self.predict(model, split, pad_id, max_length, batch_size, device))


def loss_module(model, objective: Objective):
    """The objective's summed loss of a micro-batch as one module call ``(input_ids, attention,
    labels, split, indices)``. DDP must see every parameter the loss uses (the signal-peptide CRF)
    inside the forward it wraps; used outside, DDP counts their gradients as ready twice."""
    import torch

    class ObjectiveLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention, labels, split, indices):
            return objective.loss(self.model, self.model(input_ids, attention), labels, attention, split, indices)

    return ObjectiveLoss()


