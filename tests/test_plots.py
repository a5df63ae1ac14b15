"""Tests for seqpeft.analysis.plots: the Pareto front on hand-made points and the figures' files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.analysis.plots import pareto_front, plot_mcc_over_time, plot_pareto

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHODS = ("full", "lora", "ia3", "bitfit")


def test_pareto_front_simple():
    points = [(1, 0.5), (2, 0.4), (3, 0.7), (10, 0.9), (5, 0.6)]
    # (2, 0.4) is dominated by (1, 0.5); (5, 0.6) by (3, 0.7)
    assert pareto_front(points) == [0, 2, 3]


def test_pareto_front_ties_and_duplicates():
    points = [
        (2.0, 0.8),  # 0: same x as 1 but lower y -> dominated
        (2.0, 0.9),  # 1: front
        (1.0, 0.5),  # 2: front (cheapest)
        (3.0, 0.9),  # 3: same y as 1 but costlier -> dominated
        (2.0, 0.9),  # 4: identical to 1 -> neither dominates, both on the front
        (float("nan"), 1.0),  # 5: NaN never on the front, dominates nothing
        (0.5, float("nan")),  # 6
        (4.0, 0.95),  # 7: front
    ]
    assert pareto_front(points) == [2, 1, 4, 7]
    assert pareto_front(list(reversed(points))) == [5, 3, 6, 0]  # same points, reversed indices
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.1)]) == [0]


def make_summary(path: Path) -> Path:
    rows = []
    for model, scale in (("nt-50m", 1.0), ("nt-500m", 4.0)):
        for i, method in enumerate(METHODS):
            for partition in range(3):
                rows.append({
                    "task": "promoter", "model": model, "method": method, "partition": str(partition),
                    "test_mcc": 0.5 + 0.08 * i * (1 if method != "bitfit" else -1) + 0.01 * partition + 0.05 * scale,
                    "trainable_params": int(scale * 10 ** (6 - i)),
                    "peak_memory_mb": scale * (900 - 150 * i) + partition,
                    "train_seconds": scale * (120 - 20 * i) + 3 * partition,
                    "memory_device": "cpu",
                })
    rows.append({"task": "splice", "model": "nt-50m", "method": "lora", "partition": "0", "test_mcc": 0.3,
                 "trainable_params": 10, "peak_memory_mb": 1.0, "train_seconds": 1.0, "memory_device": "cpu"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def check_figure(png: Path, svg: Path, labels) -> None:
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == PNG_MAGIC
    text = svg.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<?xml") and "</svg>" in text
    for label in labels:
        assert label in text, label
    assert not [p for p in png.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("axis", ["params", "memory", "time"])
def test_plot_pareto_writes_png_and_svg(tmp_path, axis):
    summary = make_summary(tmp_path / "summary.csv")
    png, svg = tmp_path / "fig" / f"{axis}.png", tmp_path / "fig" / f"{axis}.svg"
    plot_pareto(summary, "promoter", axis, png, svg)
    check_figure(png, svg, [*METHODS, "promoter", "Pareto front"])


def test_plot_pareto_rejects_unknown_axis_and_task(tmp_path):
    summary = make_summary(tmp_path / "summary.csv")
    with pytest.raises(SeqpeftInputError, match="params, memory, time"):
        plot_pareto(summary, "promoter", "flops", tmp_path / "a.png", tmp_path / "a.svg")
    with pytest.raises(SeqpeftInputError, match="promoter, splice"):
        plot_pareto(summary, "enhancer", "params", tmp_path / "a.png", tmp_path / "a.svg")
    assert not (tmp_path / "a.png").exists()


def write_history(root: Path, task, model, method, partition, rate) -> Path:
    path = root / "runs" / task / model / method / str(partition) / "history.csv"
    path.parent.mkdir(parents=True)
    steps = range(1, 6)
    pd.DataFrame({
        "step": [100 * s for s in steps],
        "epoch": list(steps),
        "wall_seconds": [10.0 * s * rate for s in steps],
        "train_loss": [1.0 / s for s in steps],
        "dev_loss": [1.1 / s for s in steps],
        "dev_mcc": [min(0.9, 0.1 * s / rate + 0.01 * partition) for s in steps],
        "dev_accuracy": [0.5 + 0.05 * s for s in steps],
    }).to_csv(path, index=False)
    return path


def test_plot_mcc_over_time(tmp_path):
    files = [
        write_history(tmp_path, "promoter", model, method, partition, rate)
        for model in ("nt-50m", "nt-500m")
        for method, rate in (("full", 2.0), ("lora", 1.0))
        for partition in range(2)
    ]
    files.append(write_history(tmp_path, "splice", "nt-50m", "ia3", 0, 1.0))  # other task: skipped
    png, svg = tmp_path / "t.png", tmp_path / "t.svg"
    plot_mcc_over_time(files, "promoter", png, svg)
    check_figure(png, svg, ["model: nt-50m", "model: nt-500m", "full", "lora", "Dev MCC"])
    assert "ia3" not in svg.read_text(encoding="utf-8")

    with pytest.raises(SeqpeftInputError, match="no history.csv for task 'enhancer'"):
        plot_mcc_over_time(files, "enhancer", png, svg)

    broken = tmp_path / "runs" / "promoter" / "m" / "lora" / "9" / "history.csv"
    broken.parent.mkdir(parents=True)
    broken.write_text("step,epoch\n1,1\n", encoding="utf-8")
    with pytest.raises(SeqpeftInputError, match="wall_seconds, dev_mcc") as info:
        plot_mcc_over_time([broken], "promoter", png, svg)
    assert str(broken) in str(info.value)


def test_pareto_axis_keeps_the_shared_value_of_dodged_runs(tmp_path):
    """Three methods with the same parameter count (demo_tf's LoRA variants of tiny_llama_bytes,
    8,768 each) are drawn side by side, and the axis labels the value they share, not rounded
    neighbours no run has."""
    summary = pd.DataFrame({"task": "t", "model": "m", "method": ["lora", "lora_dsp", "lora_dsp_nt"],
                            "partition": "0", "test_mcc": [0.6, 0.7, 0.8], "trainable_params": 8768})
    summary.to_csv(tmp_path / "summary.csv", index=False)
    figure = plot_pareto(tmp_path / "summary.csv", "t", "params", tmp_path / "p.png", tmp_path / "p.svg")
    ax = figure.axes[0]
    figure.canvas.draw()
    low, high = ax.get_xlim()
    shown = [(tick, label.get_text()) for tick, label in zip(ax.xaxis.get_majorticklocs(), ax.xaxis.get_majorticklabels())
             if low <= tick <= high and label.get_text()]
    assert shown == [(8768, "8,768")]
    assert not [label for label in ax.xaxis.get_minorticklabels() if label.get_text()]
    drawn = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_marker() not in ("None", None, ""))
    assert len(set(drawn)) == 3 and drawn[0] < 8768 < drawn[-1]  # markers dodged around the real value


def test_pareto_error_bars_are_the_tables_intervals(tmp_path):
    from matplotlib.container import ErrorbarContainer

    summary = pd.DataFrame({"task": "t", "model": "m", "method": ["full", "lora"], "partition": "0",
                            "test_mcc": [0.8, 0.7], "trainable_params": [50_000, 800]})
    table = pd.DataFrame({"task": "t", "model": "m", "method": ["full", "lora"], "test_score_ci_low": [0.75, 0.6],
                          "test_score_ci_high": [0.82, 0.78]})
    summary.to_csv(tmp_path / "summary.csv", index=False)
    table.to_csv(tmp_path / "table.csv", index=False)
    figure = plot_pareto(tmp_path / "summary.csv", "t", "params", tmp_path / "p.png", tmp_path / "p.svg",
                         table_csv=tmp_path / "table.csv")
    ax = figure.axes[0]
    bars = {}
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer) and container.has_yerr:
            (segment,) = container.lines[2][0].get_segments()
            bars[round(float(segment[0][0]))] = (round(float(segment[0][1]), 6), round(float(segment[1][1]), 6))
    assert bars == {50_000: (0.75, 0.82), 800: (0.6, 0.78)}
    assert "95% interval" in ax.get_ylabel()
