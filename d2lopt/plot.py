"""Plots the notebooks draw: live loss curves and bar charts of measurements.

Taught in ``04_training_loop`` (:class:`LiveLossPlot`) and ``03_dataset_dataloader``
(:func:`bar_chart`, :func:`explore`). Unlike ``d2l.Animator``, which calls
``clear_output()`` and so wipes everything else the cell printed (progress bar, messages),
the live plot owns exactly one output and redraws it in place through a display handle.
Executed without a live front end (``nbconvert``, ``nbval``), the same calls leave one
figure as the cell's output, whose text form (``<Figure size ...>``) never changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["LiveLossPlot", "bar_chart", "explore"]


def _new_figure(figsize: tuple[float, float]):
    """A figure that only this module displays.

    Importing pyplot activates the notebook's inline backend (which teaches IPython to
    render figures as PNG); closing the figure right away stops pyplot from showing a
    second copy when the cell ends.
    """
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize)
    plt.close(fig)
    return fig


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


class LiveLossPlot:
    """Loss curves that redraw after every epoch; pass as ``fit(..., on_epoch_end=plot)``.

    Each call receives one epoch record (``{"epoch": 3, "train_loss": 0.41, ...}``) and
    adds a point to every curve whose key is in the record and not ``None`` (``fit``
    reports ``test_loss=None`` on epochs it does not evaluate). In IPython the figure is
    displayed once and then updated in place; elsewhere (a script, a test) only
    :attr:`history` and :attr:`figure` are kept up to date.

    Args:
        keys: the record fields to draw, one line each.
        title: figure title.
        ylabel: label of the y axis.
        figsize: inches, as for matplotlib.

    Example:
        >>> plot = LiveLossPlot()
        >>> plot({"epoch": 1, "train_loss": 0.9, "test_loss": None})
        >>> plot.history
        {'train_loss': [(1, 0.9)], 'test_loss': []}
    """

    def __init__(
        self,
        keys: Sequence[str] = ("train_loss", "test_loss"),
        *,
        title: str | None = None,
        ylabel: str = "loss",
        figsize: tuple[float, float] = (6.0, 3.5),
    ) -> None:
        if isinstance(keys, str) or not keys or not all(isinstance(k, str) for k in keys):
            raise TypeError(f"keys: expected a non-empty sequence of field names, got {keys!r}")
        self.history: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
        self.title, self.ylabel = title, ylabel
        self.figure = _new_figure(figsize)
        self._ax = self.figure.subplots()
        self._handle: Any = None

    def __call__(self, record: Mapping[str, Any]) -> None:
        if "epoch" not in record:
            raise ValueError(f"record: needs an 'epoch' field, got keys {sorted(record)}")
        for key, points in self.history.items():
            value = record.get(key)
            if value is not None:
                points.append((int(record["epoch"]), float(value)))
        self._draw()
        self._show()

    def _draw(self) -> None:
        from matplotlib.ticker import MaxNLocator

        ax = self._ax
        ax.clear()
        for key, points in self.history.items():
            if points:
                epochs, values = zip(*points, strict=True)
                ax.plot(epochs, values, marker="o", label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(self.ylabel)
        if self.title:
            ax.set_title(self.title)
        ax.grid(alpha=0.3)
        if any(self.history.values()):
            ax.legend()
        self.figure.tight_layout()

    def _show(self) -> None:
        if not _in_ipython():
            return
        from IPython.display import display

        if self._handle is None:
            self._handle = display(self.figure, display_id=True)  # the one output we own
        else:
            self._handle.update(self.figure)  # redraw in place, other outputs untouched


def bar_chart(
    ax: Any,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    xlabel: str,
    title: str | None = None,
    fmt: str = "{:,.0f}",
    highlight: int | None = None,
) -> Any:
    """Horizontal bars, first label on top, each value written at the end of its bar.

    Args:
        ax: a matplotlib ``Axes``.
        labels, values: one bar per pair.
        xlabel: what the values measure, with the unit (``"samples/s"``).
        title: axes title.
        fmt: format of the value written next to each bar.
        highlight: index of a bar to draw in a second colour (the best one, say).

    Returns:
        ``ax``, for chaining.
    """
    if len(labels) != len(values):
        raise ValueError(
            f"labels/values: need one label per value, got {len(labels)} and {len(values)}"
        )
    colors = ["tab:blue"] * len(values)
    if highlight is not None:
        colors[highlight] = "tab:orange"
    positions = list(range(len(values)))[::-1]
    ax.barh(positions, values, color=colors)
    ax.set_yticks(positions, labels)
    for y, v in zip(positions, values, strict=True):
        ax.annotate(" " + fmt.format(v), (v, y), va="center", ha="left", fontsize="small")
    ax.set_xlabel(xlabel)
    ax.margins(x=0.2)
    if title:
        ax.set_title(title)
    return ax


def explore(
    measure: Callable[..., float],
    controls: Mapping[str, Any],
    *,
    xlabel: str,
    button: str = "measure",
    max_bars: int = 8,
) -> Any:
    """Widgets that re-run ``measure(**settings)`` on each click and chart every result.

    ``controls`` maps each keyword of ``measure`` to an ipywidgets control; the button
    runs one measurement with the controls' current values and redraws a bar chart of the
    last ``max_bars`` results, so settings can be compared side by side. One measurement
    with the initial values runs at once, so the chart is never empty.

    Args:
        measure: returns one number per call (e.g. samples/s).
        controls: ``{"num_workers": IntSlider(...), ...}``.
        xlabel: what ``measure`` returns, with the unit.
        button: the button's text.
        max_bars: how many of the latest results stay on the chart.

    Returns:
        an ``ipywidgets.VBox`` to display (the last expression of a cell).
    """
    import ipywidgets as widgets
    from IPython.display import display

    if not controls:
        raise ValueError("controls: give at least one {keyword: widget} pair")
    out = widgets.Output()
    run_button = widgets.Button(description=button, button_style="primary")
    results: list[tuple[str, float]] = []

    def run(_: Any = None) -> None:
        settings = {name: control.value for name, control in controls.items()}
        run_button.disabled = True  # one measurement at a time
        try:
            value = measure(**settings)
        finally:
            run_button.disabled = False
        results.append((" ".join(f"{k}={v}" for k, v in settings.items()), value))
        shown = results[-max_bars:]
        fig = _new_figure((8.0, 0.5 + 0.45 * len(shown)))
        labels, values = zip(*shown, strict=True)
        best = max(range(len(values)), key=values.__getitem__)
        bar_chart(fig.subplots(), labels, values, xlabel=xlabel, highlight=best)
        fig.tight_layout()
        with out:
            out.clear_output(wait=True)
            display(fig)

    run_button.on_click(run)
    run()
    return widgets.VBox([widgets.HBox([*controls.values(), run_button]), out])
