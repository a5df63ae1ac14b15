"""Helpers the test modules share (test modules never import each other, nor conftest):
the job factory, the dry-run job parser, the malformed-input corpus, ../shared material."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from seqpeft.models.families import FAMILIES
from seqpeft.config.schema import defaults
from seqpeft.config.settings import FinetuneJob, TrainingConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BAD_INPUTS = Path(__file__).resolve().parent / "data" / "bad_inputs"
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "seed": 0}
# Layer widths that every bitsandbytes 4-bit kernel takes (seqpeft.methods.qlora.kernels_accept): QLoRA
# tests use them so that every Linear layer is quantized; TINY's widths leave most unquantized.
QLORA_TINY = {"hidden_size": 64, "intermediate_size": 128}
# the tokenizer a tiny model of each registered family is built with: ESM's own, else the nucleotide one
TOKENIZER_OF_FAMILY = {name: "esm" if name == "esm" else "nucleotide" for name in FAMILIES}


def shared_path(relative: str) -> Path:
    """A file under ../shared; fails (not skips) under CI when it is missing."""
    path = SHARED / relative
    if not path.exists():
        message = f"{path} is missing (../shared must sit beside the checkout)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def training_settings(overrides: dict | None = None) -> dict:
    """The one way tests make a job's ``training`` settings: every default of the config schema's
    ``training`` section (``seqpeft.config.schema``, their only home), then ``overrides``."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - {f.name for f in fields(TrainingConfig)}
    assert not unknown, f"unknown training settings {unknown}"
    return {**defaults("training"), **overrides}


def finetune_job(cache_path: Path, model_dir: Path, out_dir: Path, *, method: str = "full", partition: str = "0",
                 kind: str = "sequence_classification", task: str = "demo", model: str = "tiny",
                 model_spec: dict | None = None, method_spec: dict | None = None, training: dict | None = None,
                 task_spec: dict | None = None, threads: int = 1, **extra) -> FinetuneJob:
    """The one way tests build a ``FinetuneJob``: what a test does not set is what the workflow
    would pass for a small model (max_length 64, the schema's training defaults)."""
    return FinetuneJob(task=task, model=model, method=method, partition=str(partition),
                       task_spec=task_spec if task_spec is not None else {"kind": kind},
                       model_spec=model_spec if model_spec is not None else {"max_length": 64},
                       method_spec=method_spec or {}, training=training_settings(training), cache_path=Path(cache_path),
                       model_dir=Path(model_dir), out_dir=Path(out_dir), threads=threads, **extra)


