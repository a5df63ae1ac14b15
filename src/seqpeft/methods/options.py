"""What a method entry of the config may set, known before any job runs (``seqpeft.preflight.check.check_config``).

A misspelt option (``lora_alpah``) or one that peft refuses on a model (LoRA dropout on Mixtral's
experts) would otherwise pass the dry run and fail inside every job of the variant, once per
retry. The options a method accepts are its peft config class's dataclass fields and seqpeft's
own arguments (``seqpeft.methods.registry.Method.options``).

Pure Python: peft's fields are read from its source with ``ast``, since importing peft (and with
it torch) would cost seconds in every job, each of which parses the workflow.
"""

from __future__ import annotations

import functools
from pathlib import Path

from seqpeft.methods.registry import Method

# peft config fields that seqpeft sets itself (MethodContext.peft_config) or that describe a saved
# adapter rather than a method: an entry setting one would clash or be ignored.
PEFT_FIELDS_SET_BY_SEQPEFT = ("task_type", "peft_type", "auto_mapping", "base_model_name_or_path", "revision",
                              "inference_mode", "peft_version")


@functools.cache
def peft_config_fields() -> dict[str, frozenset[str]]:
    """Every peft config class of the installed peft and its dataclass fields (inherited ones
    included), read from peft's source with ``ast``: the Snakefile checks method options while
    parsing, where importing peft (and with it torch) would cost seconds in every job.
    tests/test_method_options.py holds this equal to the imported classes' fields."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("peft")
    if spec is None or not spec.submodule_search_locations:
        return {}
    root = Path(list(spec.submodule_search_locations)[0])
    classes: dict[str, tuple[list[str], list[str]]] = {}
    for path in [root / "config.py", *sorted(root.glob("tuners/*.py")), *sorted(root.glob("tuners/*/config.py"))]:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                bases = [base.id if isinstance(base, ast.Name) else getattr(base, "attr", "") for base in node.bases]
                own = [item.target.id for item in node.body
                       if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)]
                classes[node.name] = (bases, own)

    def fields_of(name: str, seen: frozenset = frozenset()) -> set[str]:
        if name not in classes or name in seen:
            return set()
        bases, own = classes[name]
        return set(own).union(*(fields_of(base, seen | {name}) for base in bases))

    return {name: frozenset(fields_of(name)) for name in classes
            if name.endswith("Config") and "PeftConfig" in _ancestors(name, classes)}


def _ancestors(name: str, classes: dict) -> set[str]:
    found, todo = set(), [name]
    while todo:
        for base in classes.get(todo.pop(), ([], []))[0]:
            if base not in found:
                found.add(base)
                todo.append(base)
    return found


def accepted_options(method: Method) -> frozenset[str] | None:
    """The options a method entry may set for ``method``; None when peft is not installed (not checked)."""
    own = set(method.options)
    if method.peft_config is None:
        return frozenset(own)
    fields = peft_config_fields()
    if not fields:
        return None
    return frozenset(own | (fields.get(method.peft_config, frozenset()) - set(PEFT_FIELDS_SET_BY_SEQPEFT)))


def option_problem(method: Method, args: dict) -> tuple[str | None, str, str] | None:
    """(option, problem, fix) for the first thing in a method entry's arguments that ``method``
    does not accept, or None. The option is None when the entry as a whole is wrong."""
    import difflib

    if method.peft_config is not None:
        known = peft_config_fields()
        if known and method.peft_config not in known:
            lower = {name.lower(): name for name in known}
            close = difflib.get_close_matches(method.peft_config.lower(), sorted(lower), n=1)
            return (None, f"peft has no config class {method.peft_config!r}.",
                    f"did you mean {lower[close[0]]!r}?" if close else "name a peft config class, e.g. LoHaConfig, LoKrConfig.")
    accepted = accepted_options(method)
    if accepted is None:
        return None
    what = f"{method.name!r}" + (f" ({method.peft_config} fields and seqpeft's own arguments)"
                                 if method.peft_config and method.options else
                                 f" ({method.peft_config} fields)" if method.peft_config else "")
    for key in args:
        if key in PEFT_FIELDS_SET_BY_SEQPEFT and method.peft_config is not None:
            return (key, f"is set by seqpeft, not by a method entry (method {what}).", f"delete {key}.")
        if key not in accepted:
            close = difflib.get_close_matches(str(key), sorted(accepted), n=1)
            listing = ", ".join(sorted(accepted)) or "none"
            return (key, f"unknown option of method {what}.",
                    f"did you mean {close[0]!r}?" if close else f"options it accepts: {listing}.")
    if "LoraConfig" in (method.peft_config or "") and args.get("target_parameters") and float(args.get("lora_dropout") or 0):
        return ("lora_dropout", "peft's LoRA on target_parameters has no dropout (it refuses lora_dropout != 0).",
                "set lora_dropout: 0, or drop target_parameters.")
    return method.check_args(args) if method.check_args else None


def pairing_problem(method: Method, args: dict, family) -> tuple[str, str, str] | None:
    """(option, problem, fix) when a method entry cannot work on a model of ``family``
    (a ``seqpeft.models.families.ModelFamily``), or None."""
    if method.on_family_parameters and family.lora_target_parameters and "target_parameters" not in args \
            and float(args.get("lora_dropout") or 0):
        return ("lora_dropout", f"is {args['lora_dropout']}, but on {family.name} models seqpeft puts LoRA on the "
                f"experts through peft's target_parameters ({', '.join(family.lora_target_parameters)}), where peft "
                "refuses dropout.", "set lora_dropout: 0 for this model (a separate method variant), or "
                "target_parameters: [] to keep LoRA off the experts.")
    return None
