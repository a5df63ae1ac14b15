"""Bad input stops a job with a message naming the file, line and fix, and leaves no output.

The malformed data corpus lives in tests/data/bad_inputs/ (expectations in helpers.BAD_CASES);
here each file goes through the user-facing paths: ``seqpeft validate`` (exit code and message),
a real Snakemake run, and the config/model checks that run before any job starts.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seqpeft.preflight.check import check_config
from seqpeft.util.errors import SeqpeftInputError
from helpers import BAD_CASES, BAD_INPUTS

ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_validate_command_exits_non_zero_naming_file_and_line(name):
    fragment, line, record = BAD_CASES[name]
    alphabet = "dna" if name.endswith(".csv") else "protein"
    result = subprocess.run([sys.executable, "-m", "seqpeft.cli", "validate", "--alphabet", alphabet, str(BAD_INPUTS / name)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert name in result.stderr and fragment in result.stderr and "Fix:" in result.stderr
    if line is not None:
        assert f"line {line}" in result.stderr


def test_bad_training_file_stops_the_dag_with_nothing_half_written(tmp_path):
    data = tmp_path / "staged"
    data.mkdir()
    good = "sequence,label\n" + "".join(f"{'ACGT' * 5},{i % 2}\n" for i in range(10))
    (data / "dev.csv").write_text(good)
    (data / "test.csv").write_text(good)
    (data / "train.csv").write_text((BAD_INPUTS / "csv_non_integer_label.csv").read_text())
    config = copy.deepcopy(DEMO)
    config["results"] = str(tmp_path / "results")
    config["sources"] = {"staged": {"local": str(data), "archive": "none"}}
    config["tasks"] = {"staged_tf": {**DEMO["tasks"]["demo_tf"], "source": "staged"}}
    config["experiments"] = [{"tasks": ["staged_tf"], "models": ["tiny_llama_dna"], "methods": ["frozen"]}]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/local", "--cores", "2",
                             "--configfile", str(config_path)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{data / 'train.csv'}, line 3: label 'positive' is not an integer" in output
    assert not list((tmp_path / "results").rglob("*.npz"))
    assert not (tmp_path / "results" / "runs").exists()


def _demo_with(**changes) -> dict:
    config = copy.deepcopy(DEMO)
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return config


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"experiments": [{"tasks": ["demo_sp"], "models": ["tiny_esm"], "methods": ["prefix_tuning"]}]},
     "prefix_tuning does not apply to model 'tiny_esm'"),
    ({"models__tiny_esm": {"path": "/nonexistent/esm", "max_length": 128}}, "models.tiny_esm.path"),
    ({"sources__demo_dna": {"local": "/nonexistent/gue"}}, "sources.demo_dna.local"),
    ({"resources": {"sizes": {"tiny": {"gpu": 1}}}}, "training.device"),
    ({"resources": {"sizes": {"tiny": {"gpu": 16}}}}, "exceed one node"),
    ({"models__tiny_esm__trust_remote_code": True, "models__tiny_esm__hub": "x/y", "models__tiny_esm__revision": "main"},
     "models.tiny_esm"),
])
def test_impossible_configs_are_refused_before_any_job(changes, fragment):
    config = _demo_with(**{k: v for k, v in changes.items()})
    with pytest.raises(SeqpeftInputError, match=None) as error:
        check_config(config)
    assert fragment in str(error.value)


def test_trust_remote_code_without_pinned_revision_is_refused_before_download(tmp_path, monkeypatch):
    import huggingface_hub

    from seqpeft.models.prepare import prepare_model

    downloads = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: downloads.append(kwargs))
    spec = {"hub": "zhihan1996/DNABERT-2-117M", "revision": "main", "trust_remote_code": True}
    with pytest.raises(SeqpeftInputError, match="dnabert2.*not a pinned commit"):
        prepare_model("dnabert2", spec, tmp_path / "dnabert2")
    assert downloads == []
    assert not (tmp_path / "dnabert2").exists()


def test_corrupt_safetensors_names_the_model_directory(tiny_model_dir, tmp_path):
    import shutil

    from seqpeft.models.families import load_backbone

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir("llama"), broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(SeqpeftInputError, match="corrupt or truncated") as error:
        load_backbone(broken)
    assert str(broken) in str(error.value)


def test_missing_model_directory_is_named(tmp_path):
    from seqpeft.models.families import load_backbone

    with pytest.raises(SeqpeftInputError, match="no config.json"):
        load_backbone(tmp_path / "nowhere")
