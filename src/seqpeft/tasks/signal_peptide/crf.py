"""A linear-chain CRF over per-residue states whose transitions make every decoded signal peptide
one contiguous N-terminal region of a single SP type, followed by mature-protein states.

States: the three mature labels I, O, M, then one SP state per SP type (SP, LIPO, TAT, TATLIPO,
PILIN). The residue labels S/T/L/P become the SP state of the record's type from its header, so
TATLIPO (whose signal residues are labelled T, like TAT) gets a state of its own. Allowed moves:
SP_k -> SP_k, SP_k -> mature, mature -> mature; a sequence may start anywhere. Mature -> SP is
forbidden, so an SP region can only start at residue 0, and SP_k -> SP_j (j != k) is forbidden.

The sequence type and its probability come from the CRF's marginals at residue 0 (P(start in
SP_k) for each type, P(start mature) for NO_SP; they sum to 1). The cleavage site comes from a
Viterbi path constrained to start in the chosen type, so the site is -1 exactly when the type is
NO_SP.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seqpeft.data.readers import RESIDUE_LABELS, SP_TYPES

MATURE_STATES = ("I", "O", "M")
SP_STATE_TYPES = tuple(t for t in SP_TYPES if t != "NO_SP")
STATES = MATURE_STATES + tuple(f"SP_{t}" for t in SP_STATE_TYPES)
NUM_STATES = len(STATES)
_FORBIDDEN = -1e4


def allowed_transitions() -> torch.Tensor:
    """Boolean [from, to] matrix of the moves a decoded path may make."""
    allowed = torch.zeros(NUM_STATES, NUM_STATES, dtype=torch.bool)
    mature = len(MATURE_STATES)
    allowed[:mature, :mature] = True
    for state in range(mature, NUM_STATES):
        allowed[state, state] = True
        allowed[state, :mature] = True
    return allowed


def gold_states(residue_labels: np.ndarray, sp_type: int) -> np.ndarray:
    """Residue label indices (into RESIDUE_LABELS; -100 kept) to CRF states, using the record's type."""
    table = np.empty(len(RESIDUE_LABELS), dtype=np.int64)
    for index, letter in enumerate(RESIDUE_LABELS):
        if letter in MATURE_STATES:
            table[index] = MATURE_STATES.index(letter)
        else:
            type_name = SP_TYPES[sp_type] if SP_TYPES[sp_type] != "NO_SP" else "SP"
            table[index] = len(MATURE_STATES) + SP_STATE_TYPES.index(type_name)
    labels = np.asarray(residue_labels)
    return np.where(labels == -100, -100, table[np.clip(labels, 0, None)])


class LinearChainCRF(nn.Module):
    """A linear-chain CRF with learned start/transition/end scores over ``num_states``; moves
    (and first and last states) the constraints forbid are masked to ``forbidden`` (a large negative
    score), never learned. Forward-backward over left-aligned residues (``mask``); the 8-state type CRF and the
    37-state region CRF (``seqpeft.tasks.signal_peptide.regions``) differ only in their states."""

    def __init__(self, allowed: torch.Tensor, first_allowed: torch.Tensor | None = None,
                 last_allowed: torch.Tensor | None = None):
        super().__init__()
        num_states = allowed.shape[0]
        self.start = nn.Parameter(torch.zeros(num_states))
        self.transitions = nn.Parameter(torch.zeros(num_states, num_states))
        self.end = nn.Parameter(torch.zeros(num_states))
        every = torch.ones(num_states, dtype=torch.bool)
        self.register_buffer("allowed", allowed, persistent=False)
        self.register_buffer("first_allowed", every if first_allowed is None else first_allowed, persistent=False)
        self.register_buffer("last_allowed", every if last_allowed is None else last_allowed, persistent=False)
        self.forbidden = _FORBIDDEN  # the region CRF's soft constraints lower it to PEFT-SP's -20

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(start, transitions, end) with forbidden entries at ``self.forbidden`` (a large negative score)."""
        return (self.start.masked_fill(~self.first_allowed, self.forbidden),
                self.transitions.masked_fill(~self.allowed, self.forbidden),
                self.end.masked_fill(~self.last_allowed, self.forbidden))

    def _transitions(self) -> torch.Tensor:
        return self.scores()[1]

    def _forward_scores(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """alpha[b, t, s]: log-sum of all paths over residues 0..t ending in s."""
        start, transitions, _ = self.scores()
        alpha = start + emissions[:, 0]
        alphas = [alpha]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t:t + 1], step, alpha)
            alphas.append(alpha)
        return torch.stack(alphas, dim=1)

    def _backward_scores(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _, transitions, end = self.scores()
        beta = end.expand(emissions.shape[0], end.shape[0])
        betas = [beta]
        for t in range(emissions.shape[1] - 2, -1, -1):
            step = torch.logsumexp(transitions + (emissions[:, t + 1] + beta).unsqueeze(1), dim=2)
            # Past a sequence's last residue beta stays at the end scores.
            beta = torch.where(mask[:, t + 1:t + 2], step, beta)
            betas.append(beta)
        return torch.stack(betas[::-1], dim=1)

    def _final(self, alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z from the forward scores: the last residue's alpha plus the end scores."""
        last = mask.sum(dim=1) - 1
        return torch.logsumexp(alpha[torch.arange(alpha.shape[0], device=alpha.device), last] + self.scores()[2], dim=1)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._final(self._forward_scores(emissions, mask), mask)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P(state at residue t = s) for every residue, by forward-backward."""
        alpha = self._forward_scores(emissions, mask)
        beta = self._backward_scores(emissions, mask)
        log_z = self._final(alpha, mask)
        return torch.exp(alpha + beta - log_z[:, None, None]) * mask.unsqueeze(2)

    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor, start_allowed: torch.Tensor | None = None) -> list[list[int]]:
        """Best path per sequence under the start/transition/end scores (forbidden moves, first and
        last states at their masked scores); ``start_allowed`` [batch, states] restricts residue 0."""
        start, transitions, end = self.scores()
        score = start + emissions[:, 0]
        if start_allowed is not None:
            score = score.masked_fill(~start_allowed, 2 * _FORBIDDEN * emissions.shape[1])
        states = torch.arange(score.shape[1], device=score.device)
        pointers = []
        for t in range(1, emissions.shape[1]):
            best, pointer = (score.unsqueeze(2) + transitions).max(dim=1)
            keep = mask[:, t:t + 1]
            score = torch.where(keep, best + emissions[:, t], score)
            pointers.append(torch.where(keep, pointer, states.expand_as(pointer)))
        # Backtracking is sequential: do it on the CPU in one transfer, not one GPU sync per step.
        last_states = (score + end).argmax(dim=1).tolist()
        back = torch.stack(pointers).cpu().numpy() if pointers else None
        paths = []
        for b, length in enumerate(mask.sum(dim=1).tolist()):
            state = last_states[b]
            path = [state]
            for t in range(int(length) - 2, -1, -1):
                state = int(back[t, b, state])
                path.append(state)
            paths.append(path[::-1])
        return paths


class SignalPeptideCRF(LinearChainCRF):
    """The 8-state CRF of ``labels: types``: I, O, M and one state per SP type."""

    def __init__(self):
        super().__init__(allowed_transitions())

    def path_score(self, emissions: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = states.clamp(min=0)
        transitions = self._transitions()
        score = self.start[states[:, 0]] + emissions[:, 0].gather(1, states[:, :1]).squeeze(1)
        emitted = emissions.gather(2, states.unsqueeze(2)).squeeze(2)
        moves = transitions[states[:, :-1], states[:, 1:]]
        score = score + ((moves + emitted[:, 1:]) * mask[:, 1:]).sum(dim=1)
        last = mask.sum(dim=1) - 1
        return score + self.end[states[torch.arange(states.shape[0], device=states.device), last]]

    def nll(self, emissions: torch.Tensor, states: torch.Tensor, mask: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """Negative log-likelihood of the gold state paths (mask: left-aligned residues), summed
        over the batch, or per sequence with ``reduction="none"``."""
        per_sequence = self.log_partition(emissions, mask) - self.path_score(emissions, states, mask)
        return per_sequence if reduction == "none" else per_sequence.sum()

    def type_probabilities(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[batch, len(SP_TYPES)] probabilities in SP_TYPES order, from the marginals at residue 0."""
        first = self.marginals(emissions, mask)[:, 0]
        mature = len(MATURE_STATES)
        return torch.cat([first[:, :mature].sum(dim=1, keepdim=True), first[:, mature:]], dim=1)


