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

from matplotlib.colors import to_hex

from seqpeft.analysis.style import BASELINE_STYLE, LABEL_MAX_DISTANCE_PT, method_styles
from seqpeft.analysis.plots import plot_mcc_over_time, plot_pareto
from seqpeft.tasks.signal_peptide.metrics import REPORTED_TYPES
from seqpeft.analysis.signal_peptide import plot_task_figures, write_signalp_table

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


def _bars(ax, gid):
    return [p for c in ax.containers if c.__class__.__name__ == "BarContainer" for p in c if p.get_gid() == gid]


def _mcc_cells(ax) -> list[tuple[str, str]]:
    """The kingdom x type of each x position, from the tick labels (kingdom, paper name, code, n)."""
    return [(t.get_text().split("\n")[0], t.get_text().split("\n")[2]) for t in ax.get_xticklabels()]


def _cs_cells(figure) -> list[tuple[str, str]]:
    """The kingdom x type of each y position of the butterfly, from the first axes' tick labels."""
    labels = [t.get_text().split("\n")[0] for t in figure.axes[0].get_yticklabels()]
    return [(label.split(" ")[0], label.split("(")[-1].rstrip(")")) for label in labels]


def _slot_of(ax, bar, horizontal: bool) -> tuple[int, float]:
    """(cell index, offset in the cell) of a bar's centre."""
    centre = bar.get_y() + bar.get_height() / 2 if horizontal else bar.get_x() + bar.get_width() / 2
    return round(centre), centre - round(centre)


def test_signalp_figures_titles_labels_missing_cells(figures):
    cells = [(k, t) for k in ("EUKARYA", "ARCHAEA") for t in REPORTED_TYPES]
    mcc = figures["signalp_mcc"]
    assert mcc.get_suptitle().startswith("demo_sp: ") and "MCC2 and MCC1" in mcc.get_suptitle()
    assert [ax.get_ylabel().split(" ")[0] for ax in mcc.axes] == ["MCC2", "MCC1"]
    for ax in mcc.axes:
        assert ax.get_title() and ax.get_xlabel()
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert "ARCHAEA\nTat/SPI\nTAT\nn=0/3" in ticks and "EUKARYA\nSec/SPI\nSP\nn=3" in ticks
        assert "EUKARYA\nSec/SPIII*\nPILIN\nn=3" in ticks  # PEFT-SP's star: few training samples
        assert sorted(_mcc_cells(ax)) == sorted(cells)
    cs = figures["signalp_cleavage_w0"]
    assert cs.get_suptitle().startswith("demo_sp: ")
    assert sorted(_cs_cells(cs)) == sorted(cells)
    assert "n=0/3" in cs.axes[0].get_yticklabels()[_cs_cells(cs).index(("ARCHAEA", "TAT"))].get_text()
    for figure in (mcc, cs):
        assert not [p for ax in figure.axes for p in _bars(ax, "published-baseline")]  # no published table: no baseline
        assert not any("SignalP" in t.get_text() for t in figure.legends[0].get_texts())
        for ax in figure.axes:
            bars = _bars(ax, "method-bar")
            assert len(bars) == len(cells) * len(SP_METHODS) - 1  # the undefined value: an x at 0, no bar
            assert all(np.isfinite(b.get_height()) and np.isfinite(b.get_width()) for b in bars)
            horizontal = figure is cs
            adapter_slot = -0.4 + 0.8 / len(SP_METHODS) * (SP_METHODS.index("adapter") + 0.5)
            cell_names = _cs_cells(cs) if horizontal else _mcc_cells(ax)
            missing = cell_names.index(("ARCHAEA", "TAT"))
            assert not [b for b in bars if _slot_of(ax, b, horizontal) == pytest.approx((missing, adapter_slot))]
            marks = np.concatenate([c.get_offsets() for c in ax.collections if c.get_gid() == "no-value"])
            assert np.allclose(marks, [[0.0, missing + adapter_slot] if horizontal else [missing + adapter_slot, 0.0]])
            flat = [c for c in ax.collections if c.get_gid() == "zero-value"]
            assert len(flat) == 1 and len(flat[0].get_segments()) == 1  # the 0 of lora, EUKARYA PILIN


