"""Every figure of a small results set, read back from the matplotlib figure objects.

The results set has what made the demo's figures hard to read: models mixed in one task, methods
with the same trainable-parameter count (stacked markers), one partition for some runs and three
for others, a CPU memory axis whose spread is within its noise, signal-peptide cells that no run
defines. Checked: no two point labels overlap, each sits within a few points of its marker, error
bars only where there are partitions to have a spread, one method colour across figures, the
SignalP figures have titles and axis labels, missing cells are not drawn as bars.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.lines import Line2D

from seqpeft.figure_style import LABEL_MAX_DISTANCE_PT, method_styles
from seqpeft.plots import plot_mcc_over_time, plot_pareto
from seqpeft.tasks.signal_peptide.metrics import REPORTED_TYPES
from seqpeft.tasks.signal_peptide.report import plot_task_figures, write_signalp_table

METHODS = ["full", "frozen", "lora", "lora_hpo", "adalora", "ia3", "bitfit", "prompt_tuning", "lopa", "adapter"]
MODELS = {"tiny_llama_dna": 3, "tiny_bert_dna": 1}  # model -> partitions
SP_METHODS = ["full", "lora", "adapter"]


def params_of(method: str) -> int:
    return {"full": 60_000, "frozen": 66, "lora_hpo": 4_162, "lora": 4_162, "adalora": 4_162}.get(method, 500)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    rows = []
    for model, partitions in MODELS.items():
        for i, method in enumerate(METHODS):
            for partition in range(partitions):
                mcc = 0.6 + 0.03 * (i % 5) + 0.02 * rng.standard_normal()
                rows.append({"task": "demo_tf", "model": model, "method": method, "partition": str(partition),
                             "test_mcc": mcc, "trainable_params": params_of(method),
                             "peak_memory_mb": 420 + 5 * rng.standard_normal(), "memory_device": "cpu",
                             "train_seconds": 10 + 3 * i + rng.random()})
                history = root / "runs" / "demo_tf" / model / method / str(partition) / "history.csv"
                history.parent.mkdir(parents=True)
                steps = np.arange(1, 6)
                pd.DataFrame({"wall_seconds": steps * (2 + i * 0.3) + rng.random(),
                              "dev_mcc": mcc * (1 - np.exp(-steps / 2)) + 0.01 * rng.standard_normal(5)}
                             ).to_csv(history, index=False)
    pd.DataFrame(rows).to_csv(root / "summary.csv", index=False)

    metrics_files = []
    for method in SP_METHODS:
        for fold in ("t0v1", "t1v2", "t2v0"):
            table = {}
            for kingdom in ("EUKARYA", "ARCHAEA"):
                table[kingdom] = {}
                for sp_type in REPORTED_TYPES:
                    # the adapter runs never predict an archaeal TAT protein: undefined in its every fold
                    undefined = kingdom == "ARCHAEA" and sp_type == "TAT" and method == "adapter"
                    value = float("nan") if undefined else float(rng.uniform(0.3, 0.9))
                    if method == "lora" and kingdom == "EUKARYA" and sp_type == "PILIN":
                        value = 0.0  # a constant predictor: an MCC of 0, which is a value, not a gap
                    table[kingdom][sp_type] = {"mcc2": value, "mcc1": value, "cs_precision_w0": value,
                                               "cs_recall_w0": value, **{f"cs_{k}_w{w}": value for k in
                                                                        ("precision", "recall") for w in (1, 2, 3)}}
            path = root / "runs" / "demo_sp" / "tiny_esm" / method / fold / "metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"task": "demo_sp", "model": "tiny_esm", "method": method, "partition": fold,
                                        "test": {"signalp": table}}))
            metrics_files.append(path)
    write_signalp_table(metrics_files, root / "signalp_table.csv")
    return root


def all_figures(results: Path, out: Path) -> dict:
    histories = sorted(results.glob("runs/demo_tf/*/*/*/history.csv"))
    figures = {f"pareto_{axis}": plot_pareto(results / "summary.csv", "demo_tf", axis, out / f"{axis}.png",
                                             out / f"{axis}.svg", methods=METHODS)
               for axis in ("params", "memory", "time")}
    figures["mcc_over_time"] = plot_mcc_over_time(histories, "demo_tf", out / "t.png", out / "t.svg", methods=METHODS)
    figures["signalp_mcc"], figures["signalp_cleavage_w0"] = plot_task_figures(
        results / "signalp_table.csv", "demo_sp",
        {"mcc_png": out / "m.png", "mcc_svg": out / "m.svg", "cs_png": out / "c.png", "cs_svg": out / "c.svg"},
        methods=METHODS)
    return figures


@pytest.fixture(scope="module")
def figures(results, tmp_path_factory):
    return all_figures(results, tmp_path_factory.mktemp("figures"))


def point_labels(ax):
    return [text for text in ax.texts if text.get_gid() == "point-label"]


def test_point_labels_do_not_overlap_and_sit_at_their_markers(figures):
    for name, figure in figures.items():
        renderer = figure.canvas.get_renderer()
        pt = figure.dpi / 72.0
        for ax in figure.axes:
            labels = point_labels(ax)
            texts = [t for t in ax.texts if t.get_visible()]
            for a, b in combinations(texts, 2):
                assert not a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer)), \
                    (name, a.get_text(), b.get_text())
            for label in labels:
                box = label.get_window_extent(renderer)
                mx, my = ax.transData.transform(label.xy)
                dx = max(box.x0 - mx, 0, mx - box.x1)
                dy = max(box.y0 - my, 0, my - box.y1)
                assert np.hypot(dx, dy) <= LABEL_MAX_DISTANCE_PT * pt, (name, label.get_text(), dx / pt, dy / pt)
            ticks = [label for axis in (ax.xaxis, ax.yaxis) for tick, label in zip(axis.get_majorticklocs(),
                                                                                    axis.get_majorticklabels())
                     if label.get_text() and min(axis.get_view_interval()) <= tick <= max(axis.get_view_interval())]
            for a, b in combinations(ticks, 2):
                assert not a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer)), \
                    (name, a.get_text(), b.get_text())
        if name.startswith("pareto"):
            placed = sum(len(point_labels(ax)) for ax in figure.axes)
            assert placed >= len(METHODS), (name, placed)  # most points keep their label


def test_pareto_facets_per_model_error_bars_only_with_partitions(figures):
    figure = figures["pareto_params"]
    titles = sorted(ax.get_title() for ax in figure.axes if ax.get_visible())
    assert titles == sorted(f"model: {m}" for m in MODELS)
    assert "Pareto front per model" in figure.get_suptitle()
    for ax in figure.axes:
        with_bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.has_yerr]
        if ax.get_title() == "model: tiny_llama_dna":  # 3 partitions: every point has its sd
            assert len(with_bars) == len(METHODS)
        elif ax.get_title() == "model: tiny_bert_dna":  # 1 partition: no bars, no caps
            assert with_bars == []


def test_memory_front_not_drawn_within_cpu_noise(figures):
    figure = figures["pareto_memory"]
    for ax in figure.axes:
        assert "peak RSS" in ax.get_xlabel()
        assert any("no front" in t.get_text() for t in ax.texts), ax.get_title()
        assert not [line for line in ax.get_lines() if line.get_drawstyle().startswith("steps")]
    assert [line for line in figures["pareto_params"].axes[0].get_lines() if line.get_drawstyle().startswith("steps")]


def test_one_colour_per_method_across_figures(figures):
    styles = method_styles(METHODS, METHODS)
    assert len({(s.colour, s.marker) for s in styles.values()}) == len(METHODS)
    for name, figure in figures.items():
        legend = figure.legends[0]
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            method = text.get_text()
            if method in styles:
                colour = handle.get_facecolor() if not isinstance(handle, Line2D) else handle.get_color()
                from matplotlib.colors import to_hex

                assert to_hex(colour) == to_hex(styles[method].colour), (name, method)


def test_mcc_over_time_small_multiples_with_band(figures):
    figure = figures["mcc_over_time"]
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert len(axes) == len(MODELS)
    for ax in axes:
        bands = [c for c in ax.collections if c.__class__.__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
        lines = ax.get_lines()
        assert len(lines) == len(METHODS)
        assert len(bands) == (len(METHODS) if ax.get_title() == "model: tiny_llama_dna" else 0)
    assert len(figure.legends[0].get_texts()) == len(METHODS)


def test_signalp_figures_titles_labels_missing_cells(figures):
    for name in ("signalp_mcc", "signalp_cleavage_w0"):
        figure = figures[name]
        assert figure.get_suptitle().startswith("demo_sp: ")
        for ax in figure.axes:
            assert ax.get_title() and ax.get_ylabel() and ax.get_xlabel(), name
            ticks = [t.get_text() for t in ax.get_xticklabels()]
            assert "ARCHAEA\nTAT\nn=0/3" in ticks and "EUKARYA\nSP\nn=3" in ticks
            bars = [p for c in ax.containers if c.__class__.__name__ == "BarContainer" for p in c]
            assert len(bars) == len(ticks) * len(SP_METHODS) - 1  # the undefined value: an x at 0, no bar
            assert all(np.isfinite(b.get_height()) for b in bars)
            flat = [c for c in ax.collections if c.get_gid() == "zero-value"]
            assert len(flat) == 1 and len(flat[0].get_segments()) == 1  # the 0 of lora, EUKARYA PILIN
