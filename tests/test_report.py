"""`snakemake --report` on a small demo-like run: every figure and table is in the HTML report,
with its caption, under its task family; headless Chromium renders it (when installed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def small_demo(results: str) -> dict:
    """One DNA and one protein task, one tiny model each, frozen and LoRA, 2 epochs."""
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config["results"] = results
    config["models"] = {name: config["models"][name] for name in ("tiny_llama_dna", "tiny_esm")}
    config["methods"] = {name: config["methods"][name] for name in ("frozen", "lora")}
    config["experiments"] = [{"tasks": ["demo_tf"], "models": ["tiny_llama_dna"], "methods": ["frozen", "lora"]},
                             {"tasks": ["demo_sp"], "models": ["tiny_esm"], "methods": ["frozen", "lora"]}]
    config["training"]["epochs"] = 2
    return config


def snakemake(workdir: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
                             "--profile", str(ROOT / "profiles" / "local"), "--cores", "2",
                             "--configfile", str(workdir / "config.yaml"), *args],
                            cwd=workdir, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> tuple[Path, dict]:
    workdir = tmp_path_factory.mktemp("report")
    config = small_demo("results")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(workdir)
    snakemake(workdir, "--report", "results/report.html")
    return workdir / "results" / "report.html", config


def test_report_contains_every_figure_and_table_with_captions(report_html):
    html_path, config = report_html
    html = html_path.read_text()
    figures = [f"figures/{task}/{name}.png" for task in config["tasks"]
               for name in [*(f"pareto_{axis}" for axis in config["figures"]["pareto_axes"]), "mcc_over_time"]]
    for name in [*figures, "summary.csv", "table.csv"]:
        assert name in html, name
    for phrase in ("Pareto front", "dev split", "One row per fine-tuning run", "standard deviation over partitions"):
        assert phrase in html, phrase
    for category in ("DNA", "protein", "Tables"):
        assert re.search(rf'"{category}"', html), category


def test_report_renders_in_headless_chromium(report_html, tmp_path):
    html_path, _ = report_html
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    screenshot = tmp_path / "report.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000",
                    "--virtual-time-budget=10000", f"--screenshot={screenshot}", html_path.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert screenshot.stat().st_size > 20_000