def test_cleavage_butterfly_precision_left_recall_right_both_labelled(figures):
    cs = figures["signalp_cleavage_w0"]
    precision, recall = cs.axes
    assert "precision" in precision.get_xlabel() and "precision" in precision.get_title()
    assert "recall" in recall.get_xlabel() and "recall" in recall.get_title()
    assert precision.get_xlim()[0] > precision.get_xlim()[1]  # grows to the left of the centre
    assert recall.get_xlim()[0] < recall.get_xlim()[1]
    assert precision.get_ylabel() and all(t.get_text() for t in precision.get_yticklabels())
    assert not any(t.get_visible() and t.get_text() for t in recall.get_yticklabels())  # one set of cell labels
    for ax in (precision, recall):  # horizontal bars: the value is the width
        assert {round(b.get_height(), 6) for b in _bars(ax, "method-bar")} == {round(0.8 / len(SP_METHODS), 6)}
    assert len(cs.legends) == 1


PUBLISHED_ROWS = [  # (metric, kingdom, sp_type, value, spread) of SignalP 6.0 for demo_sp
    ("mcc2", "EUKARYA", "SP", 0.958, ""),
    ("mcc2", "ARCHAEA", "PILIN", 0.426, ""),
    ("mcc2", "POSITIVE", "LIPO", 0.882, ""),  # a cell no run of the table has
    ("cs_recall_w0", "ARCHAEA", "LIPO", 0.61, "0.05"),
]


@pytest.fixture(scope="module")
def published_figures(results, tmp_path_factory):
    """The signal-peptide figures with a published table that has SignalP 6.0 rows for the task,
    rows that must not be drawn (another task, a method's own published number, the ALL mean, the
    dev split), and one that has no rows for the task."""
    out = tmp_path_factory.mktemp("published")
    head = "experiment,source,task,model,method,split,metric,kingdom,sp_type,value,spread,note\n"
    rows = [f"e,a cited source,demo_sp,signalp6,signalp6,test,{m},{k},{t},{v},{s}," for m, k, t, v, s in PUBLISHED_ROWS]
    rows += ["e,a cited source,other_task,signalp6,signalp6,test,mcc2,EUKARYA,TAT,0.5,,",
             "e,a cited source,demo_sp,tiny_esm,lora,test,mcc2,EUKARYA,TAT,0.5,,",
             "e,a cited source,demo_sp,signalp6,signalp6,test,mcc2,ALL,ALL,0.7,,",
             "e,a cited source,demo_sp,signalp6,signalp6,dev,mcc2,ARCHAEA,TAT,0.3,,"]
    (out / "published.csv").write_text(head + "\n".join(rows) + "\n")
    (out / "other.csv").write_text(head + rows[-4] + "\n")
    figures = {}
    for name in ("published", "other"):
        figures[f"signalp_mcc_{name}"], figures[f"signalp_cleavage_w0_{name}"] = plot_task_figures(
            results / "signalp_table.csv", "demo_sp",
            {"mcc_png": out / f"m{name}.png", "mcc_svg": out / f"m{name}.svg", "cs_png": out / f"c{name}.png",
             "cs_svg": out / f"c{name}.svg"}, methods=METHODS, published=out / f"{name}.csv")
    return figures


def test_published_figures_place_labels_without_overlap(published_figures):
    test_point_labels_do_not_overlap_and_sit_at_their_markers(published_figures)


