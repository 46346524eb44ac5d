"""A progress bar fed by a log callback: a long run shows that it moves, not its whole log.

``run_ladder(..., log=print)`` prints a line per decision and per round: 25 lines a learner
scrolls past before the summary table (``12_putting_it_together``). ``LogBar`` takes the
same lines, shows the latest one on a tqdm bar while the run goes, and keeps them all in
``lines`` for whoever wants to read them afterwards. Given the run's budget (:meth:`at`),
the bar measures seconds instead of lines and shows the time left: ``d2lopt ladder``
prints its lines above such a bar (``echo``). ``TQDM_DISABLE=1`` (CI) makes it silent
(:func:`d2lopt.train.bars_enabled` reads it, for ``fit`` too).
"""

from __future__ import annotations

import sys
from typing import Any

from ..train import bars_enabled

__all__ = ["LogBar"]


class LogBar:
    """A callable log sink that advances a bar by one step per line and keeps every line.

    Args:
        desc: the bar's label (what runs).
        enabled: show the bar (default: unless ``TQDM_DISABLE`` says not to).
        width: characters of the latest line shown next to the bar.
        echo: also print every line above the bar (``tqdm.write``, to stderr).

    Example:
        >>> with LogBar("ladder", enabled=False) as bar:
        ...     bar("[   1 s] + AMP: kept")
        >>> bar.lines
        ['[   1 s] + AMP: kept']
    """

    def __init__(
        self, desc: str, *, enabled: bool | None = None, width: int = 70, echo: bool = False
    ) -> None:
        from tqdm.auto import tqdm

        self.lines: list[str] = []
        self.width, self.echo, self.timed = width, echo, False
        self.bar = tqdm(
            desc=desc,
            unit="step",
            disable=not (bars_enabled() if enabled is None else enabled),
            bar_format="{desc}: {n} steps [{elapsed}] {postfix}",
        )

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.echo:
            self.bar.write(line, file=sys.stderr)
        self.bar.set_postfix_str(line[: self.width], refresh=False)
        if not self.timed:
            self.bar.update()

    def at(self, elapsed: float, total: float) -> None:
        """Move the bar to ``elapsed`` of ``total`` seconds: its ETA is the time left."""
        if not self.timed:
            self.timed = True
            self.bar.unit = "s"
            self.bar.bar_format = ("{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, "
                                   "at most {remaining} left {postfix}")  # fmt: skip
        self.bar.total = max(total, elapsed)
        self.bar.n = round(elapsed, 1)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> LogBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
