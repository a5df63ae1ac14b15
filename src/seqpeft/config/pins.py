"""Pins: every hub model at a commit, every downloaded source at a checksum, before a GPU is used.

A config entry may leave a hub model's ``revision`` or a source's checksum (``sha256`` /
``git_blob``) unset: it is then *unpinned*. ``seqpeft pin`` (run once, on a machine with internet)
resolves each unpinned entry, a model to the commit its branch (``main`` unless the entry says
``branch:``) points to now, a source to the sha256 of what its url serves now, and writes them to
``pins.yaml`` next to the config for the user to review and commit. The workflow merges that file
into the config when it loads (an entry's pin applies only while the entry still names the same
repository or url and sets no revision/checksum of its own).

Until an entry is pinned, the workflow lists it (one line each, also on ``snakemake -n``) and the
jobs that would fetch or train on it refuse to run, unless the config says ``allow_unpinned:
true``; then what was actually used (the commit, the sha256) is recorded next to the download,
in each run's ``metrics.json`` and in ``results/pins.resolved.yaml``.

Standard library (and PyYAML) only at import: the workflow imports this module while parsing.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.schema import ENTRY, default

PINS_FILENAME = "pins.yaml"
# Written by prepare_model into a hub model's directory, and by download_source into a source's.
MODEL_RECORD = "seqpeft-pin.json"
SOURCE_RECORD = ".seqpeft-source.json"
DEFAULT_BRANCH = default("models", ENTRY, "branch")  # resolved while a hub model has no revision
_HEADER = """\
# Pins resolved by `seqpeft pin`: review, then commit this file beside the config.
# The workflow merges it into the config it sits next to; an entry applies only while the config
# entry still names the same hub repository / url and sets no revision / checksum itself.
"""


@dataclass(frozen=True)
class Unpinned:
    kind: str  # "model" or "source"
    name: str
    where: str  # the hub repository or url
    branch: str = DEFAULT_BRANCH

    def line(self) -> str:
        if self.kind == "model":
            return (f"unpinned model {self.name}: {self.where} has no revision "
                    f"(the commit of its branch {self.branch!r} would be used)")
        return f"unpinned source {self.name}: {self.where} has no sha256 or git_blob"


# ---------------------------------------------------------------------------------------------
# which entries are unpinned


def used_entries(config: dict) -> tuple[set[str], set[str]]:
    """The models and the sources the experiments of ``config`` use."""
    models: set[str] = set()
    tasks: set[str] = set()
    for block in config.get("experiments") or []:
        models.update((block or {}).get("models") or [])
        tasks.update((block or {}).get("tasks") or [])
    all_tasks = config.get("tasks") or {}
    sources = {(all_tasks.get(task) or {}).get("source") for task in tasks} - {None}
    return models, sources


def model_is_unpinned(spec: dict) -> bool:
    return bool(spec.get("hub")) and not spec.get("revision")


def source_is_unpinned(spec: dict) -> bool:
    return (spec.get("url") is not None and spec.get("local") is None
            and not spec.get("sha256") and not spec.get("git_blob"))


def unpinned_entries(config: dict, used_only: bool = True) -> list[Unpinned]:
    """Hub models without a revision and downloaded sources without a checksum (by default only
    those the experiments use), models first, each in config order."""
    used_models, used_sources = used_entries(config)
    found = []
    for name, spec in (config.get("models") or {}).items():
        spec = spec or {}
        if model_is_unpinned(spec) and (not used_only or name in used_models):
            found.append(Unpinned("model", name, str(spec["hub"]), str(spec.get("branch") or DEFAULT_BRANCH)))
    for name, spec in (config.get("sources") or {}).items():
        spec = spec or {}
        if source_is_unpinned(spec) and (not used_only or name in used_sources):
            found.append(Unpinned("source", name, str(spec["url"])))
    return found


def allow_unpinned(config: dict) -> bool:
    return bool(config["allow_unpinned"])  # the schema defaults it


def refuse_unpinned(config: dict, kind: str, name: str, spec: dict) -> None:
    """Raise unless ``spec`` is pinned or the config allows unpinned entries (job-side guard)."""
    unpinned = model_is_unpinned(spec) if kind == "model" else source_is_unpinned(spec)
    if unpinned and not allow_unpinned(config):
        what = "revision" if kind == "model" else "sha256 or git_blob"
        raise SeqpeftInputError(
            f"{kind}s.{name}", f"is not pinned (no {what}), so this job does not run.",
            fix="run `seqpeft pin` on a machine with internet and review/commit config/pins.yaml, set the "
                f"{what} yourself, or set allow_unpinned: true (what is used is then recorded).")


# ---------------------------------------------------------------------------------------------
# the pins file


def pins_path(configfile: str | Path) -> Path:
    return Path(configfile).resolve().parent / PINS_FILENAME


_PIN_FIELDS = {"models": ("revision", 40, "a 40-hex commit (seqpeft pin resolves it)"),
               "sources": ("sha256", 64, "a 64-hex sha256 digest (seqpeft pin computes it)")}


def yaml_line(path: str | Path, keys: list[str]) -> int | None:
    """The 1-based line of the value at ``keys`` in a YAML file (of the deepest key found), so
    that an error in a hand-edited file points at the line to fix."""
    import yaml

    try:
        node = yaml.compose(Path(path).read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    line = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def load_pins(path: str | Path) -> dict:
    """The pins file, each entry checked (a malformed commit or digest names pins.yaml and its line)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        return {}
    try:
        pins = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SeqpeftInputError(path, f"is not valid YAML ({error}).", fix="fix it or delete it and run `seqpeft pin` again.") from None
    if not isinstance(pins, dict) or not all(isinstance(pins.get(k) or {}, dict) for k in ("models", "sources")):
        raise SeqpeftInputError(path, "must be a mapping with 'models' and 'sources' mappings.",
                                fix="delete it and run `seqpeft pin` again.")
    for section, (key, width, what) in _PIN_FIELDS.items():
        for name, entry in (pins.get(section) or {}).items():
            value = entry.get(key) if isinstance(entry, dict) else None
            if not isinstance(value, str) or len(value) != width or any(c not in "0123456789abcdef" for c in value):
                shown = f"{key} {value!r} is not" if isinstance(entry, dict) else "is not a mapping with"
                raise SeqpeftInputError(
                    path, f"{section}.{name}: {shown} {what}.", line=yaml_line(path, [section, str(name), key]),
                    fix="correct it, or delete the entry and run `seqpeft pin` again.")
    return pins


