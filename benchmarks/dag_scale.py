"""DAG scale: time ``snakemake -n`` on a matrix of >= 5,000 fine-tuning jobs.

The matrix is config/config.yaml grown to the size a user would run: all 28 GUE tasks and
SignalP, 6 models, 10 methods (the 8 built-in ones plus two peft pass-through entries, LoHa and
VeRA) and the partitions (GUE replicate seeds, SignalP cross-validation folds). The dry run is
timed end to end as a user would see it (a fresh ``snakemake`` process: interpreter start, config
validation, parsing, DAG building, job listing), in a temporary working directory so that no
lock or metadata of a real results folder is touched. Median of the repeats.

    python benchmarks/dag_scale.py                 # >= 5,000 jobs
    python benchmarks/dag_scale.py --quick         # a small matrix, one repeat
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import REPO, median, print_table

EXTRA_METHODS = {"loha": {"peft": "LoHaConfig", "r": 8}, "vera": {"peft": "VeraConfig", "r": 64}}


def scaled_config(gue_partitions: int, quick: bool) -> dict:
    """config/config.yaml with 10 methods and ``gue_partitions`` replicate seeds per GUE task."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["sources"]["gue"]["local"] = "staged/GUE"
    config["methods"].update(EXTRA_METHODS)
    for spec in config["tasks"].values():
        if spec["kind"] == "sequence_classification":
            spec["partitions"] = list(range(gue_partitions))
    builtin = ("full", "frozen", "lora", "adalora", "prompt_tuning", "prefix_tuning", "p_tuning", "ia3")
    for block in config["experiments"]:
        block["methods"] = [m for m in block["methods"] if m in builtin] + list(EXTRA_METHODS)
    if quick:
        dna_block = config["experiments"][0]
        protein_block = next(block for block in config["experiments"] if "signalp" in block["tasks"])
        dna_block["tasks"], dna_block["models"] = dna_block["tasks"][:2], dna_block["models"][:2]
        config["experiments"] = [dna_block, protein_block]
    return config


def dry_run(config_path: Path, workdir: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, fine-tuning jobs) of one ``snakemake -n`` in a fresh process.

    The CPU time (user + system of the child) is printed beside the wall time because it is far
    less sensitive to other load on a shared machine; the target is on the wall time."""
    command = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(config_path), "--cores", "2", "--nolock", "--quiet", "rules"]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if finished.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}")
    match = re.search(r"^finetune\s+(\d+)", finished.stdout + finished.stderr, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no finetune line in the job stats:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}")
    return seconds, cpu, int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gue-partitions", type=int, default=4, help="replicate seeds per GUE task")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 2 GUE tasks x 2 DNA models, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    with tempfile.TemporaryDirectory(prefix="seqpeft-dag-") as work:
        work = Path(work)
        config_path = work / "config.yaml"
        config_path.write_text(yaml.safe_dump(scaled_config(args.gue_partitions, args.quick), sort_keys=False))
        (work / "staged" / "GUE").mkdir(parents=True)
        runs = []
        for repeat in range(args.repeats):
            seconds, cpu, jobs = dry_run(config_path, work)
            runs.append((seconds, cpu, jobs))
            print(f"  repeat {repeat + 1}/{args.repeats}: {seconds:.2f} s wall, {cpu:.2f} s CPU, {jobs} fine-tuning jobs",
                  flush=True)
    jobs = runs[0][2]
    seconds = median(s for s, _, _ in runs)
    cpu = median(c for _, c, _ in runs)
    print()
    print_table(["matrix", "fine-tuning jobs", "dry-run wall seconds (median)", "CPU seconds (median)"],
                [["scaled config.yaml", jobs, f"{seconds:.2f}", f"{cpu:.2f}"]])
    print(f"dryrun_seconds: {seconds:.1f} jobs: {jobs}")


if __name__ == "__main__":
    main()
