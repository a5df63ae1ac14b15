"""The ``seqpeft`` command as a user types it: real subprocesses on real (tiny) trained runs.

A closed pipe ends quietly, a label the model has no class for and paths given wrongly are one
line naming the file and the fix, known-harmless third-party output stays off the terminal, and a
signal-peptide run's artifacts evaluate to the run's own test metrics.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import finetune_job, motif_task
from seqpeft.training.launch import run_finetune

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
    [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}


def seqpeft(*args, cwd: Path = REPO, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqpeft.cli", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def dna_run(tmp_path_factory, tiny_model_dir):
    """A 2-class LoRA run on a tiny Llama: its directory and its test CSV."""
    root = tmp_path_factory.mktemp("cli_dna")
    model_dir = tiny_model_dir("llama")
    cache = motif_task(root, model_dir, n_train=128, n_dev=32, n_test=32)
    job = finetune_job(cache, model_dir, root / "run", method="lora", method_spec={"r": 4},
                       training={"epochs": 1, "batch_size": 32, "learning_rate": 1e-3})
    metrics = run_finetune(job)
    return root / "run", root / "data" / "test.csv", metrics


def test_closed_pipe_ends_without_traceback():
    # The reader closes its end before seqpeft writes (what `| head -1` does after its line).
    result = subprocess.run(f"{sys.executable} -m seqpeft.cli list tasks --config config/config.yaml "
                            "| (exec 0<&-; true)", shell=True, cwd=REPO, env=ENV, capture_output=True, text=True)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    result = subprocess.run(f"{sys.executable} -m seqpeft.cli list tasks --config config/config.yaml | head -1",
                            shell=True, cwd=REPO, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1 and not result.stderr, result


def test_list_kinds_names_every_registered_kind_and_its_partitions():
    from seqpeft.tasks import TASK_KINDS

    result = subprocess.run([sys.executable, "-m", "seqpeft.cli", "list", "kinds"], cwd=REPO, env=ENV,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(TASK_KINDS)
    by_kind = {line.split()[0]: line for line in lines}
    assert "sequence,labels" in by_kind["multi_label_classification"] and "t{T}v{V}" in by_kind["signal_peptide"]
    assert "sequence,target" in by_kind["regression"]


def test_evaluate_reproduces_the_run_and_prints_no_third_party_noise(dna_run):
    run_dir, test_csv, metrics = dna_run
    result = seqpeft("evaluate", "--model", run_dir / "artifacts", "--data", test_csv)
    assert result.returncode == 0, result.stderr
    printed = dict(line.split(":") for line in result.stdout.splitlines())
    assert float(printed["mcc".rjust(14)]) == pytest.approx(metrics["test"]["mcc"], abs=1e-4)
    # no weight-loading bar, no bitsandbytes "kernels" notice, no FutureWarning, no LOAD REPORT
    assert result.stderr == "", result.stderr


def test_unknown_label_names_file_line_classes_and_fix(dna_run, tmp_path):
    run_dir, test_csv, _ = dna_run
    lines = test_csv.read_text().splitlines()
    sequence = lines[1].split(",")[0]
    data = tmp_path / "three_classes.csv"
    data.write_text("\n".join([lines[0], lines[1], f"{sequence},2", lines[2]]) + "\n")
    result = seqpeft("evaluate", "--model", run_dir / "artifacts", "--data", data)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "IndexError" not in result.stderr, result.stderr
    assert f"{data}, line 3: label 2 is not a class of this model, which knows 2 classes: 0, 1" in result.stderr
    assert "Fix: code the labels as the model was trained" in result.stderr


def test_path_errors_give_command_line_advice(dna_run, tmp_path):
    run_dir, test_csv, _ = dna_run
    missing = seqpeft("evaluate", "--model", run_dir / "artifacts", "--data", "no/such.csv", cwd=tmp_path)
    assert missing.returncode == 2
    assert "no/such.csv: file not found. Fix: check the path you passed to --data" in missing.stderr
    assert "config" not in missing.stderr
    run_not_artifacts = seqpeft("predict", "--model", run_dir, "--input", test_csv, "--output", tmp_path / "p.csv")
    assert run_not_artifacts.returncode == 2
    assert f"Fix: pass --model {run_dir / 'artifacts'}" in run_not_artifacts.stderr
    assert "prepare_model" not in run_not_artifacts.stderr
    nowhere = seqpeft("evaluate", "--model", tmp_path / "nothing", "--data", test_csv)
    assert "does not exist. Fix: check the path you passed to --model" in nowhere.stderr


def test_evaluate_signal_peptide_artifacts_reproduce_the_run(tmp_path, tiny_model_dir):
    from seqpeft.tasks.demo_data import generate_source
    from seqpeft.tasks import tokenize_task

    generate_source({"synthetic": "signalp", "seed": 2, "n_per_partition": 40}, tmp_path / "data")
    fasta = tmp_path / "data" / "train_set.fasta"
    tokenize_task({"kind": "signal_peptide"}, fasta, tiny_model_dir("esm"), tmp_path / "cache.npz")
    job = finetune_job(tmp_path / "cache.npz", tiny_model_dir("esm"), tmp_path / "run", method="lora", partition="t0v1",
                       kind="signal_peptide", model_spec={"max_length": 96}, method_spec={"r": 4},
                       training={"epochs": 1, "batch_size": 16, "learning_rate": 5e-3})
    metrics = run_finetune(job)
    result = seqpeft("evaluate", "--model", tmp_path / "run" / "artifacts", "--data", fasta, "--partition", "0",
                     "--output", tmp_path / "sp.json")
    assert result.returncode == 0, result.stderr
    assert "MCC1: type vs proteins without SP" in result.stdout
    written = json.loads((tmp_path / "sp.json").read_text())
    for key, value in metrics["test"].items():
        if key == "signalp":
            for kingdom, types in value.items():
                for sp_type, cell in types.items():
                    for name, number in cell.items():
                        got = written["signalp"][kingdom][sp_type][name]
                        assert (math.isnan(number) and math.isnan(got)) or got == pytest.approx(number, abs=1e-6)
        else:
            assert written[key] == pytest.approx(value, abs=1e-5), key
    wrong = seqpeft("evaluate", "--model", tmp_path / "run" / "artifacts", "--data", fasta, "--partition", "7")
    assert wrong.returncode == 2 and "no record of partition 7" in wrong.stderr


def test_only_a_head_only_load_report_is_silenced():
    from seqpeft.util.quiet import harmless_load_report

    head = ("\x1b[1mMixtralModel LOAD REPORT\x1b[0m from: m\nKey          | Status     |  | \n"
            "-------------+------------+--+-\nscore.weight | \x1b[33mUNEXPECTED\x1b[0m |  | \n\nNotes:\n"
            "- UNEXPECTED:\tcan be ignored when loading from different task/architecture")
    assert harmless_load_report(head)
    assert not harmless_load_report(head.replace("score.weight", "layers.0.q.w "))
    missing = head.replace("Notes:", "layers.0.mlp.weight | MISSING |  | \n\nNotes:")
    assert not harmless_load_report(missing)
    assert not harmless_load_report("some other warning")
    # a new head's MISSING keys only while a transformers-head model loads (seqpeft.models.hf_head)
    from seqpeft.util.quiet import new_head_expected

    new_head = head.replace("UNEXPECTED", "MISSING")
    assert not harmless_load_report(new_head)
    with new_head_expected():
        assert harmless_load_report(new_head)
        assert harmless_load_report(new_head.replace("score.weight", "bert.pooler.dense.weight"))
        assert not harmless_load_report(missing.replace("UNEXPECTED", "MISSING"))
    assert not harmless_load_report(new_head)


def predictions(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def test_artifacts_are_relocatable(tmp_path, tiny_model_dir):
    """Copied artifacts (base model left where it was) and a moved results tree (absolute path
    gone, path relative to the artifacts intact) both predict as before, from another directory;
    a base model found nowhere is one error naming where it looked and the --model/--adapter fix."""
    import shutil

    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModel

    tree = tmp_path / "results"
    shutil.copytree(tiny_model_dir("llama"), tree / "models" / "tiny_llama")
    cache = motif_task(tmp_path / "task", tree / "models" / "tiny_llama", n_train=64, n_dev=32, n_test=32)
    run = tree / "runs" / "motif" / "tiny_llama" / "lora" / "0"
    run_finetune(finetune_job(cache, tree / "models" / "tiny_llama", run, method="lora", method_spec={"r": 4},
                              training={"epochs": 1, "batch_size": 32, "learning_rate": 1e-3}))
    test_csv = tmp_path / "task" / "data" / "test.csv"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert seqpeft("predict", "--model", run / "artifacts", "--input", test_csv, "--output", tmp_path / "a.csv").returncode == 0

    # the artifacts copied alone, used from another working directory
    copied = tmp_path / "copy" / "artifacts"
    shutil.copytree(run / "artifacts", copied)
    result = seqpeft("predict", "--model", copied, "--input", test_csv, "--output", tmp_path / "b.csv", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert predictions(tmp_path / "b.csv") == predictions(tmp_path / "a.csv")

    # plain peft: the adapter names its base model by a path that holds from any directory
    config = PeftConfig.from_pretrained(str(copied / "adapter"))
    assert Path(config.base_model_name_or_path).is_absolute()
    previous = os.getcwd()
    os.chdir(elsewhere)
    try:
        plain = PeftModel.from_pretrained(AutoModel.from_pretrained(config.base_model_name_or_path),
                                          str(copied / "adapter")).eval()
    finally:
        os.chdir(previous)
    from seqpeft.training.artifacts import load_trained

    ours = load_trained(copied)[0]
    ids = torch.randint(4, 8, (2, 12))
    with torch.no_grad():
        expected = ours.backbone(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        got = plain(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert torch.allclose(expected, got, atol=1e-5)

    # the whole results tree moved: the absolute path is gone, the relative one holds
    moved = tmp_path / "moved"
    tree.rename(moved)
    artifacts = moved / "runs" / "motif" / "tiny_llama" / "lora" / "0" / "artifacts"
    result = seqpeft("predict", "--model", artifacts, "--input", test_csv, "--output", tmp_path / "c.csv", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert predictions(tmp_path / "c.csv") == predictions(tmp_path / "a.csv")

    # copied artifacts whose base model is nowhere any more
    result = seqpeft("predict", "--model", copied, "--input", test_csv, "--output", tmp_path / "d.csv", cwd=elsewhere)
    assert result.returncode == 2
    assert "the base model the run was trained on is not at" in result.stderr
    assert f"--adapter {copied}" in result.stderr and "Traceback" not in result.stderr
    result = seqpeft("predict", "--model", moved / "models" / "tiny_llama", "--adapter", copied, "--input", test_csv,
                     "--output", tmp_path / "e.csv", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert predictions(tmp_path / "e.csv") == predictions(tmp_path / "a.csv")


# ---------------------------------------------------------------------------------------------
# issue #25: outputs, lengths and full disks


def test_predict_output_naming_a_directory_is_refused_before_the_model_loads(dna_run, tmp_path):
    """#25.7: not an IsADirectoryError traceback; the existing directory is left as it was."""
    run_dir, test_csv, _ = dna_run
    (tmp_path / "out").mkdir()
    for command, data in (("predict", "--input"), ("evaluate", "--data")):
        result = seqpeft(command, "--model", run_dir / "artifacts", data, test_csv, "--output", tmp_path / "out")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"{tmp_path / 'out'}: is a directory. Fix: pass a file name to --output" in result.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_evaluate_and_predict_say_how_many_sequences_they_truncate(dna_run, tmp_path):
    """#25.9: sequences over the run's max_length (64 tokens) are counted aloud, as the DAG's jobs do."""
    import random

    run_dir, test_csv, _ = dna_run
    rng = random.Random(0)
    rows = [("".join(rng.choice("ACGT") for _ in range(n)), i % 2) for i, n in enumerate((3000, 40, 200))]
    long_csv = tmp_path / "long.csv"
    long_csv.write_text("sequence,label\n" + "".join(f"{s},{label}\n" for s, label in rows))
    expected = f"[seqpeft] {long_csv}: 2 of 3 sequences are longer than max_length=64 tokens (the longest has "
    for command, data in (("evaluate", "--data"), ("predict", "--input")):
        extra = ("--output", tmp_path / "p.csv") if command == "predict" else ()
        result = seqpeft(command, "--model", run_dir / "artifacts", data, long_csv, *extra)
        assert result.returncode == 0, result.stderr
        assert expected in result.stderr and "are truncated to 64 tokens" in result.stderr, result.stderr
    result = seqpeft("evaluate", "--model", run_dir / "artifacts", "--data", long_csv, "--max-length", "8000")
    assert result.returncode == 0 and "truncated" not in result.stderr, result.stderr


