"""What DDP sends, and what it costs: buckets, comm hooks, ``no_sync`` (``11_scheduling``).

:func:`count_collectives` counts the all-reduce calls and bytes DDP really issues;
:func:`comm_worker` counts them for each communication config (exact on any machine), and
:func:`comm_compare` times one optimizer step of each config in paired rounds. These run on
CPU processes with gloo: they measure mechanisms (how many collectives, how many bytes);
NCCL on GPUs changes the constants.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..envinfo import usable_cores
from ..measure import Sweep
from .ranks import lockstep_compare_many

__all__ = [
    "COMM_WIDTHS",
    "CollectiveCounter",
    "comm_compare",
    "comm_model",
    "comm_worker",
    "count_collectives",
]


@dataclass
class CollectiveCounter:
    """All-reduce calls and bytes issued through ``torch.distributed.all_reduce``."""

    calls: int = 0
    bytes: int = 0

    def reset(self) -> None:
        self.calls, self.bytes = 0, 0


@contextlib.contextmanager
def count_collectives() -> Iterator[CollectiveCounter]:
    """Count ``dist.all_reduce`` calls and their payload in this process.

    DDP's built-in reducer calls C++ directly; a communication hook (even
    ``default_hooks.allreduce_hook``, which does what the built-in does) goes through
    ``dist.all_reduce``, so every bucket is seen here with the dtype actually sent.
    """
    counter = CollectiveCounter()
    original = dist.all_reduce

    def counting(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        counter.calls += 1
        counter.bytes += tensor.numel() * tensor.element_size()  # the dtype actually sent
        return original(tensor, *args, **kwargs)

    dist.all_reduce = counting
    try:
        yield counter
    finally:
        dist.all_reduce = original


COMM_WIDTHS: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 10)


def comm_model(widths: Sequence[int] = COMM_WIDTHS, seed: int = 0) -> nn.Sequential:
    """A stack of ``Linear`` layers of the given widths: lots of gradient, little compute.

    The default has five 512x512 layers (1 MiB of fp32 gradient each), so bucket sizes
    around 1 MiB change how many all-reduces DDP issues.
    """
    torch.manual_seed(seed)  # the same initial weights on every rank
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _register_hook(model: DDP, hook: str) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    if hook == "allreduce":  # what DDP does built in, but visible to count_collectives
        model.register_comm_hook(None, default_hooks.allreduce_hook)
    elif hook == "fp16":
        model.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif hook == "bf16":
        model.register_comm_hook(None, default_hooks.bf16_compress_hook)
    elif hook == "powersgd":
        state = powerSGD_hook.PowerSGDState(
            process_group=None, matrix_approximation_rank=2, start_powerSGD_iter=2
        )
        model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    else:
        raise ValueError(f"hook: must be allreduce, fp16, bf16 or powersgd, got {hook!r}")


def _comm_ddp(cfg: dict[str, Any], widths: Sequence[int]) -> DDP:
    """The DDP model of one communication config (bucket size and hook)."""
    model = DDP(comm_model(widths), bucket_cap_mb=cfg.get("bucket_cap_mb", 25.0))
    _register_hook(model, cfg.get("hook", "allreduce"))
    return model


def _comm_step(model: DDP, opt: torch.optim.Optimizer, batches: Iterator, cfg: dict) -> None:
    """One optimizer step of ``cfg``: ``accumulate`` micro-batches, with or without no_sync."""
    K = cfg.get("accumulate", 1)
    for k in range(K):
        skip = cfg.get("no_sync", False) and k < K - 1
        with model.no_sync() if skip else contextlib.nullcontext():  # no all-reduce inside
            model(next(batches)).pow(2).mean().div(K).backward()
    opt.step()
    opt.zero_grad()


def _comm_data(rank: int, widths: Sequence[int], batch: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own samples
    return [torch.randn(batch, widths[0], generator=g) for _ in range(8)]


def comm_worker(
    rank: int,
    world: int,
    *,
    configs: Sequence[dict[str, Any]],
    widths: Sequence[int] = COMM_WIDTHS,
    batch: int = 32,
    steps: int = 6,
) -> list[dict[str, Any]]:
    """Count DDP's gradient traffic for each config: all-reduce calls and bytes per step.

    A config is ``{"name", "bucket_cap_mb", "hook", "accumulate", "no_sync"}``: the bucket
    size, a communication hook (``allreduce``, ``fp16``, ``bf16``, ``powersgd``), and
    ``accumulate`` micro-batches per optimizer step with or without ``no_sync``. Each
    result also holds the relative error of the communicated gradient against an exact
    fp32 average (compression is not free). Counts and bytes are exact on any machine; the
    time of a step is measured by :func:`comm_compare`, in paired rounds.
    """
    results = []
    data = _comm_data(rank, widths, batch)
    for cfg in configs:
        model = _comm_ddp(cfg, widths)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        batches = itertools.cycle(data)
        with count_collectives() as counter:
            for step in range(steps + 3):  # 3 warm-up steps: DDP rebuilds buckets after one
                if step == 3:
                    counter.reset()
                _comm_step(model, opt, batches, cfg)
        results.append({
            "name": cfg["name"], "calls_per_step": counter.calls / steps,
            "bytes_per_step": counter.bytes / steps, "grad_error": _gradient_error(model, data[0]),
        })  # fmt: skip
    return results


def _gradient_error(model: DDP, x: torch.Tensor) -> float:
    """Relative error of DDP's (hooked) averaged gradient against an exact fp32 all-reduce."""
    model.zero_grad()
    model(x).pow(2).mean().backward()  # through DDP and its hook
    communicated = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    model.module(x).pow(2).mean().backward()  # the plain module: local gradient only
    exact = torch.cat([p.grad.flatten() for p in model.module.parameters()])
    dist.all_reduce(exact)  # the reference: an fp32 sum over ranks...
    exact /= dist.get_world_size()  # ...averaged, as DDP does
    model.zero_grad()
    return ((communicated - exact).norm() / exact.norm()).item()


def comm_compare(
    rank: int, world: int, *, configs: Sequence[dict[str, Any]], reference: str,
    widths: Sequence[int] = COMM_WIDTHS, batch: int = 32, **compare_kwargs: Any,
) -> Sweep | None:  # fmt: skip
    """Time one optimizer step of each communication config in paired rounds (rank 0).

    The configs are those of :func:`comm_worker`; ``reference`` names one of them. Returns
    the :class:`~d2lopt.measure.Sweep` on rank 0, None elsewhere (``11_scheduling``).
    """
    torch.set_num_threads(max(1, usable_cores() // world))
    data = _comm_data(rank, widths, batch)
    fns = {}
    for cfg in configs:
        model = _comm_ddp(cfg, widths)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        fns[cfg["name"]] = functools.partial(_comm_step, model, opt, itertools.cycle(data), cfg)
    # DDP rebuilds its buckets after the first step and PowerSGD compresses from the third
    compare_kwargs.setdefault("warmup", 3)
    return lockstep_compare_many(fns, reference=reference, **compare_kwargs)