def residue_emissions(logits: torch.Tensor, attention: torch.Tensor, leading_specials: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token logits -> left-aligned residue emissions and their mask (drops [CLS] and [EOS])."""
    lengths = attention.sum(dim=1) - leading_specials - 1
    emissions = logits[:, leading_specials:]
    positions = torch.arange(emissions.shape[1], device=logits.device)
    return emissions, positions.unsqueeze(0) < lengths.unsqueeze(1)


def site_of(path: list[int]) -> int:
    """Index after the last SP residue of a state path, -1 when it has none."""
    sp = [i for i, state in enumerate(path) if state >= len(MATURE_STATES)]
    return sp[-1] + 1 if sp else -1


def decode(crf: SignalPeptideCRF, emissions: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(type index into SP_TYPES, cleavage site, type probabilities) per sequence.

    The type is the most probable one under the marginals; the site is read from the best path
    that starts in that type, so NO_SP always has site -1 and an SP type always has a site.
    """
    probabilities = crf.type_probabilities(emissions, mask)
    types = probabilities.argmax(dim=1)
    mature = len(MATURE_STATES)
    start_allowed = torch.zeros(emissions.shape[0], NUM_STATES, dtype=torch.bool, device=emissions.device)
    for b, chosen in enumerate(types.tolist()):
        if chosen == 0:
            start_allowed[b, :mature] = True
        else:
            start_allowed[b, mature + chosen - 1] = True
    paths = crf.viterbi(emissions, mask, start_allowed)
    sites = np.array([site_of(path) for path in paths], dtype=np.int64)
    return types.cpu().numpy(), sites, probabilities.detach().cpu().numpy()


def predict_in_split_order(model, split, pad_id: int, max_length: int, batch_size: int, device,
                           score_batch) -> dict[str, np.ndarray]:
    """Run a CRF classifier over a split in length-sorted batches and return per-sequence arrays in
    split order. ``score_batch(indices, logits, labels, attention, emissions, mask)`` turns one
    batch into ``{name: array}`` (type, site, probabilities, and the NLL where the split has labels)."""
    from seqpeft.core.batching import collate

    model.eval()
    order = np.argsort(-split.data.lengths, kind="stable")
    parts: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            input_ids, attention, labels = collate(split, indices, pad_id, max_length, torch)
            attention = attention.to(device)
            logits = model(input_ids.to(device), attention).float()
            emissions, mask = residue_emissions(logits, attention, split.leading_specials)
            for name, values in score_batch(indices, logits, labels, attention, emissions, mask).items():
                parts.setdefault(name, []).append(values)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return {name: np.concatenate(values)[inverse] for name, values in parts.items()}
