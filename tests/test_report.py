"""`snakemake --report` on the demo run: every figure and table is in the HTML report,
with its caption, under its task family; headless Chromium displays every figure as a reader's click does."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the demo DAG, builds the report and opens it in Chromium



@pytest.fixture(scope="module")
def report_html(demo_run) -> tuple[Path, dict]:
    """The HTML report of the session's demo run."""
    demo_run.snakemake("--report", "results/report.html")
    return demo_run.results / "report.html", demo_run.config


def expected_figures(config: dict) -> set[str]:
    """Every PNG the workflow draws for the config: per task, and the signal-peptide ones."""
    figures = set()
    for task, spec in config["tasks"].items():
        names = [*(f"pareto_{axis}" for axis in config["figures"]["pareto_axes"]), "mcc_over_time"]
        if spec["kind"] == "signal_peptide":
            names += ["signalp_mcc", "signalp_cleavage_w0"]
        figures |= {f"results/figures/{task}/{name}.png" for name in names}
    if config.get("published"):
        figures.add("results/figures/reproduction.png")  # published numbers beside the runs
    models = {model for experiment in config["experiments"] for model in experiment["models"]}
    figures |= {f"results/figures/ranks_{scope}.png" for scope in [*models, "all_models"]}  # critical differences
    return figures


def test_report_contains_every_figure_and_table_with_captions(report_html):
    html_path, config = report_html
    html = html_path.read_text()
    for name in [*expected_figures(config), "summary.csv", "table.csv", "signalp_table.csv", "reproduction.csv",
                 "comparisons.csv", "ranks.csv", "answer.md", "leaderboard.html"]:
        assert name in html, name
    for phrase in ("Pareto front", "dev split", "One row per fine-tuning run", "standard deviation over partitions",
                   "against the published one", "inside the spread",
                   "MCC1 (the type against sequences without a", "cleavage-site precision (left)",
                   "paired bootstrap interval", "Click a column header to sort"):
        assert phrase in html, phrase
    for category in ("DNA", "protein", "Tables", "1. Answer", "Ranks"):
        assert re.search(rf'"{category}"', html), category


def _chromium() -> str:
    """Chromium on PATH, installed with apt when missing; CI must have it, elsewhere the test skips."""
    from seqpeft.util.errors import SeqpeftInputError
    from seqpeft.analysis.report_view import find_chromium

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
    from seqpeft.analysis.report_view import view_figures

    html_path, config = report_html
    chromium = _chromium()
    views = view_figures(html_path, tmp_path / "shots", chromium)
    pngs = {view.path: view for view in views if view.path.endswith(".png")}
    assert set(pngs) == expected_figures(config), sorted(pngs)
    for path, view in pngs.items():
        assert (view.width, view.height) == _png_size(html_path.parents[1] / path), path
        assert view.screenshot.stat().st_size > 20_000, path
    assert all(view.shown for view in views), [view.path for view in views if not view.shown]
