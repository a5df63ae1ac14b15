"""Errors that point a user at the offending input and at the fix.

Every problem with user input (data files, configs, model directories) is raised as
``SeqpeftInputError`` so that the command line and the workflow scripts can print one clear
message and exit non-zero instead of a traceback deep inside a library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class SeqpeftInputError(ValueError):
    """Bad input: names the file, the line or record, what is wrong and how to fix it."""

    path: str | Path | None
    problem: str
    fix: str = ""
    line: int | None = None
    record: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else "<input>"
        if self.line is not None:
            where += f", line {self.line}"
        if self.record is not None:
            where += f", record {self.record!r}"
        message = f"{where}: {self.problem}"
        if self.fix:
            message += f" Fix: {self.fix}"
        return message


def unpickler_reason(error: BaseException) -> str:
    """What torch's weights_only unpickler objected to, as plain text: its "WeightsUnpickler error"
    line without the terminal colour codes and without torch's advice to load the file unsafely."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else type(error).__name__)
    return reason.split("WeightsUnpickler error:", 1)[-1].strip()