def stale_pins(config: dict, pins: dict, path: str | Path) -> list[str]:
    """One line per pin that applies to nothing: its entry is gone from the config (renamed?) or
    now names another repository / url (the pin was resolved for the old one)."""
    notes = []
    for section, where in (("models", "hub"), ("sources", "url")):
        entries = config.get(section) or {}
        for name, pin in (pins.get(section) or {}).items():
            spec = entries.get(name)
            line = yaml_line(path, [section, str(name)])
            at = f"{path}, line {line}" if line else str(path)
            if not isinstance(spec, dict):
                notes.append(f"{at}: {section}.{name} pins an entry the config does not have (renamed or removed?); "
                             "it is ignored. Fix: rename or delete it in pins.yaml.")
            elif pin.get(where) != spec.get(where):
                notes.append(f"{at}: {section}.{name} was pinned for {where} {pin.get(where)!r} but the config "
                             f"names {spec.get(where)!r}; it is ignored. Fix: run `seqpeft pin` again, or delete it.")
    return notes


def apply_pins(config: dict, pins: dict) -> list[str]:
    """Fill unset revisions / checksums of ``config`` from ``pins`` (in place); the names applied."""
    applied = []
    models = config.get("models") or {}
    for name, pin in (pins.get("models") or {}).items():
        spec = models.get(name)
        if isinstance(spec, dict) and model_is_unpinned(spec) and pin.get("hub") == spec.get("hub") and pin.get("revision"):
            spec["revision"] = str(pin["revision"])
            applied.append(f"models.{name}")
    sources = config.get("sources") or {}
    for name, pin in (pins.get("sources") or {}).items():
        spec = sources.get(name)
        if isinstance(spec, dict) and source_is_unpinned(spec) and pin.get("url") == spec.get("url") and pin.get("sha256"):
            spec["sha256"] = str(pin["sha256"])
            applied.append(f"sources.{name}")
    return applied


