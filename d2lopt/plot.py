"""Plots the notebooks draw: live loss curves and bar charts of measurements.

Taught in ``04_training_loop`` (:class:`LiveLossPlot`) and ``03_dataset_dataloader``
(:func:`bar_chart`, :func:`explore`; ``05_disk_to_memory`` explores loaders with it too);
``06_cpu_compute`` and ``07_cpu_to_gpu`` draw their comparisons with :func:`interval_chart`.
Unlike ``d2l.Animator``, which calls ``clear_output()`` and so wipes everything else the
cell printed (progress bar, messages), the live plot owns exactly one output and redraws it
in place through a display handle.
Executed without a live front end (``nbconvert``, ``nbval``), the same calls leave one
figure as the cell's output, whose text form (``<Figure size ...>``) never changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["LiveLossPlot", "bar_chart", "explore", "interval_chart"]

# characters per line of a bar's label (wrap_label): long setting labels break after commas
LABEL_WIDTH = 40

# CSS classes of the explorer's parts: a stable handle for the browser test
# (tests/test_browser.py) and for anyone styling the notebook.
EXPLORER_CLASS = "d2lopt-explorer"
STATUS_CLASS = "d2lopt-explorer-status"


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

    The axes stay readable from the first epoch on: whole-number epoch ticks on an x range
    of at least two epochs (matplotlib would otherwise zoom into 0.95..1.05 around a single
    point), and a y axis from 0 with a few round ticks (a lone point would otherwise get
    ticks four decimals apart).

    Args:
        keys: the record fields to draw, one line each.
        title: figure title.
        ylabel: label of the y axis, with its unit.
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
        ylabel: str = "loss (cross-entropy, mean per sample)",
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
        from matplotlib.ticker import MaxNLocator, ScalarFormatter

        ax = self._ax
        ax.clear()
        for key, points in self.history.items():
            if points:
                epochs, values = zip(*points, strict=True)
                ax.plot(epochs, values, marker="o", label=key.replace("_", " "))
        points = [p for curve in self.history.values() for p in curve]
        last_epoch = max((e for e, _ in points), default=1)
        ax.set_xlim(0.5, max(2, last_epoch) + 0.5)  # room for the next epoch, not 0.95..1.05
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlabel("epoch")
        values = [v for _, v in points]
        if values and min(values) >= 0:  # losses and accuracies: show them against zero
            ax.set_ylim(0, 1.1 * max(values) or 1.0)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))  # a few round ticks...
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))  # ...no "+0.649"
        ax.set_ylabel(self.ylabel)
        if self.title:
            ax.set_title(self.title)
        ax.grid(alpha=0.3)
        if points:
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
    ylabel: str | None = None,
    title: str | None = None,
    fmt: str = "{:,.0f}",
    highlight: int | None = None,
) -> Any:
    """Horizontal bars, first label on top, each value written at the end of its bar.

    Args:
        ax: a matplotlib ``Axes``.
        labels, values: one bar per pair.
        xlabel: what the values measure, with the unit (``"samples/s"``).
        ylabel: what the bars are (``"setting"``), when the labels do not say it.
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
    ax.set_yticks(positions, [wrap_label(str(label)) for label in labels])
    for y, v in zip(positions, values, strict=True):
        ax.annotate(" " + fmt.format(v), (v, y), va="center", ha="left", fontsize="small")
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    keep_values_inside(ax)
    return ax


def interval_chart(ax: Any, comparisons: Mapping[str, Any], *, title: str | None = None) -> Any:
    """Each comparison's speed-up with its interval, against the line its verdict is about.

    Look before you read the verdict table: a point right of the dashed line ``1 +
    min_effect`` with its whole interval there *holds*; an interval across the line is
    *inconclusive*. ``comparisons`` maps a label to a :class:`d2lopt.sweep.Comparison`
    (``speedup``, ``ci``, ``min_effect``); draw only what was measured (no empty charts).

    Args:
        ax: a matplotlib ``Axes``.
        comparisons: label -> comparison, drawn top to bottom; at least one.
        title: axes title (say the device: the verdicts are for it).

    Returns:
        ``ax``, for chaining.
    """
    if not comparisons:
        raise ValueError("comparisons: need at least one measured comparison to draw")
    effects = {c.min_effect for c in comparisons.values()}
    for i, c in enumerate(comparisons.values()):
        low, high = c.ci
        err = [[max(0.0, c.speedup - low)], [max(0.0, high - c.speedup)]] if low == low else None
        ax.errorbar([c.speedup], [i], xerr=err, fmt="o", capsize=4, color="tab:blue")
    ax.axvline(1, color="gray", lw=1)
    for effect in sorted(effects):
        ax.axvline(1 + effect, color="gray", ls="--", lw=1)
    bars = ", ".join(f"{1 + e:g}" for e in sorted(effects))
    ax.set(
        yticks=range(len(comparisons)),
        yticklabels=[wrap_label(str(label)) for label in comparisons],
        xscale="log",
        xlabel=f"speed-up (interval; dashed: {bars})",
    )
    ax.invert_yaxis()
    if title:
        ax.set_title(title)
    return ax