def test_signalp6_baseline_bars_exactly_where_published_with_published_heights(published_figures):
    slots = 1 + len(SP_METHODS)
    first_slot = -0.4 + 0.8 / slots / 2  # the baseline is the first bar of each group
    for name, horizontal in (("signalp_mcc_published", False), ("signalp_cleavage_w0_published", True)):
        figure = published_figures[name]
        legend = {t.get_text(): h for h, t in zip(figure.legends[0].legend_handles, figure.legends[0].get_texts())}
        assert to_hex(legend["SignalP 6.0 (published)"].get_facecolor()) == to_hex(BASELINE_STYLE.colour)
        assert BASELINE_STYLE.colour not in {s.colour for s in method_styles(METHODS, METHODS).values()}
        for ax in figure.axes:
            cells = _cs_cells(figure) if horizontal else _mcc_cells(ax)
            assert ("POSITIVE", "LIPO") in cells if not horizontal else ("POSITIVE", "LIPO") not in cells
            metric = ("cs_precision_w0" if "precision" in ax.get_xlabel() else "cs_recall_w0") if horizontal else \
                ax.get_ylabel().split(" ")[0].lower()
            expected = {(k, t): v for m, k, t, v, _ in PUBLISHED_ROWS if m == metric}
            drawn = {}
            for bar in _bars(ax, "published-baseline"):
                cell, offset = _slot_of(ax, bar, horizontal)
                assert offset == pytest.approx(first_slot)
                drawn[cells[cell]] = bar.get_width() if horizontal else bar.get_height()
            assert drawn == pytest.approx(expected), (name, metric)
            # every other cell: a missing published value is an x at 0 in the baseline's slot, not a bar
            marks = np.concatenate([c.get_offsets() for c in ax.collections if c.get_gid() == "no-value"])
            at = {round(float(p[1] if horizontal else p[0]) - first_slot, 6) for p in marks
                  if float(p[0] if horizontal else p[1]) == 0}
            assert {cells.index(c) for c in cells if c not in expected} <= at
            assert not {cells.index(c) for c in expected} & at
            if not expected:
                assert "no SignalP 6.0" in ax.get_title()
            # the published cell no run defines: every method is missing there, none has a bar
            if ("POSITIVE", "LIPO") in cells:
                assert not [b for b in _bars(ax, "method-bar") if _slot_of(ax, b, horizontal)[0] == cells.index(("POSITIVE", "LIPO"))]
                assert "n=0" in ax.get_xticklabels()[cells.index(("POSITIVE", "LIPO"))].get_text()
        # the published spread (± 0.05 on ARCHAEA LIPO recall) is the baseline bar's error bar
        if horizontal:
            recall = figure.axes[1]
            at = _cs_cells(figure).index(("ARCHAEA", "LIPO")) + first_slot
            segments = [seg for c in recall.containers if isinstance(c, ErrorbarContainer)
                        for seg in c.lines[2][0].get_segments() if np.isclose(seg[0][1], at)]
            assert len(segments) == 1 and np.allclose(sorted(segments[0][:, 0]), [0.56, 0.66])


def test_no_published_rows_for_the_task_leaves_no_baseline_and_says_so(published_figures):
    for name in ("signalp_mcc_other", "signalp_cleavage_w0_other"):
        figure = published_figures[name]
        assert not [b for ax in figure.axes for b in _bars(ax, "published-baseline")]
        texts = [t.get_text() for t in figure.legends[0].get_texts()]
        assert "SignalP 6.0 (published): none for demo_sp in other.csv" in texts
        assert "SignalP 6.0 (published)" not in texts
        for ax in figure.axes:
            assert len(_bars(ax, "method-bar")) == 10 * len(SP_METHODS) - 1


def test_two_experiments_giving_signalp6_the_same_number_are_refused_with_the_line(tmp_path):
    from seqpeft.util.errors import SeqpeftInputError
    from seqpeft.analysis.signal_peptide import published_baseline

    path = tmp_path / "published.csv"
    path.write_text("experiment,source,task,model,method,split,metric,kingdom,sp_type,value,spread,note\n"
                    "a,paper A,demo_sp,signalp6,signalp6,test,mcc2,EUKARYA,SP,0.9,,\n"
                    "a,paper A,demo_sp,signalp6,signalp6,test,mcc2,ARCHAEA,SP,0.8,,\n"
                    "b,paper B,demo_sp,signalp6,signalp6,test,mcc2,EUKARYA,SP,0.95,,\n")
    with pytest.raises(SeqpeftInputError, match=r"line 4: gives SignalP 6.0's mcc2 of demo_sp EUKARYA SP twice"):
        published_baseline(path, "demo_sp")
    assert published_baseline(path, "other_task") == {}