def merge_pins_file(config: dict, configfiles: Iterable[str | Path], warn=None) -> Path | None:
    """Apply the ``pins.yaml`` beside the last config file, if there is one; its path or None.
    Pins that apply to nothing (``stale_pins``) are passed to ``warn`` (default: stderr)."""
    import sys

    configfiles = [Path(f) for f in configfiles]
    if not configfiles:
        return None
    path = pins_path(configfiles[-1])
    if not path.is_file():
        return None
    pins = load_pins(path)
    for note in stale_pins(config, pins, path):
        (warn or (lambda line: print(line, file=sys.stderr)))(note)
    apply_pins(config, pins)
    return path


def write_yaml_atomic(path: Path, data: dict, header: str = "") -> None:
    """Atomically, with the permissions the umask gives (a pins file is meant to be committed)."""
    import yaml

    from seqpeft.util.atomic import write_text_atomic

    write_text_atomic(path, header + yaml.safe_dump(data, sort_keys=True, default_flow_style=False))


# ---------------------------------------------------------------------------------------------
# resolving (network)


def resolve_model(hub: str, branch: str = DEFAULT_BRANCH) -> str:
    """The commit a hub repository's branch points to now (huggingface_hub's model info)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        commit = HfApi().model_info(hub, revision=branch).sha
    except OfflineModeIsEnabled:
        raise SeqpeftInputError(hub, f"cannot resolve branch {branch!r}: HF_HUB_OFFLINE is set.",
                                fix="run `seqpeft pin` (or this job) with HF_HUB_OFFLINE=0 on a machine with internet.") from None
    except HfHubHTTPError as error:
        first = str(error).strip().splitlines()[0]
        raise SeqpeftInputError(hub, f"cannot resolve branch {branch!r} on the Hugging Face Hub ({first}).",
                                fix="check the repository id and branch, and for gated repositories accept the "
                                    "licence and `huggingface-cli login`.") from None
    except Exception as error:  # noqa: BLE001 - httpx connection errors and the like: the network
        raise SeqpeftInputError(hub, f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} "
                                f"({type(error).__name__}: {error}).",
                                fix="check the network (proxy, HF_ENDPOINT) and try again.") from None
    if not commit or len(commit) != 40:
        raise SeqpeftInputError(hub, f"the hub returned no commit for branch {branch!r}.", fix="try again later.")
    return commit


def resolve_source(spec: dict) -> str:
    """The sha256 of what a source's url serves now (downloaded to a temporary file)."""
    from seqpeft.data.download import download, sha256_of

    with tempfile.TemporaryDirectory(prefix="seqpeft-pin-") as tmp:
        path = download(spec["url"], Path(tmp) / "download", verify=False)
        return sha256_of(path)


