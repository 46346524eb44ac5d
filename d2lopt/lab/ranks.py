"""N processes joined in one process group, on demand (taught in ``10_ddp`` and ``11_scheduling``).

* :func:`launch` runs a worker function once on N forked processes joined in a gloo process
  group (``torch.multiprocessing.start_processes``) and returns what each rank returned:
  for experiments with an exact outcome (:func:`d2lopt.lab.balance.uneven_inputs_worker`,
  :func:`d2lopt.lab.comm.comm_worker`);
* :class:`RankPool` keeps N spawned ranks alive so that timings can be compared in paired,
  interleaved rounds (:mod:`d2lopt.measure`);
* :func:`lockstep_compare_many` times variants on rank 0 while the other ranks follow in
  lockstep, so a DDP step meets its peers in every all-reduce.

Worker functions are sent by reference (module and name), so they must be importable: they
then work under fork, spawn and torchrun.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..distributed import emulate_torchrun, exit_rank, free_port, setup, teardown
from ..errors import check_int
from ..measure import Sweep, compare_many

__all__ = ["RankPool", "launch", "lockstep_compare_many"]


def _rank_main(rank: int, fn: Callable, world: int, port: int, folder: str, kwargs: dict) -> None:
    emulate_torchrun(rank, world, port)
    # one thread: a forked child inherits the parent's OpenMP pool without its threads
    # (GNU libgomp is not fork-safe), and a multi-threaded kernel would wait forever
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=kwargs.pop("timeout_s", 60))
    dist.init_process_group("gloo", timeout=timeout)
    try:
        result = fn(rank, world, **kwargs)
    finally:
        dist.destroy_process_group()
    Path(folder, f"{rank}.json").write_text(json.dumps(result))


def launch(fn: Callable[..., Any], nprocs: int, **kwargs: Any) -> list[Any]:
    """Run ``fn(rank, world_size, **kwargs)`` on ``nprocs`` forked CPU processes (gloo).

    It is ``torch.multiprocessing.start_processes(..., start_method="fork")``: each child
    joins a gloo process group on 127.0.0.1, runs ``fn`` on one CPU thread, and its
    JSON-serialisable result is returned in rank order. The children print nothing (what
    forked children print reaches a notebook in any order); a child's exception is
    re-raised here by ``start_processes``.
    ``timeout_s`` (default 60) bounds every collective, so a broken experiment fails
    instead of hanging.
    """
    check_int("nprocs", nprocs, 1)
    if torch.cuda.is_initialized():
        raise RuntimeError("launch: CUDA is initialised in this process; forked children "
                           "cannot use it. Run from a fresh kernel or use torchrun")  # fmt: skip
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="d2lopt-launch-") as folder:
        mp.start_processes(
            _rank_main,
            args=(fn, nprocs, free_port(), folder, kwargs),
            nprocs=nprocs,
            start_method="fork",
        )
        return [json.loads(Path(folder, f"{r}.json").read_text()) for r in range(nprocs)]


class RankPool:
    """N ranks started once, joined in one process group, that run functions on demand.

    Taught in ``10_ddp`` and ``11_scheduling``. A timing verdict needs paired, interleaved
    rounds (:func:`d2lopt.measure.compare`); launching a fresh job for every round would time
    interpreter start-up and the rendezvous, not training. These ranks start once and then
    wait on a pipe (idle, taking no core) until :meth:`run` sends them an importable function
    ``fn(rank, world_size, **kwargs)``; every rank runs it and :meth:`run` returns what each
    returned, in rank order. They are *spawned*, not forked, so each may use several OpenMP
    threads (a forked child cannot), and on a GPU node rank ``r`` owns ``cuda:r``.

    Example:
        >>> with RankPool(2) as pool:  # doctest: +SKIP
        ...     pool.run(data_parallel_step, mode="ddp", steps=4, batch=64)
        [None, None]
    """

    def __init__(self, nprocs: int, *, device: str = "cpu", timeout_s: float = 120.0) -> None:
        check_int("nprocs", nprocs, 1)
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device: must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and torch.cuda.device_count() < nprocs:
            raise ValueError(
                f"nprocs: {nprocs} ranks need {nprocs} GPUs, this machine has "
                f"{torch.cuda.device_count()}; use fewer ranks or device='cpu'"
            )
        if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
            raise ValueError(f"timeout_s: must be a number of seconds > 0, got {timeout_s!r}")
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.world, self.device, self.timeout_s = nprocs, device, float(timeout_s)
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        port = free_port()
        for rank in range(nprocs):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_pool_main, args=(rank, nprocs, port, device, theirs,
                                                        timeout_s), daemon=True)  # fmt: skip
            proc.start()
            theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)
        try:
            for rank in range(nprocs):
                self._answer(rank)  # "ready": the process group exists
        except BaseException:
            self.close()
            raise

    def run(self, fn: Callable[..., Any], /, **kwargs: Any) -> list[Any]:
        """Run ``fn(rank, world_size, **kwargs)`` on every rank; their results in rank order."""
        if not self._conns:
            raise RuntimeError("RankPool.run: the pool is closed; start a new RankPool")
        for conn in self._conns:
            conn.send((fn, kwargs))
        return [self._answer(rank) for rank in range(self.world)]

    def _answer(self, rank: int) -> Any:
        conn = self._conns[rank]
        # a rank stuck in a collective fails after timeout_s; wait a little longer for its report
        if not conn.poll(self.timeout_s + 30):
            raise TimeoutError(
                f"RankPool: rank {rank} did not answer within {self.timeout_s:.0f} s; raise "
                "timeout_s, or close the pool and start a new one"
            )
        try:
            status, value = conn.recv()
        except EOFError:
            code = self._procs[rank].exitcode
            raise RuntimeError(
                f"RankPool: rank {rank} died (exit code {code}); start a new one"
            ) from None
        if status == "error":
            raise RuntimeError(f"RankPool: rank {rank} failed:\n{value}")
        return value

    def close(self) -> None:
        """Let every rank leave the process group and exit (idempotent)."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()  # stuck in a collective: no clean exit possible
                proc.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    def __enter__(self) -> RankPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pool_main(rank: int, world: int, port: int, device: str, conn: Any, timeout_s: float) -> None:
    emulate_torchrun(rank, world, port)
    try:
        setup(device, timeout_s=timeout_s)  # gloo on CPU, NCCL on cuda:rank
        conn.send(("ok", "ready"))
        while (message := conn.recv()) is not None:  # idle here: no core is taken
            fn, kwargs = message
            try:
                conn.send(("ok", fn(rank, world, **kwargs)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except EOFError:
        pass  # the parent went away
    except Exception:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        teardown()
    exit_rank(0)  # skip the interpreter's teardown: seconds per rank, and gloo's shutdown race


def lockstep_compare_many(
    fns: dict[str, Callable[[], Any]], *, reference: str, **kwargs: Any
) -> Sweep | None:
    """:func:`d2lopt.measure.compare_many` on rank 0, every other rank in lockstep.

    Call it on every rank with the same variant names (each rank's functions may differ,
    e.g. only the straggler sleeps). Rank 0 measures: before each call it broadcasts which
    variant comes next, and the other ranks run the same variant, so a DDP step meets its
    peers in every all-reduce. The broadcast is a sync point that starts every call on all
    ranks together, the same small cost in every variant. Returns the
    :class:`~d2lopt.measure.Sweep` on rank 0 and None elsewhere.
    """
    names = list(fns)
    on = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL broadcasts CUDA tensors only
    order = torch.zeros(1, dtype=torch.int64, device=on)
    if dist.get_rank() == 0:

        def announced(i: int) -> Callable[[], Any]:
            def call() -> Any:
                order.fill_(i)
                dist.broadcast(order, 0)  # "variant i next": the others start it with us
                return fns[names[i]]()

            return call

        try:
            return compare_many({n: announced(i) for i, n in enumerate(names)},
                                reference=reference, **kwargs)  # fmt: skip
        finally:
            order.fill_(-1)
            dist.broadcast(order, 0)  # stop
    while True:
        dist.broadcast(order, 0)
        i = int(order.item())
        if i < 0:
            return None
        fns[names[i]]()
