"""Tests for d2lopt.plot: live loss curves, bar charts and the loader explorer."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from d2lopt import TrainConfig, fit, mlp, plot
from d2lopt.plot import LiveLossPlot, bar_chart, explore, interval_chart

matplotlib.use("Agg")


def _lines(p: LiveLossPlot) -> dict[str, tuple[list, list]]:
    ax = p.figure.axes[0]
    return {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.lines}


def test_live_loss_plot_collects_points_and_skips_missing_values():
    p = LiveLossPlot()
    p({"epoch": 1, "train_loss": 0.9, "test_loss": None, "epoch_time": 1.0})
    p({"epoch": 2, "train_loss": 0.5, "test_loss": 0.7})
    assert p.history == {"train_loss": [(1, 0.9), (2, 0.5)], "test_loss": [(2, 0.7)]}
    assert _lines(p) == {"train loss": ([1, 2], [0.9, 0.5]), "test loss": ([2], [0.7])}
    assert p.figure.axes[0].get_legend() is not None


def test_live_loss_plot_validates():
    with pytest.raises(TypeError, match="keys"):
        LiveLossPlot(keys="train_loss")
    with pytest.raises(TypeError, match="keys"):
        LiveLossPlot(keys=())
    with pytest.raises(ValueError, match="'epoch'"):
        LiveLossPlot()({"train_loss": 1.0})


def test_live_loss_plot_displays_once_then_updates_in_place(monkeypatch):
    calls = []

    class Handle:
        def update(self, obj):
            calls.append(("update", obj))

    def fake_display(obj, display_id=False):
        calls.append(("display", obj))
        assert display_id is True  # a handle, so later epochs redraw the same output
        return Handle()

    import IPython.display

    monkeypatch.setattr(plot, "_in_ipython", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    p = LiveLossPlot()
    for epoch in (1, 2, 3):
        p({"epoch": epoch, "train_loss": 1 / epoch})
    assert [kind for kind, _ in calls] == ["display", "update", "update"]
    assert all(obj is p.figure for _, obj in calls)


def _visible_ticks(axis, limits) -> list[float]:
    low, high = sorted(limits)
    return [t for t in axis.get_majorticklocs() if low <= t <= high]


def _tick_texts(axis, limits) -> list[str]:
    ticks = _visible_ticks(axis, limits)
    return axis.get_major_formatter().format_ticks(ticks)


def test_live_loss_plot_axes_are_sane_after_one_epoch():
    """Issue 15: one point gave x from 0.945 to 1.050 and y ticks four decimals apart."""
    p = LiveLossPlot()
    p({"epoch": 1, "train_loss": 0.6493, "test_loss": 0.6495})
    ax = p.figure.axes[0]
    assert ax.get_xlim() == (0.5, 2.5)  # room for epoch 2, centred on whole epochs
    assert _visible_ticks(ax.xaxis, ax.get_xlim()) == [1.0, 2.0]
    assert _tick_texts(ax.xaxis, ax.get_xlim()) == ["1", "2"]
    low, high = ax.get_ylim()
    assert low == 0 and high == pytest.approx(1.1 * 0.6495)  # against zero, a little headroom
    y_texts = _tick_texts(ax.yaxis, ax.get_ylim())
    assert 3 <= len(y_texts) <= 6, y_texts  # a few round ticks
    assert all(len(t.partition(".")[2]) <= 2 for t in y_texts), y_texts  # few decimals
    assert len(set(y_texts)) == len(y_texts), y_texts  # no repeated labels
    assert ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "loss (cross-entropy, mean per sample)"


def test_live_loss_plot_x_range_follows_the_epochs():
    p = LiveLossPlot(ylabel="accuracy (fraction correct)")
    for epoch in range(1, 6):
        p({"epoch": epoch, "train_loss": 2.3 / epoch})
    ax = p.figure.axes[0]
    assert ax.get_xlim() == (0.5, 5.5)
    assert _visible_ticks(ax.xaxis, ax.get_xlim()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert ax.get_ylim() == pytest.approx((0.0, 1.1 * 2.3))
    assert ax.get_ylabel() == "accuracy (fraction correct)"
    assert all(len(t.partition(".")[2]) <= 2 for t in _tick_texts(ax.yaxis, ax.get_ylim()))


def test_live_loss_plot_is_quiet_outside_ipython(capsys):
    p = LiveLossPlot()
    p({"epoch": 1, "train_loss": 1.0})
    assert p._handle is None
    assert capsys.readouterr().out == ""


def test_live_loss_plot_as_fit_callback():
    torch.manual_seed(0)
    X, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    loader = DataLoader(TensorDataset(X, y), batch_size=16)
    p = LiveLossPlot(keys=("train_loss", "test_loss", "test_acc"))
    config = TrainConfig(num_epochs=3, batch_size=16, device="cpu", eval_every=2)
    history = fit(mlp(), loader, loader, config, progress=False, on_epoch_end=p)
    assert [e for e, _ in p.history["train_loss"]] == [1, 2, 3]
    assert [e for e, _ in p.history["test_loss"]] == [2, 3]  # epoch 1 was not evaluated
    assert p.history["train_loss"][-1][1] == pytest.approx(history[-1]["train_loss"])


def test_bar_chart_draws_one_annotated_bar_per_value():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    bar_chart(ax, ["a", "b", "c"], [3.0, 1.0, 2.0], xlabel="samples/s", highlight=2)
    bars = ax.patches
    # first label on top: "a" is the highest bar
    heights = {t.get_text(): t.get_position()[1] for t in ax.get_yticklabels()}
    assert sorted(heights, key=heights.get, reverse=True) == ["a", "b", "c"]
    assert sorted(b.get_width() for b in bars) == [1.0, 2.0, 3.0]
    colors = [b.get_facecolor() for b in bars]
    assert colors[2] != colors[0] == colors[1]
    assert [t.get_text().strip() for t in ax.texts] == ["3", "1", "2"]
    assert ax.get_xlabel() == "samples/s"
    assert ax.get_ylabel() == ""  # only when asked for
    bar_chart(ax, ["a"], [1.0], xlabel="samples/s", ylabel="setting")
    assert ax.get_ylabel() == "setting"
    with pytest.raises(ValueError, match="one label per value"):
        bar_chart(ax, ["a"], [1.0, 2.0], xlabel="x")
    plt.close(fig)


def _explorer_parts(ui):
    """(controls box, button, status line, chart output) of an explorer."""
    controls, actions, out = ui.children
    button, status = actions.children
    return controls, button, status, out


def test_explore_measures_once_then_on_every_click(monkeypatch):
    widgets = pytest.importorskip("ipywidgets")
    seen, figures = [], []
    new_figure = plot._new_figure
    monkeypatch.setattr(
        plot, "_new_figure", lambda size: figures.append(new_figure(size)) or figures[-1]
    )

    def measure(workers, pin):
        seen.append((workers, pin))
        return 100.0 * (workers + 1)

    workers = widgets.IntSlider(value=0, min=0, max=4)
    pin = widgets.Checkbox(value=False)
    ui = explore(measure, {"workers": workers, "pin": pin}, xlabel="samples/s")
    assert seen == [(0, False)]  # one measurement with the initial values
    controls, button, status, out = _explorer_parts(ui)
    assert list(controls.children) == [workers, pin]
    assert isinstance(button, widgets.Button) and button.description == "measure"
    assert isinstance(out, widgets.Output)
    assert status.value == "last measured: <code>workers=0, pin=False</code>: 100 samples/s"
    workers.value, pin.value = 2, True
    button.click()
    assert seen == [(0, False), (2, True)]
    assert not button.disabled
    assert status.value == "last measured: <code>workers=2, pin=True</code>: 300 samples/s"
    # the chart is redrawn with every result so far, the best one highlighted
    ax = figures[-1].axes[0]
    heights = {t.get_text(): t.get_position()[1] for t in ax.get_yticklabels()}
    assert sorted(heights, key=heights.get, reverse=True) == [
        "workers=0, pin=False",  # oldest result on top
        "workers=2, pin=True",
    ]
    assert sorted(b.get_width() for b in ax.patches) == [100.0, 300.0]
    assert ax.patches[1].get_facecolor() != ax.patches[0].get_facecolor()
    assert ax.get_xlabel() == "samples/s"
    assert ax.get_ylabel() == "setting"
    assert [t.get_text().strip() for t in ax.texts] == ["100", "300"]
    with pytest.raises(ValueError, match="controls"):
        explore(measure, {}, xlabel="samples/s")
    with pytest.raises(ValueError, match="max_bars"):
        explore(measure, {"workers": workers, "pin": pin}, xlabel="samples/s", max_bars=0)


def test_explore_keeps_the_last_max_bars_results(monkeypatch):
    widgets = pytest.importorskip("ipywidgets")
    figures = []
    new_figure = plot._new_figure
    monkeypatch.setattr(
        plot, "_new_figure", lambda size: figures.append(new_figure(size)) or figures[-1]
    )
    n = widgets.IntSlider(value=0, max=10)
    ui = explore(lambda n: float(n), {"n": n}, xlabel="items/s", max_bars=2, fmt="{:.1f}")
    _, button, status, _ = _explorer_parts(ui)
    for value in (1, 2):
        n.value = value
        button.click()
    labels = [t.get_text() for t in figures[-1].axes[0].get_yticklabels()]
    assert sorted(labels) == ["n=1", "n=2"]
    assert status.value.endswith(": 2.0 items/s")


def test_explore_shows_it_is_busy_while_measuring(monkeypatch):
    """Disabled button reading "measuring…" and a status line while measure() runs; the
    button is back afterwards."""
    widgets = pytest.importorskip("ipywidgets")
    parts: dict[str, object] = {}
    during: list[tuple[bool, str, str, str]] = []

    def measure(num_workers, prefetch_factor):
        if parts:  # set once explore() returned: the clicks, not the first run
            button, status = parts["button"], parts["status"]
            during.append((button.disabled, button.description, button.icon, status.value))
        return 1.0

    slider = widgets.IntSlider(value=0, max=4)
    prefetch = widgets.IntSlider(value=2, min=1, max=8)
    ui = explore(measure, {"num_workers": slider, "prefetch_factor": prefetch}, xlabel="x")
    _, parts["button"], parts["status"], _ = _explorer_parts(ui)
    slider.value, prefetch.value = 2, 4
    parts["button"].click()
    assert during == [
        (
            True,
            "measuring…",
            "hourglass-half",
            "measuring <code>num_workers=2, prefetch_factor=4</code> …",
        )
    ]
    button = parts["button"]
    assert (button.disabled, button.description, button.icon) == (False, "measure", "play")


def test_explore_recovers_when_the_measurement_raises(monkeypatch):
    widgets = pytest.importorskip("ipywidgets")
    figures = []
    new_figure = plot._new_figure
    monkeypatch.setattr(
        plot, "_new_figure", lambda size: figures.append(new_figure(size)) or figures[-1]
    )

    def measure(batch_size):
        if batch_size > 64:
            raise RuntimeError("out of memory")
        return 10.0

    batch = widgets.IntSlider(value=32, max=256, description="batch")
    ui = explore(measure, {"batch_size": batch}, xlabel="samples/s", button="go")
    _, button, status, _ = _explorer_parts(ui)
    batch.value = 128
    button.click()  # ipywidgets reports the callback's error; the explorer must recover
    assert (button.disabled, button.description) == (False, "go")
    assert status.value == (
        "<code>batch_size=128</code>: failed with <code>RuntimeError: out of memory</code>"
    )
    assert len(figures) == 1  # the chart of the last good measurement stays
    batch.value = 64
    button.click()
    assert status.value.startswith("last measured: <code>batch_size=64</code>")
    assert len(figures) == 2
    # a measure() that fails on the first run fails the cell, with the button restored
    with pytest.raises(RuntimeError, match="out of memory"):
        explore(measure, {"batch_size": widgets.IntSlider(value=128, max=256)}, xlabel="x")


def test_explore_gives_every_description_room():
    """Issue 15: "num_work…", "prefetch_f…": the default description width cuts names."""
    widgets = pytest.importorskip("ipywidgets")
    workers = widgets.IntSlider(value=0, max=4, description="num_workers")
    prefetch = widgets.IntSlider(value=2, min=1, max=8)  # no description: gets its keyword
    batch = widgets.Dropdown(options=[16, 32], value=32, description="batch_size")
    pin = widgets.Checkbox(value=False, description="pin_memory")
    narrow = widgets.IntSlider(value=1, description="n", style={"description_width": "30px"})
    controls = {
        "num_workers": workers,
        "prefetch_factor": prefetch,
        "batch_size": batch,
        "pin_memory": pin,
        "n": narrow,
    }
    explore(lambda **kw: 1.0, controls, xlabel="samples/s")
    assert prefetch.description == "prefetch_factor"
    assert workers.description == "num_workers"
    for control in (workers, prefetch, batch, pin):
        assert control.style.description_width == "initial"
    assert narrow.style.description_width == "30px"  # the caller's choice stays


def test_interval_chart_draws_each_measured_interval_against_the_bar():
    import math

    import matplotlib.pyplot as plt

    from d2lopt.measure import Comparison

    def made(speedup, lo, hi, verdict):
        return Comparison("x", speedup, (lo, hi), 9, verdict, "", 0.05, 0.95, (), ())

    shown = {
        "faster": made(1.5, 1.4, 1.6, "holds"),
        "not measured here": None,
        "too few rounds": made(1.2, math.nan, math.nan, "inconclusive"),
    }
    ax = interval_chart(shown, title="q")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["faster", "too few rounds"]
    assert sorted(line.get_xdata()[0] for line in ax.lines if len(line.get_xdata()) == 2) == [
        1,
        1.05,
    ]
    assert ax.get_xscale() == "log" and ax.get_title() == "q" and "1.05" in ax.get_xlabel()
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="comparisons"):
        interval_chart({"gpu only": None})
