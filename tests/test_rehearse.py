"""`seqpeft rehearse` and `seqpeft plan` from its measurements: every fine-tuning job for a few steps
through the workflow, its row in rehearsal.csv, nothing of the real run written or touched."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, narrowed_to_shared, shared_path, demo_config
from seqpeft.config.jobs import expand_runs

OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


def seqpeft(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The ``seqpeft`` command in ``workdir``, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "seqpeft.cli", *args], cwd=workdir, env=OFFLINE_ENV,
                            capture_output=True, text=True, timeout=1800)
    if check and result.returncode != 0:
        pytest.fail(f"seqpeft {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def rows_of(path: Path) -> dict[tuple[str, str, str, str], dict]:
    with open(path, newline="") as handle:
        return {(row["task"], row["model"], row["method"], row["partition"]): row for row in csv.DictReader(handle)}


def real_run_files(results: Path) -> dict[str, tuple[int, int]]:
    """Every file of the real run under ``results`` (not the rehearsal's own) with its size and mtime."""
    own = {results / "rehearsal.csv", results / "logs" / "rehearsal.log"}
    return {str(path.relative_to(results)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in results.rglob("*")
            if path.is_file() and path not in own and (results / "rehearsal") not in path.parents}


def plan_estimates(output: str) -> dict[tuple[str, str], float]:
    """(model, method) -> estimated hours per job, from the plan's measured columns."""
    estimates = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 12 and "/" in parts[9] and parts[10] != "-":
            estimates[(parts[0], parts[1])] = float(parts[10])
    return estimates


def test_rehearse_runs_the_snakefile_and_profiles_of_its_own_checkout():
    from seqpeft.preflight.rehearse import checkout

    assert checkout() == REPO
    assert (checkout() / "Snakefile").is_file() and (checkout() / "profiles" / "local").is_dir()


@pytest.mark.slow
def test_rehearsal_of_the_demo_is_ok_for_every_job_and_plan_estimates_its_real_times(demo_run):
    results = demo_run.results
    before = real_run_files(results)
    assert any(name.startswith("runs/") for name in before) and "summary.csv" in before
    out = seqpeft(demo_run.workdir, "rehearse", "--configfile", str(demo_run.config_path), "--", "--cores", "2")
    rows = rows_of(results / "rehearsal.csv")
    runs = expand_runs(demo_run.config)
    assert set(rows) == {(r.task, r.model, r.method, r.partition) for r in runs}
    assert {key: row["outcome"] for key, row in rows.items() if row["outcome"] != "ok"} == {}
    for row in rows.values():
        assert int(row["steps"]) == 20 and float(row["seconds_per_step"]) > 0 and float(row["peak_memory_mb"]) > 0
        epochs, batch = demo_run.config["training"]["epochs"], demo_run.config["training"]["batch_size"]
        assert int(row["full_steps"]) == -(-int(row["train_rows"]) // batch) * epochs  # batches per epoch x epochs
    assert f"{len(runs)} of {len(runs)} jobs ok" in out.stdout
    # nothing of the real run (checkpoints, metrics, summaries, figures) written or touched
    assert real_run_files(results) == before

    plan = seqpeft(demo_run.workdir, "plan", "--configfile", str(demo_run.config_path)).stdout
    assert f"measured by `seqpeft rehearse`" in plan and f"for {len(runs)} of " in plan
    estimates = plan_estimates(plan)
    real: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        benchmark = results / "benchmarks" / "finetune" / run.task / run.model / run.method / f"{run.partition}.tsv"
        with open(benchmark, newline="") as handle:
            real.setdefault((run.model, run.method), []).append(float(next(csv.DictReader(handle, delimiter="\t"))["s"]))
    assert set(estimates) == set(real)
    estimated = sum(estimates[key] * 3600 * len(times) for key, times in real.items())
    measured = sum(sum(times) for times in real.values())
    ratios = {key: estimates[key] * 3600 / (sum(times) / len(times)) for key, times in real.items()}
    print(f"estimated {estimated:.0f} s, real {measured:.0f} s; per model x method:", ratios)
    assert 0.5 <= estimated / measured <= 2, (estimated, measured, ratios)


def test_rehearsing_one_partition_per_task_model_method_measures_the_others(tmp_path):
    """rehearsal.partitions: first: the rehearsal target runs one job per task x model x method (its
    first partition), and plan counts the other partitions at that measurement; with the default
    (all) a partition without a row of its own counts at its limit."""
    from seqpeft.preflight.plan import plan_rows

    config = demo_config()
    config.update(results=str(tmp_path / "results"), published=None)
    config["tasks"]["demo_tf"]["partitions"] = [0, 1, 2]
    config["experiments"] = [{"tasks": ["demo_tf"], "models": ["tiny_bert_dna"], "methods": ["lora", "full"]}]
    config["rehearsal"] = {"partitions": "first"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "rehearsal", "-s", str(REPO / "Snakefile"), "-d",
                          str(tmp_path), "--configfile", str(tmp_path / "config.yaml")], cwd=tmp_path, env=OFFLINE_ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.search(r"^rehearse_job\s+2$", out.stdout, re.M), out.stdout  # lora/0 and full/0, not 6 jobs
    assert "partition=1" not in out.stdout and "partition=2" not in out.stdout
    results = tmp_path / "results"
    results.mkdir()
    (results / "rehearsal.csv").write_text("task,model,method,partition,outcome,estimated_seconds\n"
                                           "demo_tf,tiny_bert_dna,lora,0,ok,360\ndemo_tf,tiny_bert_dna,full,0,ok,720\n")
    rows = {row.method: row for row in plan_rows(config)}
    assert rows["lora"].estimated_seconds == [360.0] * 3 and rows["full"].estimated_seconds == [720.0] * 3
    config["rehearsal"] = {"partitions": "all"}
    rows = {row.method: row for row in plan_rows(config)}
    assert rows["lora"].estimated_seconds == [360.0]  # partitions 1 and 2 at their limit
    assert rows["lora"].estimated_job_hours == pytest.approx(0.1 + 2 * rows["lora"].hours)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A three-job config of the demo's data: two jobs that work and one whose LoRA targets a module
    the model lacks (it passes the config check and fails inside the job), rehearsed for 3 steps."""
    workdir = tmp_path_factory.mktemp("rehearse")
    config = demo_config()
    config.update(results="results", published=None)
    config["methods"]["lora_bad"] = {"method": "lora", "target_modules": ["nope"]}
    config["experiments"] = [{"tasks": ["demo_tf"], "models": ["tiny_bert_dna"], "methods": ["lora", "lora_bad"]},
                             {"tasks": ["demo_sp"], "models": ["tiny_esm"], "methods": ["lora"]}]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = seqpeft(workdir, "rehearse", "--configfile", "config.yaml", "--steps", "3", "--", "--cores", "2")
    return workdir, config, result


@pytest.mark.slow
def test_a_failing_job_is_a_row_and_stops_no_other(small):
    workdir, config, result = small
    rows = rows_of(workdir / "results" / "rehearsal.csv")
    assert rows[("demo_tf", "tiny_bert_dna", "lora", "0")]["outcome"] == "ok"
    assert rows[("demo_sp", "tiny_esm", "lora", "t0v1")]["outcome"] == "ok"
    failed = rows[("demo_tf", "tiny_bert_dna", "lora_bad", "0")]
    assert "target modules ['nope'] do not exist" in failed["outcome"] and failed["seconds_per_step"] == "nan"
    assert all(int(row["steps"]) == 3 for key, row in rows.items() if row["outcome"] == "ok")
    assert "2 of 3 jobs ok" in result.stdout and "FAILED demo_tf/tiny_bert_dna/lora_bad/0" in result.stdout
    # the real run's folders were never made; the rehearsal kept no artifacts or checkpoints
    results = workdir / "results"
    assert not (results / "runs").exists() and not (results / "summary.csv").exists()
    assert not list((results / "rehearsal").rglob("artifacts")) and not list((results / "rehearsal").rglob("*.pt"))


@pytest.mark.slow
def test_plan_says_what_is_measured_and_runtime_from_estimate_is_opt_in(small):
    workdir, config, _ = small
    plan = seqpeft(workdir, "plan", "--configfile", "config.yaml").stdout
    estimates = plan_estimates(plan)
    row = rows_of(workdir / "results" / "rehearsal.csv")[("demo_tf", "tiny_bert_dna", "lora", "0")]
    assert estimates[("tiny_bert_dna", "lora")] == pytest.approx(float(row["estimated_seconds"]) / 3600, abs=6e-4)
    # the failed job is counted at its limit, and the plan says so
    assert "for 2 of 3 jobs" in plan and "at their limits" in plan
    assert "h/job and GPU-h: the limits asked for" in plan

    def finetune_runtime(config_path: str) -> int:
        out = subprocess.run([sys.executable, "-m", "snakemake", "results/runs/demo_tf/tiny_bert_dna/lora/0/metrics.json",
                              "-n", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--profile",
                              str(REPO / "profiles" / "local"), "--quiet", "progress", "--configfile", config_path],
                             cwd=workdir, env=OFFLINE_ENV, capture_output=True, text=True, timeout=300)
        out = out.stdout + out.stderr
        line = next(line for line in out.splitlines() if "resources:" in line and "runtime=" in line)
        return int(line.split("runtime=")[1].split(",")[0])

    assert finetune_runtime("config.yaml") == 30  # the tiny size's limit
    opted = {**config, "rehearsal": {"runtime_from_estimate": True, "runtime_margin": 100}}
    (workdir / "opted.yaml").write_text(yaml.safe_dump(opted, sort_keys=False))
    expected = max(10, -(-float(row["estimated_seconds"]) * 100 // 60))
    assert finetune_runtime("opted.yaml") == expected


@pytest.mark.parametrize("path", sorted([REPO / "config" / "config.yaml", *(REPO / "config" / "seeds").glob("*.yaml")]))
def test_a_shipped_config_narrowed_to_shared_data_keeps_every_model_method_pair(path):
    """The configuration half of the rehearsal of every shipped config on real-layout stand-ins
    (test_rehearsal_of_a_shipped_config_on_the_real_layout_stand_ins_is_ok_for_every_pair)."""
    from snakemake.utils import validate

    from seqpeft.preflight.check import check_config
    from seqpeft.config.schema import SCHEMA

    shared_path("data")
    config = yaml.safe_load(path.read_text())
    narrowed = narrowed_to_shared(config, {"meta-llama/Llama-3.2-1B": "a" * 40})
    validate(narrowed, str(SCHEMA))
    check_config(narrowed)
    pairs = lambda c: {(run.model, run.method) for run in expand_runs(c)}  # noqa: E731
    assert pairs(narrowed) == pairs(config)
    for task in narrowed["tasks"].values():
        source = narrowed["sources"][task["source"]]
        if source.get("derive"):  # made by rule derive_source from the staged file of its origin
            assert Path(narrowed["sources"][source["from"]]["local"], source["path"]).exists()
        else:
            assert Path(source["local"], task["path"]).exists()
        assert len(task["partitions"]) == 1
    assert all(spec["size"] == "tiny" for spec in narrowed["models"].values())
    if "llama" in narrowed["models"]:
        assert narrowed["models"]["llama"]["revision"] == "a" * 40


SHIPPED_CONFIGS = sorted([REPO / "config" / "config.yaml", *(REPO / "config" / "seeds").glob("*.yaml")])


def one_task_per_pair(config: dict) -> dict:
    """``config`` with each experiment block on one task (the one with the smallest dev split: the
    rehearsal evaluates it whole) and each (model, method) pair in the first block that names it."""
    def dev_rows(name: str) -> int:
        task = config["tasks"][name]
        dev = Path(config["sources"][task["source"]]["local"], task["path"])
        dev = dev / "dev.csv" if dev.is_dir() else dev
        return dev.stat().st_size

    seen: set[tuple[str, str]] = set()
    blocks = []
    for block in config["experiments"]:
        pairs = [(model, method) for model in block["models"] for method in block["methods"] if (model, method) not in seen]
        seen.update(pairs)
        for model in dict.fromkeys(model for model, _ in pairs):
            blocks.append({**block, "tasks": [min(block["tasks"], key=dev_rows)], "models": [model],
                           "methods": [method for m, method in pairs if m == model]})
    used = {task for block in blocks for task in block["tasks"]}
    # a block whose pairs all ran before (e.g. the SignalP-derived protein tasks on ESM-2's methods) goes
    return {**config, "tasks": {name: task for name, task in config["tasks"].items() if name in used},
            "experiments": blocks}


def with_trimmed_data(config: dict, root: Path, rows: int = 48, train_rows: int = 4096) -> dict:
    """``config`` reading a trimmed copy of each task's data under ``root``: the first ``rows`` rows
    of each CSV dev and test split and ``train_rows`` of train (enough steps for the AdaLoRA
    schedules the configs fix: lingo's tinit + tfinal 400 steps of batch 8 in the one epoch), or of a FASTA
    the first ``rows // 8`` records of each (kingdom, type, partition), so that tokenizing and
    evaluating whole splits takes seconds, not minutes."""
    staged = {task["source"]: Path(config["sources"][task["source"]]["local"]) for task in config["tasks"].values()}
    for name in staged:
        config["sources"][name]["local"] = str(root / name)
    for task in config["tasks"].values():
        original, target = staged[task["source"]], root / task["source"] / task["path"]
        if (original / task["path"]).is_dir():
            target.mkdir(parents=True, exist_ok=True)
            for split in (original / task["path"]).glob("*.csv"):
                with open(split) as handle:
                    kept = (train_rows if split.stem == "train" else rows) + 1  # and the header
                    (target / split.name).write_text("".join(line for _, line in zip(range(kept), handle)))
        else:
            lines = (original / task["path"]).read_text().splitlines(keepends=True)
            kept: dict[str, int] = {}
            out = []
            for i in range(0, len(lines), 3):
                group = lines[i].split("|", 1)[1].strip()
                if kept.get(group, 0) < max(1, rows // 8):
                    kept[group] = kept.get(group, 0) + 1
                    out += lines[i:i + 3]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("".join(out))
    return config


# Every rehearse_job of a config, in one process: each is exactly what the workflow's rule runs
# (seqpeft.preflight.rehearse.rehearse on the FinetuneJob that workflow/scripts/_script.finetune_job
# builds from job_spec and training_input), without paying Python's start and imports per job,
# which on two cores would take the ~120 jobs of the shipped configs past ten minutes.
REHEARSE_ALL = """
import json, sys
from dataclasses import asdict
from pathlib import Path
from seqpeft.config.jobs import expand_runs, finetune_spec, training_cache
from seqpeft.config.paths import REHEARSAL_PATTERN, model_dir, rehearsal_table, wildcard_pattern
from seqpeft.config.settings import FinetuneJob
from seqpeft.preflight.check import size_resources
from seqpeft.preflight.plan import load_config
from seqpeft.preflight.rehearse import format_table, read_rows, rehearse, write_rows

config, _ = load_config(Path(sys.argv[1]))
rows = []
for run in expand_runs(config):
    spec = finetune_spec(config, run.task, run.model, run.method)
    cache = training_cache(config, run.task, run.model, run.method)
    out = wildcard_pattern(REHEARSAL_PATTERN, config).format(task=run.task, model=run.model, method=run.method,
                                                             partition=run.partition)
    job = FinetuneJob(task=run.task, model=run.model, method=run.method, partition=run.partition,
                      task_spec=dict(spec["task"]), model_spec=dict(spec["model"]), method_spec=dict(spec["method"]),
                      training=dict(spec["training"]), cache_path=Path(cache), model_dir=Path(model_dir(config, run.model)),
                      out_dir=Path(out), threads=1, gpus=int(size_resources(config, run.model)["gpu"]))
    rows.append(asdict(rehearse(job, int(sys.argv[2]))))
write_rows(rows, Path(rehearsal_table(config)))
print(format_table(read_rows(Path(rehearsal_table(config)))))
"""


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda path: path.name)
def test_rehearsal_of_a_shipped_config_on_the_real_layout_stand_ins_is_ok_for_every_pair(path, real_hub, tmp_path):
    """Issue #22's first "Done when": the shipped config, on the stand-in hub serving every model in its
    real layout (tests/hub_server.py) at the commit the config pins, narrowed to a trimmed copy of
    ../shared's data and to one job per (model, method) pair, rehearsed for 2 steps: every pair ok.
    The rehearsal target's inputs (prepare_model from the hub, tokenize) run through the workflow's
    rules; the jobs run as the rehearse_job rule runs them, in one process (REHEARSE_ALL)."""
    from hub_server import real_layout_hub, served_repo

    config = yaml.safe_load(path.read_text())
    served = {spec["hub"]: served_repo(spec) for spec in config["models"].values() if spec.get("hub")}
    commits = {repo: entry.branches["main"] for repo, entry in real_layout_hub(sorted(served)).repos.items()}
    narrowed = with_trimmed_data(one_task_per_pair(narrowed_to_shared(config, commits, train_rows=None)), tmp_path / "data")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(narrowed, sort_keys=False))
    env = {**os.environ, **real_hub}
    prepared = subprocess.run([sys.executable, "-m", "snakemake", "rehearsal", "--omit-from", "rehearse_job",
                               "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--profile", str(REPO / "profiles" / "local"),
                               "--cores", "2", "--configfile", "config.yaml"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
    result = subprocess.run([sys.executable, "-c", REHEARSE_ALL, "config.yaml", "2"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = rows_of(tmp_path / "results" / "rehearsal.csv")
    pairs = {(run.model, run.method) for run in expand_runs(config)}
    outcomes = {(model, method): row["outcome"] for (_, model, method, _), row in rows.items()}
    assert len(rows) == len(pairs) and set(outcomes) == pairs
    assert {pair: outcome for pair, outcome in outcomes.items() if outcome != "ok"} == {}
    assert all(int(row["steps"]) == 2 and float(row["seconds_per_step"]) > 0 for row in rows.values())
    # every model came from the stand-in hub, at the commit it serves (the one the config pins, where it pins one)
    for name, spec in narrowed["models"].items():
        record = json.loads((tmp_path / "results" / "models" / name / "seqpeft-pin.json").read_text())
        assert record["revision"] == commits[spec["hub"]]
    print(f"{path.name}: {len(pairs)} (model, method) pairs ok")
