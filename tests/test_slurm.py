"""The SLURM profile against a real one-node SLURM (slurm-wlm + munge on 127.0.0.1).

tests/slurm/start_cluster.sh installs and starts the cluster (root needed); without it the test
is skipped with the reason, except under CI=true where it fails. A small demo-like config runs
through `--profile profiles/slurm` (an override profile sets what a test cluster lacks: no
account, squeue for status), then the same config runs locally: every job must have gone
through sbatch, fine-tuning jobs must have asked for a GPU, and the test metrics must match.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import job_stats, demo_config

pytestmark = pytest.mark.slow  # runs Snakemake against a fake SLURM

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "tests" / "slurm"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
SKIP = 77
RUNS = [f"results/runs/demo_tf/tiny_llama_dna/{method}/0/metrics.json" for method in ("frozen", "lora")]


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"real SLURM must run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running one-node cluster for the session; stopped afterwards."""
    state = tmp_path_factory.mktemp("slurm_cluster")
    started = subprocess.run(["bash", str(SLURM / "start_cluster.sh"), str(state)], capture_output=True, text=True,
                             timeout=900)
    if started.returncode == SKIP:
        _unavailable(started.stdout.strip() or started.stderr.strip())
    if started.returncode != 0:
        subprocess.run(["bash", str(SLURM / "stop_cluster.sh"), str(state)], timeout=60)
        _unavailable(f"cluster did not start: {started.stdout[-2000:]}{started.stderr[-2000:]}")
    yield state
    subprocess.run(["bash", str(SLURM / "stop_cluster.sh"), str(state)], timeout=60)


def small_config(results: Path) -> dict:
    """The demo's DNA task with one tiny model, frozen and LoRA, 2 epochs; tiny models ask for a GPU."""
    config = demo_config()
    config["results"] = str(results)
    config["sources"] = {"demo_dna": config["sources"]["demo_dna"]}
    config["tasks"] = {"demo_tf": config["tasks"]["demo_tf"]}
    config["tokenizers"] = {"nucleotide": config["tokenizers"]["nucleotide"]}
    config["models"] = {"tiny_llama_dna": config["models"]["tiny_llama_dna"]}
    config["methods"] = {name: config["methods"][name] for name in ("frozen", "lora")}
    config["experiments"] = [{"tasks": ["demo_tf"], "models": ["tiny_llama_dna"], "methods": ["frozen", "lora"]}]
    config["training"]["epochs"] = 2
    config["resources"]["sizes"] = {"tiny": {"gpu": 0, "mem_mb": 2000, "runtime": 30}}
    # A CPU model (gpu: 0, device: cpu); the test profile still asks the fake cluster for a GPU
    # (override_profile). A job that asked for a GPU with device "auto" and finds none fails
    # (seqpeft.training.assemble.resolve_device); device "cpu" trains on the CPU on purpose.
    config["training"]["device"] = "cpu"
    return config


def override_profile(tmp_path: Path) -> Path:
    """The shipped SLURM profile with only the cluster-specific settings replaced."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].pop("slurm_account")
    profile["set-resources"]["finetune"]["gpu"] = 1  # the fake cluster's (device-less) GPUs
    profile.update({"slurm-no-account": True, "slurm-status-command": "squeue", "slurm-keep-successful-logs": True,
                    "slurm-init-seconds-before-status-checks": 2, "seconds-between-status-checks": 2,
                    "slurm-logdir": str(tmp_path / "slurm_logs"), "latency-wait": 5, "retries": 0})
    directory = tmp_path / "profile"
    directory.mkdir()
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


def run_snakemake(config: dict, workdir: Path, *args: str) -> str:
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *RUNS, *args, "--configfile", str(config_path)],
                            cwd=workdir, env=ENV, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def slurm_jobs(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """`scontrol show job` fields of finished jobs (kept for MinJobAge; there is no accounting)."""
    records = {}
    for job_id in job_ids:
        line = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
        records[job_id] = dict(field.split("=", 1) for field in line.split() if "=" in field)
    return records


def test_slurm_profile_runs_on_real_slurm(slurm_cluster, tmp_path):
    profile = override_profile(tmp_path)
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    slurm_dir.mkdir()
    local_dir.mkdir()
    output = run_snakemake(small_config(Path("results")), slurm_dir, "--profile", str(profile), "-d", str(slurm_dir))

    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    # the profile's readable default: no rule blocks, no "Shell command: None"; every job of the
    # DAG's Job stats table is submitted to SLURM
    assert not re.search(r"^(local)?rule \w+:", output, flags=re.MULTILINE) and "Shell command" not in output, output[-4000:]
    stats = job_stats(output)
    assert len(submitted) == sum(stats.values()) >= 6, (submitted, stats)
    records = slurm_jobs(list(submitted.values()))
    for job_id, record in records.items():
        print(f"sbatch job {job_id}: {record.get('Comment')} partition={record.get('Partition')} "
              f"state={record.get('JobState')} gres={record.get('TresPerJob', '-')}")
    assert all(record.get("JobState") == "COMPLETED" for record in records.values()), records
    finetune = [record for record in records.values() if record.get("Comment", "").startswith("rule_finetune")]
    assert len(finetune) == 2, records
    for record in finetune:
        assert record["Partition"] == "gpu" and record.get("TresPerJob") == "gres:gpu:1", record
    assert len(list((tmp_path / "slurm_logs" / "rule_finetune").rglob("*.log"))) == 2

    local_config = small_config(Path("results"))
    run_snakemake(local_config, local_dir, "--profile", str(ROOT / "profiles" / "local"), "--cores", "2",
                  "-d", str(local_dir))
    for run in RUNS:
        on_slurm = json.loads((slurm_dir / run).read_text())
        local = json.loads((local_dir / run).read_text())
        for key, value in local["test"].items():
            assert on_slurm["test"][key] == pytest.approx(value, abs=1e-6), (run, key)
