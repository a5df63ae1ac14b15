"""Config defaults have one home, the workflow's JSON schema (seqpeft.config.schema): the settings classes
have none, and no library code spells a schema default again."""

from __future__ import annotations

import ast
import copy
import dataclasses
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from helpers import finetune_job, training_settings
from seqpeft.config import schema
from seqpeft.methods.dsp import DspSettings
from seqpeft.config.schema import ENTRY, defaults, with_defaults
from seqpeft.config.settings import TrainingConfig
from seqpeft.tasks.signal_peptide.regions import SignalPeptideSettings
from seqpeft.config.tune_settings import HpoSettings, PrunerSettings, StudySettings

SRC = Path(schema.__file__).resolve().parents[1]  # the package: src/seqpeft
DEMO = SRC.parents[1] / "config" / "demo.yaml"
SETTINGS_CLASSES = [TrainingConfig, SignalPeptideSettings, DspSettings, HpoSettings, PrunerSettings, StudySettings]


def _defaulted_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda cls: cls.__name__)
def test_settings_classes_have_no_defaults(cls):
    assert _defaulted_fields(cls) == [], f"{cls.__name__} defaults {_defaulted_fields(cls)}: their home is the schema"


def test_every_training_key_has_one_default_in_the_schema():
    keys = set(schema.schema()["$defs"]["training_keys"]["properties"])
    assert {f.name for f in dataclasses.fields(TrainingConfig)} == keys
    assert set(defaults("training")) == keys  # default: or library_default:, every key
    for key, sub in schema.node("training")["properties"].items():
        assert ("default" in sub) != ("library_default" in sub), f"training.{key} has both kinds of default"
    # a method's overrides carry no defaults: they would silently replace the global values
    assert not any("default" in sub or "library_default" in sub
                   for sub in schema.schema()["$defs"]["training_keys"]["properties"].values())


def test_settings_built_from_the_schema_defaults_alone():
    training = TrainingConfig.from_dict(defaults("training"))
    assert dataclasses.asdict(training) == defaults("training")
    assert TrainingConfig.from_dict({}) == training  # what the CLI and tests get
    assert dataclasses.asdict(SignalPeptideSettings.from_task({})) == defaults("tasks", ENTRY, "signal_peptide")
    dsp = DspSettings.from_dict({"encoding": "bbpe", "domain": "d"})
    assert (dsp.template, dsp.max_length, dsp.on_too_long) == (
        defaults("tasks", ENTRY)["dsp_template"], *[defaults("models", ENTRY)[k] for k in ("max_length", "on_too_long")])
    assert HpoSettings.from_dict({}).trials == defaults("hpo")["trials"]


def test_defaults_are_what_the_workflow_fills_in():
    """``default:`` values reach the config through the Snakefile's validation; ``library_default:``
    values never do (they would change existing jobs' params), and the library adds them."""
    config = yaml.safe_load(DEMO.read_text())
    for section in ("training", "hpo"):
        config.pop(section, None)
    config["tasks"]["demo_sp"]["signal_peptide"] = {}
    validate(config, str(schema.SCHEMA))
    filled = {key for key, sub in schema.node("training")["properties"].items() if "default" in sub}
    assert config["training"] == {key: value for key, value in defaults("training").items() if key in filled}
    filled = {key for key, sub in schema.node("tasks", ENTRY, "signal_peptide")["properties"].items() if "default" in sub}
    assert config["tasks"]["demo_sp"]["signal_peptide"] == {
        key: value for key, value in defaults("tasks", ENTRY, "signal_peptide").items() if key in filled}
    assert "constraints" not in filled and defaults("tasks", ENTRY, "signal_peptide")["constraints"] == "hard"
    assert config["hpo"] == defaults("hpo")
    assert all("on_too_long" not in spec for spec in config["models"].values())
    assert TrainingConfig.from_dict(config["training"]) == TrainingConfig.from_dict({})


def test_library_defaults_are_valid_settings():
    """Each ``library_default`` passes the schema it is the default of (and the schema stays a
    valid JSON schema with the extra keyword)."""
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema.schema())
    config = yaml.safe_load(DEMO.read_text())
    config["training"] = defaults("training")
    config["resources"] = {**config.get("resources", {}), "sizes": defaults("resources", "sizes")}
    for section in ("tasks", "models", "methods"):
        config[section] = {name: with_defaults(spec, section, ENTRY) for name, spec in config[section].items()}
    for spec in config["models"].values():
        if "build" in spec:
            spec["build"] = with_defaults(spec["build"], "models", ENTRY, "build")
    for name, spec in config["tasks"].items():
        if spec["kind"] == "signal_peptide":
            spec["signal_peptide"] = defaults("tasks", ENTRY, "signal_peptide")
    validate(config, str(schema.SCHEMA))
    config["training"]["distributed"] = "ring"  # what a wrong library_default would do
    with pytest.raises(WorkflowError):
        validate(config, str(schema.SCHEMA))


def test_defaults_are_fresh_copies():
    first = defaults("training")
    first["optimizer_args"]["betas"] = [0.9, 0.99]
    assert defaults("training")["optimizer_args"] == {}
    assert schema.node("training")["properties"]["optimizer_args"]["default"] == {}


def test_test_jobs_get_the_schema_defaults():
    job = finetune_job(Path("c.npz"), Path("m"), Path("o"), training={"epochs": 2})
    assert job.training == {**defaults("training"), "epochs": 2} == training_settings({"epochs": 2})
    with pytest.raises(AssertionError, match="unknown training settings"):
        training_settings({"epoch": 2})


def _schema_defaults() -> dict[str, list]:
    """Every key the schema gives a (non-section) default, with the values it gets."""
    found: dict[str, list] = {}

    def walk(node):
        if isinstance(node, dict):
            for key, sub in (node.get("properties") or {}).items():
                for kind in ("default", "library_default"):
                    if isinstance(sub, dict) and kind in sub and not isinstance(sub[kind], dict):
                        found.setdefault(key, []).append(sub[kind])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(copy.deepcopy(schema.schema()))
    return found


def _same(value, values: list) -> bool:
    return any(type(value) is type(other) and value == other for other in values)


def _literal(node):
    try:
        return True, ast.literal_eval(node)
    except ValueError:
        return False, None


def test_no_library_code_spells_a_schema_default_again():
    """``spec.get("max_length", 512)``, ``spec.get("results") or "results"``, ``epochs: int = 10`` in a
    class: a second home of a schema default, which drifts from it."""
    schema_defaults = _schema_defaults()
    assert schema_defaults["max_length"] == [512] and schema_defaults["on_too_long"] == ["truncate"]
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            key = value = None
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)):
                key, (is_literal, value) = node.args[0].value, _literal(node.args[1])
            elif (isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and len(node.values) == 2
                  and isinstance(got := node.values[0], ast.Call) and isinstance(got.func, ast.Attribute)
                  and got.func.attr == "get" and len(got.args) == 1 and isinstance(got.args[0], ast.Constant)):
                key, (is_literal, value) = got.args[0].value, _literal(node.values[1])  # spec.get("key") or 512
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                        is_literal, literal = _literal(item.value)
                        if is_literal and _same(literal, schema_defaults.get(item.target.id, [])):
                            found.append(f"{path.name}:{item.lineno} {node.name}.{item.target.id} = {literal!r}")
                continue
            else:
                continue
            if is_literal and _same(value, schema_defaults.get(key, [])):
                found.append(f"{path.name}:{node.lineno} .get({key!r}, {value!r})")
    assert found == [], "defaults repeated outside the schema (read them with seqpeft.config.schema):\n" + "\n".join(found)
