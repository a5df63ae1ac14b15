"""`seqpeft plan` and the shipped config's pins: what a full run costs and what is still unpinned."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from seqpeft.config.schema import default
from seqpeft.config.jobs import expand_runs

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "config" / "config.yaml"


def plan(*args: str) -> str:
    process = subprocess.run([sys.executable, "-m", "seqpeft.cli", "plan", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    return process.stdout


def test_shipped_configs_have_no_placeholders_and_gue_is_the_pinned_mistral_dna_archive():
    for path in (ROOT / "config").glob("*.yaml"):
        assert not re.search(r"0{40}", path.read_text()), path
    gue = yaml.safe_load(FULL.read_text())["sources"]["gue"]
    assert gue["url"] == ("https://raw.githubusercontent.com/raphaelmourad/Mistral-DNA/"
                          "700996f23699dac45022cd4d588a247e1306d2b7/data/GUE.tar.xz")
    assert gue["git_blob"] == "804ad890dcca7ffb8cb17f270a3f8e622b4a7a3f" and gue["archive"] == "tar.xz"


def test_plan_of_the_full_benchmark_adds_up(tmp_path):
    out = plan("--configfile", str(FULL))
    config = yaml.safe_load(FULL.read_text())
    runs = expand_runs(config)
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0] in config["models"]:
            rows[(parts[0], parts[1])] = (int(parts[2]), int(parts[3]), float(parts[5]), float(parts[6].replace(",", "")))
    assert {key: value[0] for key, value in rows.items()} == {
        key: sum(1 for r in runs if (r.model, r.method) == key) for key in {(r.model, r.method) for r in runs}}
    for (model, _), (jobs, gpus, hours, gpu_hours) in rows.items():
        size = default("resources", "sizes", config["models"][model]["size"])
        assert (gpus, hours) == (size["gpu"], size["runtime"] / 60)
        assert abs(gpu_hours - jobs * gpus * hours) < 0.5
    total = sum(jobs * gpus * hours for jobs, gpus, hours, _ in rows.values())
    assert f"total: {len(runs)} jobs ({len(runs)} on GPUs), {total:,.0f} GPU-hours" in out
    assert re.search(r"disk: [\d,.]+ GB for checkpoints/adapters", out)
    # the two entries the shipped config leaves for `seqpeft pin`, one line each
    unpinned = [line.strip() for line in out.splitlines() if line.strip().startswith("unpinned model")]
    assert [line.split(":")[0] for line in unpinned] == ["unpinned model nucleotide_transformer", "unpinned model mistral_dna"]


def test_plan_uses_the_configured_gpu_type_and_applies_pins(tmp_path):
    config = yaml.safe_load(FULL.read_text())
    config["resources"]["sizes"] = {"large": {"gpu": 2, "gpu_model": "h100", "mem_mb": 1000, "runtime": 90}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "pins.yaml").write_text(yaml.safe_dump({"models": {
        "mistral_dna": {"hub": config["models"]["mistral_dna"]["hub"], "revision": "a" * 40},
        "nucleotide_transformer": {"hub": "someone/else", "revision": "b" * 40}}, "sources": {}}))
    out = plan("--configfile", str(tmp_path / "config.yaml"), "--profile", str(ROOT / "profiles" / "slurm"))
    llama = [line.split() for line in out.splitlines() if line.startswith("llama ")]
    assert llama and all(row[3:6] == ["2", "h100", "1.5"] for row in llama)
    # a pin applies only to the repository it was resolved for
    assert "unpinned model mistral_dna" not in out and "unpinned model nucleotide_transformer" in out
    assert f"(pins from {tmp_path / 'pins.yaml'})" in out


def test_plan_prices_gpu_hours_per_gpu_type(tmp_path):
    """resources.gpu_hour_price: the cost of the GPU-hours asked for, per GPU type, a type without a
    price named; no price set, no cost line."""
    config = yaml.safe_load(FULL.read_text())
    config["resources"]["sizes"] = {"large": {"gpu": 2, "gpu_model": "h100", "mem_mb": 1000, "runtime": 90}}
    config["resources"]["gpu_hour_price"] = {"H100": 4.0}
    config["resources"]["price_unit"] = "USD"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = plan("--configfile", str(tmp_path / "config.yaml"))
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in config["models"]]
    h100_hours = sum(float(row[6].replace(",", "")) for row in rows if row[4] == "h100")
    (cost_line,) = [line for line in out.splitlines() if line.startswith("cost: ")]
    cost = float(cost_line.split()[1].replace(",", ""))
    assert h100_hours > 0 and abs(cost - 4.0 * h100_hours) <= 4.0 * 0.5 * len(rows)  # rows print rounded GPU-hours
    assert "USD at the limits asked for" in cost_line and "h100 4" in cost_line
    assert "no price for GPU type(s) any, left out" in cost_line  # the other sizes name no GPU type
    config["resources"]["gpu_hour_price"]["any"] = 1.0
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert "no price for" not in plan("--configfile", str(tmp_path / "config.yaml"))
    del config["resources"]["gpu_hour_price"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert "cost: " not in plan("--configfile", str(tmp_path / "config.yaml"))
