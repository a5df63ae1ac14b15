"""A config as the workflow reads it, for the commands that read one outside the DAG, and a
config problem as one line naming its key path (the Snakefile prints it in place of Snakemake's
dump of the whole schema and config)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from seqpeft.preflight.check import check_config
from seqpeft.util.errors import SeqpeftInputError


def _key_path(parts) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def config_error_message(error: BaseException) -> str | None:
    """One line naming the key path for a config problem, or None if ``error`` is not one.

    Handles ``SeqpeftInputError`` from ``check_config`` and the jsonschema ``ValidationError``
    that ``snakemake.utils.validate`` wraps in a ``WorkflowError`` (whose own message would
    print the whole schema and config; it is found as the wrapper's ``__context__``).
    """
    if isinstance(error, SeqpeftInputError):
        return str(error)
    invalid, seen = error, set()
    while invalid is not None and not (hasattr(invalid, "absolute_path") and hasattr(invalid, "validator")):
        seen.add(id(invalid))
        invalid = invalid.__cause__ or invalid.__context__
        if invalid is not None and id(invalid) in seen:
            invalid = None
    if invalid is None:
        return None
    path = list(invalid.absolute_path)
    if invalid.validator == "additionalProperties" and isinstance(invalid.instance, dict):
        allowed = sorted((invalid.schema.get("properties") or {}))
        extra = [key for key in invalid.instance if key not in allowed]
        if extra:
            close = difflib.get_close_matches(str(extra[0]), allowed, n=1)
            fix = f" Fix: did you mean {close[0]!r}?" if close else ""
            return (f"{_key_path([*path, extra[0]])}: unknown key; allowed here: {', '.join(allowed)}.{fix}")
    described = invalid.schema.get("description") if isinstance(invalid.schema, dict) else None
    hint = f" ({described.strip()})" if described else ""
    return f"{_key_path(path) or '<top level>'}: {invalid.message}{hint}"


def read_config(configfile: str | Path, cross_check: bool = True) -> tuple[dict, Path | None]:
    """A config file as the workflow sees it, for the commands that read one outside the DAG
    (plan, pin, list): the pins.yaml beside it applied, the schema's types, names and defaults,
    then (``cross_check``) ``check_config``. Every problem is a ``SeqpeftInputError`` naming the
    file, never a traceback: those commands must refuse what ``snakemake`` would refuse."""
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    from seqpeft.config.pins import merge_pins_file
    from seqpeft.config.schema import SCHEMA

    configfile = Path(configfile)
    if not configfile.is_file():
        raise SeqpeftInputError(configfile, "config file not found.", fix="pass --configfile config/config.yaml.")
    try:
        config = yaml.safe_load(configfile.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise SeqpeftInputError(configfile, f"is not valid YAML ({getattr(error, 'problem', None) or error}).",
                                fix="check the indentation and quoting there.",
                                line=mark.line + 1 if mark is not None else None) from None
    if not isinstance(config, dict):
        raise SeqpeftInputError(configfile, "is not a mapping of settings.", fix="start from config/demo.yaml.")
    pins = merge_pins_file(config, [configfile])
    try:
        validate(config, str(SCHEMA))
        if cross_check:
            check_config(config)
    except (WorkflowError, SeqpeftInputError) as error:
        message = config_error_message(error)
        if message is None:
            raise
        from seqpeft.config.pins import yaml_line

        keys = [key for key in re.split(r"[.\[\]]", message.split(":")[0].split()[0]) if key]
        raise SeqpeftInputError(configfile, f"invalid config: {message}", line=yaml_line(configfile, keys),
                                fix="see the key named above (workflow/schemas/config.schema.yaml documents it).") from None
    return config, pins
