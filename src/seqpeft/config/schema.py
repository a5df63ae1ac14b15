"""The workflow's JSON schema (``workflow/schemas/config.schema.yaml``): the one home of every config
default. Code never spells a default of a configured key; it reads the schema here.

The schema holds two kinds of default, and ``defaults`` returns both:

- ``default:`` the workflow's validation (``snakemake.utils.validate``) writes it into the config,
  so a job's params (and checkpoint key) hold it;
- ``library_default:`` never written into the config; the library applies it where settings lack
  the key (``TrainingConfig.from_dict``, ...). These keys were defaulted in code before; written
  into the config, they would have changed the params of every existing job, and so rerun it.

Settings that went through the workflow carry the ``default:`` values already. Values that did not
(the ``seqpeft`` CLI, tests, an older run's files) get both kinds from ``with_defaults``.

Pure Python, read once per process (the Snakefile's config check imports it).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from seqpeft.util.errors import SeqpeftInputError

SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
ENTRY = "*"  # in a path: any entry of a name map (tasks.<name>, models.<name>, ...)


@functools.cache
def schema() -> dict:
    """The parsed schema (do not modify it)."""
    import yaml

    try:
        return yaml.safe_load(SCHEMA.read_text())
    except OSError as error:
        raise SeqpeftInputError(SCHEMA, f"cannot read the workflow's config schema ({type(error).__name__}: {error}).",
                                fix="run from a checkout of the repository (the schema is part of the workflow).") from error


def node(*path: str) -> dict:
    """The schema of a config key: ``node("training")``, ``node("tasks", ENTRY, "signal_peptide")``."""
    current = schema()
    for depth, key in enumerate(path):
        found = current.get("additionalProperties") if key == ENTRY else (current.get("properties") or {}).get(key)
        if not isinstance(found, dict):
            raise KeyError(f"the config schema has no key {'.'.join(path[:depth + 1])}")
        current = found
    return current


def defaults(*path: str) -> dict:
    """The defaults of the keys of a config section, nested sections filled in as the workflow's
    validation fills them: ``defaults("training")``, ``defaults("models", ENTRY)``. A fresh copy."""
    return copy.deepcopy(_defaults(tuple(path)))


@functools.cache
def _defaults(path: tuple[str, ...]) -> dict:
    return _section_defaults(node(*path))


def _section_defaults(section: dict) -> dict:
    values = {}
    for key, sub in (section.get("properties") or {}).items():
        if "default" in sub:
            value = copy.deepcopy(sub["default"])
            if isinstance(value, dict) and sub.get("properties"):
                value = {**_section_defaults(sub), **value}
        elif "library_default" in sub:
            value = copy.deepcopy(sub["library_default"])
        else:
            continue
        values[key] = value
    return values


def default(*path: str):
    """The default of one config key: ``default("results")``, ``default("models", ENTRY, "max_length")``."""
    return copy.deepcopy(_defaults(tuple(path[:-1]))[path[-1]])


def with_defaults(values: dict | None, *path: str) -> dict:
    """``values`` with the schema's defaults of section ``path`` under the keys it lacks (one level:
    a nested section given in ``values`` is taken as it is)."""
    return {**defaults(*path), **(values or {})}
