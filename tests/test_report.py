"""`snakemake --report` on a small demo-like run: every figure and table is in the HTML report,
with its caption, under its task family; headless Chromium displays every figure as a reader's click does."""

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


def expected_figures(config: dict) -> set[str]:
    """Every PNG the workflow draws for the config: per task, and the signal-peptide ones."""
    figures = set()
    for task, spec in config["tasks"].items():
        names = [*(f"pareto_{axis}" for axis in config["figures"]["pareto_axes"]), "mcc_over_time"]
        if spec["kind"] == "signal_peptide":
            names += ["signalp_mcc", "signalp_cleavage_w0"]
        figures |= {f"results/figures/{task}/{name}.png" for name in names}
    return figures


def test_report_contains_every_figure_and_table_with_captions(report_html):
    html_path, config = report_html
    html = html_path.read_text()
    for name in [*expected_figures(config), "summary.csv", "table.csv", "signalp_table.csv"]:
        assert name in html, name
    for phrase in ("Pareto front", "dev split", "One row per fine-tuning run", "standard deviation over partitions",
                   "MCC1 (the type against sequences without a", "cleavage-site precision (left)"):
        assert phrase in html, phrase
    for category in ("DNA", "protein", "Tables"):
        assert re.search(rf'"{category}"', html), category


def _chromium() -> str:
    """Chromium on PATH, installed with apt when missing; CI must have it, elsewhere the test skips."""
    from seqpeft.errors import SeqpeftInputError
    from seqpeft.report_view import find_chromium

    try:
        return find_chromium()
    except SeqpeftInputError:
        pass
    if shutil.which("apt-get") and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            subprocess.run(install, capture_output=True, env=env)
    try:
        return find_chromium()
    except SeqpeftInputError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the report must be checked in Chromium under CI: {error}")
        pytest.skip(str(error))


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_report_shows_every_figure_in_headless_chromium(report_html, tmp_path):
    """Each figure is displayed the way a reader's click displays it, and Chromium decodes it at
    the size of the PNG the workflow wrote (a landing-page screenshot would prove nothing)."""
    from seqpeft.report_view import view_figures

    html_path, config = report_html
    chromium = _chromium()
    views = view_figures(html_path, tmp_path / "shots", chromium)
    pngs = {view.path: view for view in views if view.path.endswith(".png")}
    assert set(pngs) == expected_figures(config), sorted(pngs)
    for path, view in pngs.items():
        assert (view.width, view.height) == _png_size(html_path.parents[1] / path), path
        assert view.screenshot.stat().st_size > 20_000, path
    assert all(view.shown for view in views), [view.path for view in views if not view.shown]