@pytest.mark.parametrize("value", ["0", "-5", "ten"])
def test_a_non_positive_max_length_is_refused(dna_run, value):
    """#25.9: --max-length 0 was silently the run's own length."""
    run_dir, test_csv, _ = dna_run
    result = seqpeft("evaluate", "--model", run_dir / "artifacts", "--data", test_csv, "--max-length", value)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --max-length:" in result.stderr and ("positive" in result.stderr or "whole number" in result.stderr)


def test_a_full_disk_while_writing_predictions_is_one_line_and_leaves_nothing(dna_run, tmp_path):
    """Corpus: the output file system fills up (simulated by a 256-byte file-size limit, RLIMIT_FSIZE)."""
    import resource
    import signal

    run_dir, test_csv, _ = dna_run

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG, like ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))

    out = tmp_path / "out"
    out.mkdir()
    result = seqpeft("predict", "--model", run_dir / "artifacts", "--input", test_csv, "--output", out / "p.csv",
                     preexec_fn=small_disk)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"seqpeft: error: {out / 'p.csv'}: File too large. Nothing was written there. Fix: the file size limit " \
        "(ulimit -f)" in result.stderr
    assert list(out.iterdir()) == []  # no partial predictions, no temporary file


def test_predict_refuses_to_overwrite_its_input(dna_run, tmp_path):
    """Corpus: --output naming the --input file would replace the sequences with predictions."""
    import shutil

    run_dir, test_csv, _ = dna_run
    data = tmp_path / "seqs.csv"
    shutil.copy(test_csv, data)
    before = data.read_bytes()
    result = seqpeft("predict", "--model", run_dir / "artifacts", "--input", data, "--output", tmp_path / "." / "seqs.csv")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "seqs.csv: is also the input file" in result.stderr and "Fix: pass another file name to --output" in result.stderr
    assert data.read_bytes() == before


def _without_root_file_powers() -> None:
    """In a child about to exec: drop the capabilities that let root ignore file modes
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) from its bounding set, so that a mode 0555
    folder stops it as it stops any user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_a_read_only_output_folder_is_one_line_and_leaves_nothing(dna_run, tmp_path):
    """Corpus: a folder the user may not write to (a shared project folder). Root, whom a mode
    does not stop, runs the command without its file-mode capabilities."""
    run_dir, test_csv, _ = dna_run
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o555)
    try:
        result = seqpeft("predict", "--model", run_dir / "artifacts", "--input", test_csv, "--output",
                         shared / "p.csv", preexec_fn=_without_root_file_powers if os.geteuid() == 0 else None)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"seqpeft: error: {shared / 'p.csv'}: Permission denied. Nothing was written there." in result.stderr
        assert "Fix: write to a folder you may write to" in result.stderr
        assert list(shared.iterdir()) == []
    finally:
        shared.chmod(0o755)
