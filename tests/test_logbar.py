"""Tests for d2lopt.lab.logbar: a log callback that drives a progress bar (12)."""

from __future__ import annotations

from d2lopt.lab.logbar import LogBar
from d2lopt.train import bars_enabled


def test_tqdm_disable_turns_bars_off(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not bars_enabled()
    monkeypatch.setenv("TQDM_DISABLE", "")
    assert bars_enabled()


def test_log_bar_counts_and_keeps_every_line(monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with LogBar("ladder") as bar:
        for i in range(3):
            bar(f"step {i}")
    assert bar.lines == ["step 0", "step 1", "step 2"]
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # disabled: silent


def test_log_bar_shows_the_latest_line_when_enabled(capsys):
    with LogBar("ladder", enabled=True, width=8) as bar:
        bar("a long line that gets cut")
    assert bar.bar.postfix == "a long l"
    assert "ladder: 1 steps" in capsys.readouterr().err


def test_a_timed_bar_shows_the_time_left_of_the_budget(capsys):
    with LogBar("ladder", enabled=True, echo=True) as bar:
        bar("[   3 s] warm")
        bar.at(30.0, 120.0)
    err = capsys.readouterr().err
    assert bar.bar.total == 120.0 and bar.bar.n == 30.0
    assert "[   3 s] warm" in err  # echoed above the bar
    assert "25%" in err and "left" in err
