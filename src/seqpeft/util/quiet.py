"""Silence third-party output that is known to be harmless for seqpeft, and nothing else.

Each filter names one message and why it is harmless here; every other warning still shows.

* transformers' "Loading weights" bar: a progress bar for loading a model of a few MB.
* bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community: No module named
  'kernels'": the optional ``kernels`` package is absent, and bitsandbytes falls back to its own
  CPU kernel (seqpeft.methods.qlora plans the quantization for exactly that kernel).
* transformers' LOAD REPORT whose only entries are UNEXPECTED keys of a published classification
  head (``score.*``, ``classifier.*``, DNABERT-2's ``bert.pooler.*``): the backbone is loaded
  without its head on purpose, and seqpeft reads those very weights itself
  (``seqpeft.models.families.load_backbone``: ``pretrained_head``). A report that also lists MISSING or
  MISMATCH keys, or other unexpected keys, is shown whole.
* under ``head: transformers`` (seqpeft.models.hf_head), a LOAD REPORT whose only entries are MISSING
  keys of the ``*ForSequenceClassification`` class's head (``score.*``, ``classifier.*``, a
  pooler the checkpoint lacks), while ``new_head_expected()`` is in effect: the head is new by
  design, and seqpeft trains it or loads the run's own right after.
* transformers' FutureWarning "`is_gradient_checkpointing` is deprecated", raised by peft's own
  call into transformers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings

# Checkpoint keys of the heads seqpeft reads from a published checkpoint (models.PublishedHead).
HEAD_PREFIXES = ("score.", "classifier.", "bert.pooler.", "pooler.")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STATUS = re.compile(r"\b(UNEXPECTED|MISSING|MISMATCH|CONVERSION|OWNED|SKIPPED)\b")


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


_NEW_HEAD_EXPECTED = False


@contextlib.contextmanager
def new_head_expected():
    """While loading a model as ``*ForSequenceClassification`` for seqpeft.models.hf_head: its head's
    MISSING keys are no news."""
    global _NEW_HEAD_EXPECTED
    before, _NEW_HEAD_EXPECTED = _NEW_HEAD_EXPECTED, True
    try:
        yield
    finally:
        _NEW_HEAD_EXPECTED = before


def harmless_load_report(message: str) -> bool:
    """True for a LOAD REPORT whose every row is an UNEXPECTED key of a classification head (or,
    under ``new_head_expected()``, a MISSING one)."""
    text = _plain(message)
    if "LOAD REPORT" not in text:
        return False
    table = text.split("Notes:")[0]
    rows = []
    for line in table.splitlines():
        status = _STATUS.search(line)
        if status:
            key = line.split("|")[0].strip() if "|" in line else line[:status.start()].strip()
            rows.append((key, status.group(1)))
    allowed = ("UNEXPECTED", "MISSING") if _NEW_HEAD_EXPECTED else ("UNEXPECTED",)
    return bool(rows) and all(status in allowed and key.startswith(HEAD_PREFIXES) for key, status in rows)


class _DropKnown(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to hide
            return True
        if "gemm_4bit_forward" in message and "No module named 'kernels'" in message:
            return False
        return not harmless_load_report(message)


_FILTER = _DropKnown()
# The loggers those messages come from (a filter on a logger sees only its own records).
_LOGGERS = ("bitsandbytes.backends.cpu.ops", "transformers.modeling_utils", "transformers.utils.loading_report")


def quiet_third_party() -> None:
    """Install the filters (idempotent). Call before the libraries are imported: the progress-bar
    switch is read by huggingface_hub at import time."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    try:  # transformers already imported (a library user calling this late): switch its bar off too
        import sys

        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - best effort; the bar is cosmetic
        pass
    # peft asks every model ``is_gradient_checkpointing``, which transformers 5 renamed: a rename
    # notice about a library's call into another, nothing a seqpeft user can act on.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
