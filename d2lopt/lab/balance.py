"""Load balancing across ranks: uneven inputs, sampler padding, stragglers (``11_scheduling``).

Every DDP rank must run the same number of steps, and every step waits for the slowest
rank. :func:`sampler_shards` shows how ``DistributedSampler`` pads or drops to keep the
counts equal, :func:`uneven_inputs_worker` what happens when they differ anyway (and what
``Join`` does about it), :func:`straggler_compare` what one slow rank costs the others.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ..envinfo import usable_cores
from ..measure import Sweep
from .comm import comm_model
from .ranks import lockstep_compare_many

__all__ = ["delay_name", "sampler_shards", "straggler_compare", "uneven_inputs_worker"]


def sampler_shards(
    n: int, world_size: int, *, drop_last: bool = False, shuffle: bool = False, seed: int = 0
) -> list[list[int]]:
    """The indices ``DistributedSampler`` gives each rank for a data set of ``n`` samples.

    Without ``drop_last`` it pads with repeated samples up to a multiple of ``world_size``
    (every rank must run the same number of steps); with it, it drops the tail instead.
    """
    from torch.utils.data import DistributedSampler

    if n < 1 or world_size < 1:
        raise ValueError(f"sampler_shards: need n >= 1 and world_size >= 1, got {n}, {world_size}")
    data = range(n)  # a sampler only needs len()
    kwargs = {"shuffle": shuffle, "seed": seed, "drop_last": drop_last}
    return [list(DistributedSampler(data, world_size, r, **kwargs)) for r in range(world_size)]


def uneven_inputs_worker(
    rank: int, world: int, *, batches: Sequence[int], use_join: bool
) -> dict[str, Any]:
    """Rank ``r`` trains on ``batches[r]`` batches: what happens when they differ?

    Without ``Join`` the rank with more batches waits in an all-reduce that its finished
    peers never join: it fails (here: the peer left, the connection closed) or hangs until
    the timeout. With ``torch.distributed.algorithms.Join`` the finished ranks shadow the
    missing all-reduces with zeros and everyone completes.
    """
    from torch.distributed.algorithms.join import Join

    model = DDP(comm_model([8, 16, 1]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(rank)
    done, error = 0, None
    try:
        with Join([model]) if use_join else contextlib.nullcontext():
            for _ in range(batches[rank]):
                opt.zero_grad()
                model(torch.randn(4, 8, generator=g)).pow(2).mean().backward()
                opt.step()
                done += 1
    except RuntimeError as exc:  # gloo reports a vanished peer as a RuntimeError
        error = type(exc).__name__
    return {"rank": rank, "planned": batches[rank], "done": done, "error": error}


def straggler_compare(
    rank: int, world: int, *, delays: Sequence[float], slow_rank: int = 1, width: int = 256,
    batch: int = 64, **compare_kwargs: Any,
) -> Sweep | None:  # fmt: skip
    """Rank 0's DDP step time while ``slow_rank`` spends each extra delay per step.

    The delay stands for a slower GPU, a throttled node or a data loader that cannot keep
    up; rank 0 is never delayed itself. The variants are named ``"no delay"`` and
    ``"+10 ms"`` etc.; the reference is the largest delay, so each comparison asks "is rank
    0 faster when the straggler is less slow?" (B3 in ``11_scheduling``). Returns the
    :class:`~d2lopt.measure.Sweep` on rank 0, None elsewhere.
    """
    if not delays or any(d < 0 for d in delays):
        raise ValueError(f"delays: need seconds >= 0, e.g. [0.0, 0.01], got {delays!r}")
    if not 0 < slow_rank < world:
        raise ValueError(f"slow_rank: must be in 1..{world - 1} (rank 0 measures), got {slow_rank}")
    torch.set_num_threads(max(1, usable_cores() // world))
    model = DDP(comm_model([width, width, width, 10]))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(rank))

    def step(delay: float) -> None:
        loss = model(x).pow(2).mean()
        if rank == slow_rank:
            time.sleep(delay)  # the straggler's extra work
        loss.backward()  # DDP's all-reduce inside waits for every rank's gradients
        opt.step()
        opt.zero_grad()

    fns = {delay_name(d): functools.partial(step, d) for d in delays}
    return lockstep_compare_many(fns, reference=delay_name(max(delays)), **compare_kwargs)


def delay_name(delay: float) -> str:
    """The variant name :func:`straggler_compare` gives a delay: ``"no delay"``, ``"+10 ms"``."""
    return "no delay" if delay == 0 else f"+{delay * 1e3:g} ms"
