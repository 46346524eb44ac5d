"""Tests for d2lopt.plot: live loss curves, bar charts and the loader explorer."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from d2lopt import TrainConfig, fit, mlp, plot
from d2lopt.plot import LiveLossPlot, bar_chart, explore

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
    with pytest.raises(ValueError, match="one label per value"):
        bar_chart(ax, ["a"], [1.0, 2.0], xlabel="x")
    plt.close(fig)


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
    controls, out = ui.children
    button = controls.children[-1]
    assert list(controls.children[:-1]) == [workers, pin]
    workers.value, pin.value = 2, True
    button.click()
    assert seen == [(0, False), (2, True)]
    assert not button.disabled
    assert isinstance(out, widgets.Output)
    # the chart is redrawn with every result so far, the best one highlighted
    ax = figures[-1].axes[0]
    heights = {t.get_text(): t.get_position()[1] for t in ax.get_yticklabels()}
    assert sorted(heights, key=heights.get, reverse=True) == [
        "workers=0 pin=False",  # oldest result on top
        "workers=2 pin=True",
    ]
    assert sorted(b.get_width() for b in ax.patches) == [100.0, 300.0]
    assert ax.patches[1].get_facecolor() != ax.patches[0].get_facecolor()
    with pytest.raises(ValueError, match="controls"):
        explore(measure, {}, xlabel="samples/s")