# The network made unreachable (proxies pointing at a closed port, Hugging Face offline): any
# attempt of a dry run or rule to download fails the test.
OFFLINE = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "",
    "NO_PROXY": "",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def snakemake_cmd(*args: str | Path, workdir: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    if workdir is not None:
        cmd += ["--directory", str(workdir)]
    return cmd + [str(a) for a in args]


def start(*args: str | Path, workdir: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(snakemake_cmd(*args, workdir=workdir), cwd=REPO, env={**os.environ, **OFFLINE},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def run(*args: str | Path, workdir: Path | None = None) -> tuple[int, str]:
    return finish(start(*args, workdir=workdir))


def job_stats(output: str) -> dict[str, int]:
    """The `Job stats` table of a dry run, as {rule: count}."""
    match = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+(\d+)", output, re.S)
    assert match, f"no Job stats table in output:\n{output[-3000:]}"
    stats = {}
    for line in match.group(1).splitlines():
        rule, count = line.split()
        stats[rule] = int(count)
    assert sum(stats.values()) == int(match.group(2))
    return stats


# ---------------------------------------------------------------------------------------------
# Corpus of malformed files: file -> (fragment of the message, line, record)

BAD_CASES: dict[str, tuple[str, int | None, str | None]] = {
    "csv_empty_file.csv": ("file is empty", None, None),
    "csv_header_only.csv": ("no data rows", None, None),
    "csv_missing_label_column.csv": ("missing column(s) 'label'; found columns: 'sequence', 'class'", 1, None),
    "csv_missing_sequence_column.csv": ("missing column(s) 'sequence'; found columns: 'seq', 'label'", 1, None),
    "csv_empty_sequence.csv": ("empty sequence", 3, None),
    "csv_missing_label.csv": ("missing label", 4, None),
    "csv_non_integer_label.csv": ("label 'positive' is not an integer", 3, None),
    "csv_float_label.csv": ("label '0.5' is not an integer", 3, None),
    "csv_negative_label.csv": ("label -1 is negative", 4, None),
    "csv_letters_outside_dna_alphabet.csv": ("outside the dna alphabet ACGTN: 'U', 'X'", 3, None),
    "csv_duplicate_id.csv": ("duplicate id 'a' (first used on line 2)", 4, "a"),
    "csv_row_with_extra_field.csv": ("row has 3 field(s) but the header has 2", 3, None),
    "csv_blank_line_between_rows.csv": ("blank line between data rows", 3, None),
    "csv_unmatched_quote.csv": ("is not valid CSV", 2, None),
    "signalp_empty_file.fasta": ("file is empty", None, None),
    "signalp_header_missing_fields.fasta": ("does not have the 4 fields", 4, "P2"),
    "signalp_unknown_kingdom.fasta": ("unknown kingdom 'BACTERIA'. Fix: use one of EUKARYA, ARCHAEA", 4, "P2"),
    "signalp_unknown_type.fasta": ("unknown signal peptide type 'SEC'. Fix: use one of NO_SP, SP, LIPO", 4, "P2"),
    "signalp_unknown_partition.fasta": ("unknown partition '3'. Fix: use one of 0, 1, 2", 4, "P2"),
    "signalp_letters_outside_protein_alphabet.fasta": ("outside the protein alphabet", 5, "P2"),
    "signalp_label_length_mismatch.fasta": ("label line has 4 letters but the sequence has 5", 6, "P2"),
    "signalp_label_letters_outside_alphabet.fasta": ("label line contains letters outside IOMSTLP: 'X'", 6, "P2"),
    "signalp_duplicate_accession.fasta": ("duplicate accession 'P1' (first record at line 1)", 7, "P1"),
    "signalp_truncated_record.fasta": ("ends in the middle of a record", 4, "P2"),
    "signalp_extra_line_in_record.fasta": ("line missing or extra", 6, "P2"),
    "fasta_sequence_before_header.fa": ("sequence line before the first '>' header", 1, None),
    "fasta_duplicate_id.fa": ("duplicate id 'p1' (first used on line 1)", 6, "p1"),
    "fasta_record_without_sequence.fa": ("record has no sequence", 3, "p2"),
    "fasta_letters_outside_protein_alphabet.fa": ("outside the protein alphabet ACDEFGHIKLMNPQRSTVWYXBZUO: '*'", 5, "p2"),
    # issue #25
    "multilabel_first_row_short.csv": ("labels '1;0' hold 2 flag(s); 3 of the 4 rows hold 3", 2, None),
    "multilabel_last_row_short.csv": ("labels '0;1' hold 2 flag(s); 2 of the 3 rows hold 3", 4, None),
    "csv_duplicated_header_column.csv": ("column 'label' appears twice in the header", 1, None),
    "multilabel_duplicated_labels_column.csv": ("column 'labels' appears 2 times in the header", 1, None),
    "fasta_windows_1252_header.fa": ("is not UTF-8 text: byte(s) e9 at column 8", 1, None),
    "csv_windows_1252_note.csv": ("is not UTF-8 text: byte(s) e9 at column 15", 4, None),
    "csv_utf16_from_excel.csv": ("is UTF-16 text (Excel's \"Unicode text\" format)", 1, None),
    "csv_gzip_named_csv.csv": ("is gzip-compressed, not text. Fix: decompress it (gunzip)", None, None),
}


def motif_task(root: Path, model_dir: Path, **source) -> Path:
    """A small planted-motif DNA task under ``root/data``, tokenized for ``model_dir`` into
    ``root/cache.npz``; ``source`` overrides the generator's settings (seed, split sizes, ...)."""
    from seqpeft.tasks.demo_data import generate_source
    from seqpeft.tasks import tokenize_task

    generate_source({"synthetic": "dna", "seed": 3, "n_train": 400, "n_dev": 64, "n_test": 64, "length": 40,
                     "motif_copies": 2, **source}, root / "data")
    tokenize_task({"kind": "sequence_classification"}, root / "data", model_dir, root / "cache.npz")
    return root / "cache.npz"


def dev_losses(run_dir: Path) -> list[float]:
    """The dev loss of every evaluation of a run, in order."""
    import csv

    with open(run_dir / "history.csv") as handle:
        return [float(row["dev_loss"]) for row in csv.DictReader(handle)]


def assert_reloaded_run_predicts_its_test_accuracy(run_dir: Path, test_csv: Path, metrics: dict, tmp: Path) -> None:
    """Save -> load round trip: ``seqpeft predict`` on the saved artifacts reproduces the run's test accuracy."""
    import csv

    import numpy as np

    from seqpeft.training.evaluate import load_predictor, predict_file

    predict_file(load_predictor(run_dir / "artifacts"), test_csv, tmp / "pred.csv")
    with open(tmp / "pred.csv") as handle:
        predictions = np.array([int(row["prediction"]) for row in csv.DictReader(handle)])
    with open(test_csv) as handle:
        labels = np.array([int(row["label"]) for row in csv.DictReader(handle)])
    assert float(np.mean(predictions == labels)) == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)


_JOB_RUNNER = """
import json, sys
from seqpeft.training.launch import run_finetune
from seqpeft.config.settings import FinetuneJob
run_finetune(FinetuneJob.from_dict(json.loads(sys.argv[1])))
"""


def interrupt_job_after_checkpoint(job: dict, sig: int, timeout: float = 300) -> str:
    """Run a fine-tuning job (``FinetuneJob.to_dict()`` form) in a subprocess, send ``sig`` once its
    first checkpoint exists, and return its output; the job must not have finished."""
    import json
    import time

    run_dir = Path(job["out_dir"])
    process = subprocess.Popen([sys.executable, "-c", _JOB_RUNNER, json.dumps(job)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    checkpoint = run_dir / "checkpoint" / "state.pt"
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0, output
    return output


def run_job_in_subprocess(job: dict) -> str:
    """Run a fine-tuning job (``FinetuneJob.to_dict()`` form) to the end in a fresh process; its stdout."""
    import json

    return subprocess.run([sys.executable, "-c", _JOB_RUNNER, json.dumps(job)], capture_output=True, text=True,
                          check=True).stdout


def narrowed_to_shared(config: dict, hub_commits: dict[str, str] | None = None, train_rows: int = 256) -> dict:
    """A shipped config narrowed to what ../shared holds, for a rehearsal on stand-ins: each task whose
    data is under ``../shared/data/<source>/<path>`` reads it from there (``local:``), one partition,
    ``train_rows`` training rows, one epoch on the CPU; an experiment block whose tasks ../shared lacks
    gets a task of the same family (dna, protein) and kind that it has, so every (model, method)
    pair the config names is still run; every model is ``tiny`` (no GPU) and, where
    ``hub_commits`` names its repository, at the stand-in hub's commit (serve it at HF_ENDPOINT)."""
    import copy

    config = copy.deepcopy(config)
    config["results"], config["published"] = "results", None
    original = copy.deepcopy(config["tasks"])
    available = {}
    for name, task in config["tasks"].items():
        source = config["sources"][task["source"]]
        if source.get("derive"):  # a task derived by rule derive_source from another source's file
            staged, origin = SHARED / "data" / source["from"], source["from"]
            present = (staged / source["path"]).exists()
        else:
            staged, origin = SHARED / "data" / task["source"], task["source"]
            present = (staged / task["path"]).exists()
        if present:
            available[name] = task
            task["partitions"] = task["partitions"][:1]
            config["sources"][origin] = {**config["sources"][origin], "local": str(staged)}
    if not available:
        pytest.fail(f"../shared/data ({SHARED / 'data'}) holds no task of this config")
    config["tasks"] = available
    for block in config["experiments"]:
        kept = [task for task in block["tasks"] if task in available]
        if not kept:
            wanted = {(original[task].get("family"), original[task]["kind"]) for task in block["tasks"]}
            kept = [name for name, task in available.items() if (task.get("family"), task["kind"]) in wanted][:1]
        assert kept, f"../shared has no task like {block['tasks']}"
        block["tasks"] = kept
    for spec in config["models"].values():
        spec["size"] = "tiny"
        if hub_commits and spec.get("hub") in hub_commits:
            spec["revision"] = hub_commits[spec["hub"]]
    config["training"] = {**(config.get("training") or {}), "epochs": 1, "max_train_samples": train_rows, "device": "cpu"}
    config.setdefault("resources", {})["finetune_threads"] = 1
    return config


def demo_config() -> dict:
    """config/demo.yaml as a test config: its pre-staged sources (``local:``, relative to the
    checkout: the SignalP file in ../shared) made absolute, so the config works from any directory."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    for spec in config["sources"].values():
        if (spec or {}).get("local"):
            spec["local"] = str(REPO / spec["local"])
    return config
