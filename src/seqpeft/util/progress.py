"""Progress bars for interactive runs only.

A terminal user wants a live bar; a job log (Snakemake, SLURM) wants no carriage-return noise,
so there the existing one-line ``[seqpeft] ...`` messages are all that is written. The decision
is made on whether stderr is a terminal, and ``SEQPEFT_PROGRESS=0/1`` overrides it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def interactive() -> bool:
    """Whether bars are shown: SEQPEFT_PROGRESS if set, else whether stderr is a terminal."""
    forced = os.environ.get("SEQPEFT_PROGRESS")
    if forced is not None:
        return forced not in ("", "0", "false", "no")
    return sys.stderr.isatty()


class _Silent:
    """Stands in for a bar in non-interactive runs."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int, desc: str, initial: int = 0) -> Any:
    """A manually advanced bar (``update``/``close``), silent when not interactive."""
    if not interactive():
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def iterate(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """``items`` with a bar while iterating, or unchanged when not interactive."""
    if not interactive():
        return iter(items)
    from tqdm import tqdm

    return iter(tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True, file=sys.stderr))