def wrap_label(label: str, width: int = LABEL_WIDTH) -> str:
    """A long setting label on several lines, broken after its commas.

    ``"data=disk, num_workers=0, batch_size=64, prefetch_factor=2, pin_memory=False"`` on one
    line took about 70 % of an explorer chart's width, leaving the bars 150 px (issue 22);
    broken into lines of at most ``width`` characters it leaves them most of it.

    Example:
        >>> wrap_label("num_workers=2, prefetch_factor=4, persistent_workers=True")
        'num_workers=2,\nprefetch_factor=4,\npersistent_workers=True'
    """
    lines: list[str] = []
    for part in label.split(", "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            if lines:
                lines[-1] += ","
            lines.append(part)
    return "\n".join(lines)


def keep_values_inside(ax: Any, slack: float = 1.04) -> None:
    """Widen the x range so that every value written at a bar's end lies inside the axes.

    A value is text of a fixed size in pixels anchored at its bar's end, so a fixed margin
    (``ax.margins``) leaves it outside when the axes are narrow. Measured with the figure's
    renderer for the axes as they are now: call it again after ``tight_layout`` changes
    them (:func:`explore`'s chart does).
    """
    texts = [t for t in ax.texts if t.get_text().strip()]
    if not texts:
        return
    fig = ax.figure
    # a closed figure (_new_figure) keeps a bare canvas; Figure._get_renderer serves both
    get = getattr(fig.canvas, "get_renderer", None)
    renderer = get() if get is not None else fig._get_renderer()
    box = ax.get_window_extent(renderer)
    lo = min(0.0, ax.get_xlim()[0])
    hi = max(lo + 1e-12, max(t.xy[0] for t in texts))
    for t in texts:  # value v ends at box.x0 + (v - lo) * W / (hi - lo) + w: within box.x1
        w = t.get_window_extent(renderer).width * slack
        if w < box.width:
            hi = max(hi, lo + (t.xy[0] - lo) * box.width / (box.width - w))
    ax.set_xlim(lo, hi)


def explore(
    measure: Callable[..., float],
    controls: Mapping[str, Any],
    *,
    xlabel: str,
    button: str = "measure",
    max_bars: int = 8,
    fmt: str = "{:,.0f}",
) -> Any:
    """Widgets that re-run ``measure(**settings)`` on each click and chart every result.

    ``controls`` maps each keyword of ``measure`` to an ipywidgets control; the button
    runs one measurement with the controls' current values and redraws a bar chart of the
    last ``max_bars`` results, each bar labelled with its settings
    (``"num_workers=2, prefetch_factor=4"``), so settings can be compared side by side.
    One measurement with the initial values runs at once, so the chart is never empty.

    Measuring takes seconds, and the kernel runs nothing else meanwhile, so the explorer
    says that it is busy: the button is disabled and reads "measuring…", and a status line
    names the settings being measured; afterwards (also when ``measure`` raises) the button
    is back and the status line shows the last result, or the error. On a click, an error's
    traceback appears under the chart, where the learner is looking.

    Every control gets room for its whole description (``num_workers``, not
    ``num_work…``); a control without a description is labelled with its keyword.

    Args:
        measure: returns one number per call (e.g. samples/s).
        controls: ``{"num_workers": IntSlider(...), ...}``.
        xlabel: what ``measure`` returns, with the unit (``"samples/s"``).
        button: the button's text.
        max_bars: how many of the latest results stay on the chart.
        fmt: format of a result on its bar and in the status line.

    Returns:
        an ``ipywidgets.VBox`` to display (the last expression of a cell).

    Example:
        >>> from ipywidgets import IntSlider
        >>> explore(lambda num_workers: 100.0 * (num_workers + 1),
        ...         {"num_workers": IntSlider(value=0, max=4)}, xlabel="samples/s")
    """
    import ipywidgets as widgets
    from IPython.display import display

    from .sweep import setting_label  # the label sweeps and LoaderRun use too

    _label_controls(controls, max_bars)
    out = widgets.Output()
    run_button = widgets.Button(description=button, button_style="primary", icon="play")
    status = widgets.HTML(value="")
    status.add_class(STATUS_CLASS)
    results: list[tuple[str, float]] = []

    def run() -> None:
        settings = {name: control.value for name, control in controls.items()}
        label = setting_label(settings)
        # While measure() runs, the kernel serves nothing else: these updates are sent now,
        # so the learner sees that the click was taken and not to click again.
        _set_busy(run_button, True, button)
        status.value = f"measuring <code>{_escape(label)}</code> …"
        try:
            value = float(measure(**settings))
        except Exception as err:
            status.value = (
                f"<code>{_escape(label)}</code>: failed with "
                f"<code>{_escape(f'{type(err).__name__}: {err}')}</code>"
            )
            raise
        finally:
            _set_busy(run_button, False, button)
        results.append((label, value))
        status.value = (
            f"last measured: <code>{_escape(label)}</code>: {fmt.format(value)} {_escape(xlabel)}"
        )
        fig = _results_chart(results[-max_bars:], xlabel, fmt)
        with out:
            out.clear_output(wait=True)  # replace the chart (and any earlier traceback)
            display(fig)

    def on_click(_: Any) -> None:
        with out:  # in IPython a failure's traceback shows here, not in a hidden log
            run()

    run_button.on_click(on_click)
    run()
    box = widgets.VBox(
        [
            widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([run_button, status], layout=widgets.Layout(align_items="center")),
            out,
        ]
    )
    box.add_class(EXPLORER_CLASS)
    return box


def _label_controls(controls: Mapping[str, Any], max_bars: int) -> None:
    """Check :func:`explore`'s arguments; give every control room for its whole name."""
    if not controls:
        raise ValueError("controls: give at least one {keyword: widget} pair")
    if max_bars < 1:
        raise ValueError(f"max_bars: need at least 1 bar on the chart, got {max_bars}")
    for name, control in controls.items():
        if hasattr(control, "description") and not control.description:
            control.description = name
        style = getattr(control, "style", None)
        if style is not None and "description_width" in style.keys:
            if not style.description_width:  # the default cuts names at ~80 px
                style.description_width = "initial"


def _set_busy(run_button: Any, busy: bool, button: str) -> None:
    """:func:`explore`'s button while ``measure`` runs: disabled, reading "measuring…"."""
    with run_button.hold_sync():  # one message: disabled and relabelled together
        run_button.disabled = busy
        run_button.description, run_button.icon = (
            ("measuring…", "hourglass-half") if busy else (button, "play")
        )


def _results_chart(shown: list[tuple[str, float]], xlabel: str, fmt: str) -> Any:
    """:func:`explore`'s chart: one bar per measurement, newest at the bottom, best in orange."""
    labels, values = zip(*shown, strict=True)
    labels, common = _split_common(labels)
    lines = sum(wrap_label(label).count("\n") + 1 for label in labels)
    fig = _new_figure((8.0, 1.4 + 0.2 * len(shown) + 0.2 * lines))  # room for wrapped labels
    best = max(range(len(values)), key=values.__getitem__)
    bar_chart(fig.subplots(), labels, values, xlabel=xlabel, ylabel="setting", fmt=fmt,
              highlight=best)  # fmt: skip
    # over the whole figure, not the axes: a title centred on narrow axes runs off the figure
    title = "one bar per measurement, newest at the bottom, best in orange"
    fig.suptitle(title + (f"\nevery bar: {common}" if common else ""), fontsize="medium")
    fig.tight_layout()
    keep_values_inside(fig.axes[0])  # tight_layout resized the axes: measure again
    return fig


def _split_common(labels: Sequence[str]) -> tuple[list[str], str]:
    """Labels without the settings every bar shares, and those settings (said once).

    ``"data=disk, num_workers=2, batch_size=64"`` and ``"data=disk, num_workers=4,
    batch_size=64"`` are drawn as ``num_workers=2`` and ``num_workers=4``, with
    ``"data=disk, batch_size=64"`` above the chart. One bar, or labels of other shapes,
    keep their whole text.
    """
    parts = [label.split(", ") for label in labels]
    if len(parts) < 2 or len({len(p) for p in parts}) != 1:
        return list(labels), ""
    same = [all(p[i] == parts[0][i] for p in parts) for i in range(len(parts[0]))]
    if all(same) or not any(same):
        return list(labels), ""
    short = [", ".join(x for x, s in zip(p, same, strict=True) if not s) for p in parts]
    return short, ", ".join(x for x, s in zip(parts[0], same, strict=True) if s)


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=False)
