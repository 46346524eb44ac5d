"""``d2lopt ddp``'s supervisor: torchrun runs under it, the ranks' own words in front.

``d2lopt ddp`` execs ``python -m d2lopt.cli.torchrun_output TORCHRUN-COMMAND...`` once its
checks pass: a fresh interpreter that imports no PyTorch (no CUDA context, ~30 MB) starts
torchrun, passes the ranks' output through as it comes and withholds torchrun's own
failure report (:class:`RankOutput`), so that the line saying what to fix is the first and
the last one the learner reads (issue 22). ``--torchrun-report`` (or
``D2LOPT_TORCHRUN_REPORT=1``) execs torchrun directly instead, its output unfiltered.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import IO

__all__ = ["RankOutput", "supervise"]


class RankOutput:
    """The job's stderr with the ranks' own words in front: torchrun's failure report withheld.

    torchrun's agent ends a failed job with its own traceback and a ``ChildFailedError``
    report (about 40 lines), and logs each failed worker (``E... failed (exitcode: 2)``);
    after a rank's one-line error, that buries the line that says what to fix. Those lines
    and the agent's start-up banner are withheld; every other line passes through as it
    comes. :meth:`finish` then says what was withheld and repeats
    the ranks' first error, so it is also the last line.
    """

    # the agent's own log lines ("E1203 12:00:00.000 123 .../torch/distributed/...] ...") and
    # the OMP_NUM_THREADS banner it prints at start-up
    AGENT_LOG = re.compile(
        r"^[EWI]\d{4} .*torch/distributed/|^\*{10,}\s*$|^Setting OMP_NUM_THREADS"
    )
    AGENT_FRAMES = ("torch/distributed/run.py", "torch/distributed/launcher/")

    def __init__(self, sink: IO[str]) -> None:
        self.sink = sink
        self.withheld: list[str] = []
        self.traceback: list[str] | None = None  # a traceback being read, not yet attributed
        self.report_rules = 0  # "=====" lines of the ChildFailedError report still to come
        self.first_error: str | None = None

    def feed(self, line: str) -> None:
        if self.report_rules:
            self.withheld.append(line)
            if line.startswith("====="):
                self.report_rules -= 1
            return
        if self.traceback is not None:
            self.traceback.append(line)
            if line[:1] in (" ", "\t") or not line.strip():
                return  # a frame, or its source line
            self._end_traceback(line)
            return
        if line.startswith("Traceback (most recent call last):"):
            self.traceback = [line]
        elif self.AGENT_LOG.match(line):
            self.withheld.append(line)
        else:
            if self.first_error is None and line.startswith("d2lopt ddp: error:"):
                self.first_error = line
            self._write(line)

    def _end_traceback(self, last: str) -> None:
        block, self.traceback = self.traceback or [], None
        if any(frame in text for text in block for frame in self.AGENT_FRAMES):
            self.withheld += block
            if "ChildFailedError" in last:
                self.report_rules = 2  # the report is framed by two rules of "="
            return
        if self.first_error is None:
            self.first_error = last  # a rank's uncaught exception: its last line says what
        for text in block:
            self._write(text)

    def _write(self, line: str) -> None:
        self.sink.write(line)
        self.sink.flush()

    def finish(self, code: int) -> None:
        """After torchrun exits: flush a half-read traceback, then the closing lines."""
        if self.traceback:
            for text in self.traceback:
                self._write(text)
            self.traceback = None
        if code == 0:
            return
        ranks = self._failed_ranks()
        if self.withheld:
            self._write(
                f"d2lopt ddp: torchrun's own report ({len(self.withheld)} lines{ranks}) is not "
                "shown; add --torchrun-report (or D2LOPT_TORCHRUN_REPORT=1) to see it\n"
            )
        if self.first_error is not None:
            self._write(self.first_error if self.first_error.endswith("\n") else
                        self.first_error + "\n")  # fmt: skip

    def _failed_ranks(self) -> str:
        """``: rank 1 exit code -9`` from the withheld report (what a SIGKILL leaves)."""
        text = "".join(self.withheld)
        ranks = re.findall(r"rank\s*:\s*(\d+)", text)
        codes = re.findall(r"exitcode\s*:\s*(-?\d+)", text)
        pairs = dict.fromkeys(f"rank {r} exit code {c}" for r, c in zip(ranks, codes, strict=False))
        return f": {', '.join(sorted(pairs))}" if pairs else ""  # the root cause is listed twice


def supervise(cmd: list[str], env: dict[str, str]) -> int:
    """Run torchrun, its stderr through :class:`RankOutput`; return its exit code.

    Ctrl-C in a terminal reaches torchrun and the ranks directly (one process group), so this
    process ignores SIGINT and waits for them to save and stop; a SIGTERM or SIGHUP sent to
    it alone (a scheduler's) is passed on to torchrun, which stops the ranks.
    """
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, bufsize=1,
                            errors="replace")  # fmt: skip
    handlers = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        handlers[sig] = signal.signal(sig, lambda signum, _: proc.send_signal(signum))
    out = RankOutput(sys.stderr)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            out.feed(line)
        code = proc.wait()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    out.finish(code)
    if code < 0:
        return 128 - code  # killed by signal N: the shell's 128 + N
    if code and (out.first_error or "").startswith("d2lopt ddp: error:"):
        return 2  # a bad flag found by the ranks: the exit code of one found here
    return code


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1:], dict(os.environ)))