def pin_config(configfile: str | Path, used_only: bool = True, log=print) -> tuple[Path, dict]:
    """``seqpeft pin``: resolve the unpinned entries of a config (pins.yaml already applied) and
    merge them into the pins.yaml next to it. Returns the file and the new pins."""
    import yaml

    configfile = Path(configfile)
    if not configfile.is_file():
        raise SeqpeftInputError(configfile, "config file not found.", fix="pass --configfile config/config.yaml.")
    config = yaml.safe_load(configfile.read_text()) or {}
    path = pins_path(configfile)
    pins = load_pins(path)
    apply_pins(config, pins)
    new: dict[str, dict] = {"models": {}, "sources": {}}
    for entry in unpinned_entries(config, used_only=used_only):
        spec = config[f"{entry.kind}s"][entry.name]
        if entry.kind == "model":
            commit = resolve_model(entry.where, entry.branch)
            new["models"][entry.name] = {"hub": entry.where, "branch": entry.branch, "revision": commit}
            log(f"models.{entry.name}: {entry.where}@{entry.branch} -> {commit}")
        else:
            digest = resolve_source(spec)
            new["sources"][entry.name] = {"url": entry.where, "sha256": digest}
            log(f"sources.{entry.name}: {entry.where} -> sha256 {digest}")
    merged = {kind: {**(pins.get(kind) or {}), **new[kind]} for kind in ("models", "sources")}
    if new["models"] or new["sources"]:  # nothing new: no file written or rewritten
        write_yaml_atomic(path, merged, _HEADER)
    return path, new


# ---------------------------------------------------------------------------------------------
# records of what an allow_unpinned run actually used


def write_record(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_record(directory: str | Path, name: str) -> dict | None:
    path = Path(directory) / name
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def model_revision_used(model_dir: str | Path) -> dict[str, Any]:
    """What a prepared hub model was downloaded at (``{}`` for built or local models)."""
    record = read_record(model_dir, MODEL_RECORD)
    return {"model_hub": record["hub"], "model_revision": record["revision"],
            "model_pinned": bool(record.get("pinned"))} if record else {}


def add_revision_to_metrics(metrics_path: str | Path, model_dir: str | Path) -> None:
    """Add the commit a run's model was downloaded at to its metrics.json (atomically)."""
    used = model_revision_used(model_dir)
    if not used:
        return
    metrics_path = Path(metrics_path)
    metrics = json.loads(metrics_path.read_text())
    metrics.update(used)
    tmp = metrics_path.with_name(f".{metrics_path.name}.tmp")
    tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    os.replace(tmp, metrics_path)


def resolved_pins_inputs(config: dict) -> dict[str, str]:
    """The resolved_pins rule's inputs: ``model_<name>`` / ``source_<name>`` -> the directory of
    every hub model and downloaded source the experiments use."""
    from seqpeft.config.jobs import download_sources
    from seqpeft.config.paths import model_dir, source_dir

    models, sources = used_entries(config)
    downloaded = set(download_sources(config))
    inputs = {f"model_{m}": model_dir(config, m) for m in sorted(models) if (config["models"][m] or {}).get("hub")}
    inputs.update({f"source_{s}": source_dir(config, s) for s in sorted(sources) if s in downloaded})
    return inputs


def pins_outputs(config: dict) -> list[str]:
    """``results/pins.resolved.yaml`` when the config allows unpinned entries, else nothing."""
    from seqpeft.config.paths import results_dir

    return [f"{results_dir(config)}/pins.resolved.yaml"] if allow_unpinned(config) else []


def write_resolved(out: str | Path, model_dirs: dict[str, str], source_dirs: dict[str, str]) -> dict:
    """``results/pins.resolved.yaml``: the commit of every hub model and the checksums of every
    downloaded source as used by this run, pinned or not (a ready-made pins file)."""
    resolved: dict[str, dict] = {"models": {}, "sources": {}}
    for name, directory in sorted(model_dirs.items()):
        record = read_record(directory, MODEL_RECORD)
        if record:
            resolved["models"][name] = record
    for name, directory in sorted(source_dirs.items()):
        record = read_record(directory, SOURCE_RECORD)
        if record:
            resolved["sources"][name] = record
    write_yaml_atomic(Path(out), resolved, "# What this run used (written by the workflow; allow_unpinned: true).\n")
    return resolved
