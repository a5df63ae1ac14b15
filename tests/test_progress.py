"""Progress bars appear only in interactive runs (or when forced), never in job logs."""

from __future__ import annotations

from seqpeft.util import progress


def test_bars_are_silent_when_not_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("SEQPEFT_PROGRESS", raising=False)
    assert list(progress.iterate(range(5), "eval")) == [0, 1, 2, 3, 4]
    bar = progress.bar(3, "epoch 1")
    bar.update()
    bar.close()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_forced_bars_draw_on_stderr(monkeypatch, capsys):
    monkeypatch.setenv("SEQPEFT_PROGRESS", "1")
    assert list(progress.iterate(range(4), "eval")) == [0, 1, 2, 3]
    bar = progress.bar(2, "epoch 3")
    bar.update()
    bar.update()
    bar.close()
    err = capsys.readouterr().err
    assert "eval" in err and "/4" in err and "epoch 3" in err and "/2" in err
