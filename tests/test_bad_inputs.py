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
from helpers import BAD_CASES, BAD_INPUTS, demo_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = demo_config()


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


def seqpeft(*args, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The ``seqpeft`` command as a user runs it (offline)."""
    return subprocess.run([sys.executable, "-m", "seqpeft.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300, **kwargs)


def assert_clean_error(result, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, no traceback, no terminal colour codes, every fragment in stderr; the message."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output and "\x1b[" not in output, output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return result.stderr


def test_validate_checks_a_file_as_the_kind_that_reads_it(tmp_path):
    """#25.1: validate dispatches through the task-kind registry (--kind, or inferred from the header)."""
    multi = tmp_path / "multi.csv"
    multi.write_text("sequence,labels\nACGTACGT,1;0;1\nACGTAAAA,0;1;0\n")
    result = seqpeft("validate", multi)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{multi}: 2 records, valid as multi_label_classification (inferred from its first line)\n"
    assert_clean_error(seqpeft("validate", "--kind", "sequence_classification", multi),
                       f"{multi}, line 1: checked as sequence_classification (--kind): missing column(s) 'label'")
    assert_clean_error(seqpeft("validate", "--kind", "multi_label", multi), "--kind: unknown task kind 'multi_label'",
                       "multi_label_classification")
    single = tmp_path / "single.csv"
    single.write_text("sequence,label\nMKVLA,1\nMKKLL,0\n")
    assert_clean_error(seqpeft("validate", single), f"{single}, line 2: checked as sequence_classification",
                       "outside the dna alphabet")
    result = seqpeft("validate", "--alphabet", "protein", single)  # the existing option still works
    assert result.returncode == 0 and "2 records, valid as sequence_classification" in result.stdout, result.stderr
    signalp = BAD_INPUTS / "signalp_unknown_type.fasta"
    assert_clean_error(seqpeft("validate", signalp), "checked as signal_peptide (inferred from its first line)")


def test_a_fasta_starting_with_a_blank_line_is_read_alike_by_validate_and_predict(tmp_path):
    """#25.8: one rule (the first non-blank line) decides the format for validate and predict."""
    from seqpeft.data.sequences import read_sequences

    plain = tmp_path / "plain.fa"
    plain.write_text("\n\n>p1 first\nMKVL\nAAK\n>p2\nMKKLL\n")
    signalp = tmp_path / "signalp.fasta"
    signalp.write_text("\n>P1|EUKARYA|SP|0\nMKVLA\nSSSOO\n>P2|ARCHAEA|NO_SP|1\nMKV\nOOO\n")
    for path, checked in ((plain, "unlabelled FASTA"), (signalp, "signal_peptide")):
        result = seqpeft("validate", "--alphabet", "protein", path)
        assert result.returncode == 0, result.stderr
        assert f"{path}: 2 records, valid as {checked}" in result.stdout
    assert read_sequences(plain, "protein") == (["p1", "p2"], ["MKVLAAK", "MKKLL"])
    assert read_sequences(signalp, "protein") == (["P1", "P2"], ["MKVLA", "MKV"])


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


# ---------------------------------------------------------------------------------------------
# issue #25: configs and pins


def _dry_run(config_path: Path) -> tuple[int, str]:
    """``snakemake -n`` on a config: exit status and output (stdout and stderr together)."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(config_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    return result.returncode, result.stdout


def _demo_config_file(tmp_path: Path, config: dict | None = None, name: str = "config.yaml") -> Path:
    config = copy.deepcopy(config or DEMO)
    config["results"] = str(tmp_path / "results")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_a_malformed_pin_is_named_in_pins_yaml_by_snakemake_and_plan(tmp_path):
    """#25.3: the pins file and its line, not the config's schema error, and no traceback from plan."""
    config_path = _demo_config_file(tmp_path)
    pins = tmp_path / "pins.yaml"
    pins.write_text("models:\n  tiny_esm:\n    hub: acme/esm\n    revision: 1a2b3c\nsources: {}\n")
    expected = f"{pins}, line 4: models.tiny_esm: revision '1a2b3c' is not a 40-hex commit"
    code, output = _dry_run(config_path)
    assert code != 0 and expected in output, output
    assert "Invalid config" not in output and "Traceback" not in output
    assert_clean_error(seqpeft("plan", "--configfile", config_path, cwd=ROOT), expected)
    assert pins.read_text().endswith("revision: 1a2b3c\nsources: {}\n")  # left as it was


def test_a_stale_pin_is_reported_on_a_dry_run(tmp_path):
    """#25.4: a pin for a model the config does not have (renamed) is said, one line, and ignored."""
    config_path = _demo_config_file(tmp_path)
    pins = tmp_path / "pins.yaml"
    pins.write_text(yaml.safe_dump({"models": {"tiny_esm_old": {"hub": "acme/esm", "revision": "a" * 40}},
                                    "sources": {}}))
    code, output = _dry_run(config_path)
    assert code == 0, output
    assert (f"{pins}, line 2: models.tiny_esm_old pins an entry the config does not have (renamed or removed?); "
            "it is ignored.") in output
    assert output.count("tiny_esm_old") == 1


def test_an_unknown_task_kind_is_refused_by_plan_list_and_pin(tmp_path):
    """#25.3: what snakemake refuses, the commands refuse too, naming the key and its line; pin writes nothing."""
    config = copy.deepcopy(DEMO)
    config["tasks"]["demo_tf"]["kind"] = "sequence_clasification"
    config_path = _demo_config_file(tmp_path, config)
    line = next(n for n, text in enumerate(config_path.read_text().splitlines(), 1) if "sequence_clasification" in text)
    for args in (("plan", "--configfile"), ("list", "tasks", "--config"), ("pin", "--configfile")):
        message = assert_clean_error(seqpeft(*args, config_path, cwd=ROOT),
                                     f"{config_path}, line {line}: invalid config: tasks.demo_tf.kind: "
                                     "'sequence_clasification' is not one of")
        assert "Fix:" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_pin_with_nothing_to_pin_writes_no_file(tmp_path):
    """#25.3: `seqpeft pin` decides before it writes; a written pins.yaml has the umask's mode."""
    config_path = _demo_config_file(tmp_path)
    result = seqpeft("pin", "--configfile", config_path, cwd=ROOT)
    assert result.returncode == 0 and result.stdout == "nothing to pin; no pins.yaml written\n", result.stderr
    assert not (tmp_path / "pins.yaml").exists()
    from seqpeft.config.pins import write_yaml_atomic

    old = os.umask(0o022)
    try:
        write_yaml_atomic(tmp_path / "pins.yaml", {"models": {}, "sources": {}})
    finally:
        os.umask(old)
    assert (tmp_path / "pins.yaml").stat().st_mode & 0o777 == 0o644


def test_local_pointing_at_an_archive_is_refused_when_the_source_is_resolved(tmp_path):
    """#25.6: before any job, naming the key and the fix (not a missing train.csv at tokenize)."""
    import tarfile

    staged = tmp_path / "staged"
    (staged / "tf").mkdir(parents=True)
    (staged / "tf" / "train.csv").write_text("sequence,label\nACGT,0\n")
    archive = tmp_path / "gue.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(staged, arcname="GUE")
    config = copy.deepcopy(DEMO)
    config["sources"]["demo_dna"] = {"local": str(archive), "archive": "tar.xz"}
    code, output = _dry_run(_demo_config_file(tmp_path, config))
    assert code != 0 and "Traceback" not in output
    assert (f"sources.demo_dna.local: '{archive}' is a file (a tar archive), but the tasks read folders inside a "
            "pre-staged copy") in output and "Fix: unpack it and point 'local' at the unpacked folder" in output
    assert not (tmp_path / "results").exists()
    config["sources"]["demo_dna"] = {"local": str(staged), "archive": "tar.xz"}  # the unpacked folder passes this check
    check_config(config)


def test_results_naming_a_file_is_refused_before_any_job(tmp_path):
    """Corpus: `results:` pointing at an existing file (a typo, a stale output) was a NotADirectoryError traceback."""
    taken = tmp_path / "results.csv"
    taken.write_text("a,b\n")
    config = copy.deepcopy(DEMO)
    config_path = _demo_config_file(tmp_path, config)
    config = yaml.safe_load(config_path.read_text())
    config["results"] = str(taken / "demo")
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    code, output = _dry_run(config_path)
    assert code != 0 and "Traceback" not in output and "NotADirectoryError" not in output, output
    assert f"results: '{taken / 'demo'}' cannot be a folder: '{taken}' is a file." in output
    assert taken.read_text() == "a,b\n"


def test_config_and_results_paths_with_spaces_run_a_real_job(tmp_path):
    """Corpus: a project folder with spaces in its name (a shared drive's "My Project") runs a real job."""
    folder = tmp_path / "My Project"
    folder.mkdir()
    results = folder / "res ults"
    config = {**copy.deepcopy(DEMO), "results": str(results)}
    config_path = folder / "demo config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    source = results / "sources" / "demo_dna"
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", str(source), "--configfile",
                             str(config_path)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    checked = seqpeft("validate", source / "train.csv", cwd=folder)
    assert checked.returncode == 0 and "valid as sequence_classification" in checked.stdout, checked.stderr


def test_a_tab_in_the_config_is_named_with_its_line_by_the_commands(tmp_path):
    """Corpus: a tab pasted into YAML indentation; list and plan name the file and line."""
    config_path = _demo_config_file(tmp_path)
    lines = config_path.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("  demo_tf:"))
    lines[index] = "\t" + lines[index].lstrip()
    config_path.write_text("\n".join(lines) + "\n")
    for args in (("list", "tasks", "--config"), ("plan", "--configfile")):
        assert_clean_error(seqpeft(*args, config_path, cwd=ROOT),
                           f"{config_path}, line {index + 1}: is not valid YAML (found character '\\t' that cannot start "
                           "any token). Fix: check the indentation")


@pytest.mark.slow
def test_two_configs_sharing_one_results_folder_are_told(tmp_path):
    """Corpus: a copied config keeps the original's `results:`; its runs would overwrite the other's."""
    results = tmp_path / "shared results"
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    for path in (first, second):
        path.write_text(yaml.safe_dump({**copy.deepcopy(DEMO), "results": str(results)}, sort_keys=False))
    code, output = _dry_run(first)
    assert code == 0 and "is shared with config" not in output and not results.exists(), output  # a dry run claims nothing
    job = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", str(results / "sources" / "demo_dna"),
                          "--configfile", str(first)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert job.returncode == 0, job.stderr[-2000:]
    code, output = _dry_run(second)
    assert code == 0, output
    assert (f"{results}: results: is shared with config {first}, which last ran here; this run uses {second}.") in output
    assert f"Fix: give each config its own results: folder, or delete {results / '.seqpeft-config'}" in output
    code, output = _dry_run(first)
    assert code == 0 and "is shared with config" not in output, output
