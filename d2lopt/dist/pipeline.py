"""Model parallelism that runs: the course model split into stages over ranks.

Taught in ``13_beyond_data_parallelism`` (article B, B2). With data parallelism every device
holds the whole model; with *pipeline* model parallelism rank ``r`` holds only stage ``r``
(a contiguous slice of the layers), sends its activations to rank ``r + 1`` and receives
gradients back. A batch is cut into micro-batches so that stages can work at the same time;
what remains idle is the *bubble*: with ``p`` stages and ``m`` micro-batches both GPipe and
1F1B leave each stage idle for ``(p - 1) / (m + p - 1)`` of a step. They differ in memory:
GPipe runs every forward first, so a stage keeps the activations of all ``m`` micro-batches;
1F1B starts backward passes as soon as it can and keeps at most ``p - r`` on stage ``r``.

Built on ``torch.distributed.pipelining`` (``PipelineStage``, ``ScheduleGPipe``,
``Schedule1F1B``); it runs on CPUs with gloo and on GPUs with NCCL.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import check_int
from ..stats import ratio_interval
from ..verdict import clip_interval

__all__ = [
    "SCHEDULES",
    "IdleShare",
    "bubble_fraction",
    "build_schedule",
    "idle_share",
    "peak_activations",
    "split_stages",
]

SCHEDULES = ("gpipe", "1f1b")


def split_stages(net: nn.Sequential, stages: int) -> list[nn.Sequential]:
    """Cut ``net`` into ``stages`` contiguous slices with parameter counts as even as possible.

    Every stage gets at least one layer with parameters (a stage without weights would only
    pass activations along); among the possible cuts, the one whose heaviest stage is the
    lightest wins (parameter counts stand in for compute, close enough for these layers).

    Example:
        >>> from d2lopt.models import mlp
        >>> [len(s) for s in split_stages(mlp(), 2)]
        [3, 1]
    """
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"net: expected an nn.Sequential such as mlp(), got {type(net).__name__}")
    check_int("stages", stages, 1)
    layers = list(net)
    weights = [sum(p.numel() for p in layer.parameters()) for layer in layers]
    with_params = [i for i, w in enumerate(weights) if w]
    if stages > len(with_params):
        raise ValueError(
            f"stages: the model has {len(with_params)} layers with weights, so at most "
            f"{len(with_params)} stages; got {stages}"
        )
    # cut right before a layer with weights, so weightless layers (ReLU, Flatten, pooling)
    # ride with the layer before them; pick the cuts that make the heaviest stage lightest
    candidates = with_params[1:]
    best = min(
        itertools.combinations(candidates, stages - 1),
        key=lambda cuts: max(
            sum(weights[a:b]) for a, b in itertools.pairwise([0, *cuts, len(layers)])
        ),
    )
    bounds = [0, *best, len(layers)]
    return [nn.Sequential(*layers[a:b]) for a, b in itertools.pairwise(bounds)]


def bubble_fraction(stages: int, microbatches: int) -> float:
    """Share of a step each stage sits idle: ``(p - 1) / (m + p - 1)`` (GPipe and 1F1B).

    Example:
        >>> bubble_fraction(2, 1), round(bubble_fraction(2, 8), 3)
        (0.5, 0.111)
    """
    check_int("stages", stages, 1)
    check_int("microbatches", microbatches, 1)
    return (stages - 1) / (microbatches + stages - 1)


class IdleShare(NamedTuple):
    """A stage's measured idle share of a step, its interval, and what clipping it took."""

    estimate: float
    low: float
    high: float
    clipped: bool  # an end fell outside [0, 1] and was clipped
    noisy_rounds: int  # rounds whose compute alone took longer than the whole step
    rounds: int

    def __str__(self) -> str:
        band = "no interval" if self.low != self.low else f"[{self.low:.0%}, {self.high:.0%}]"
        text = f"{self.estimate:.0%} {band}, {self.rounds} rounds"
        if self.clipped:
            text += (f" (clipped at 0 %: in {self.noisy_rounds} of {self.rounds} rounds the "
                     "compute alone took longer than the whole step, which is noise)")  # fmt: skip
        return text


def idle_share(
    step_seconds: Sequence[float], compute_seconds: Sequence[float], confidence: float = 0.95
) -> IdleShare:
    """Idle share of a stage, ``1 - compute / step``, from paired rounds, clipped to [0, 1].

    Each round timed the whole step and the stage's compute alone; the interval comes from
    the per-round ratios step / compute (:func:`d2lopt.stats.ratio_interval`). A share of
    time lies in [0, 1], but in a round where the compute-alone run is the slower one (a
    burst of load hit it) the ratio falls below 1 and the interval can reach below 0 %:
    the interval is clipped to what is possible, and the rounds that crossed are counted so
    the notebook can say why (``13_beyond_data_parallelism``).
    """
    ratios = [s / c for s, c in zip(step_seconds, compute_seconds, strict=True)]
    est, lo, hi = ratio_interval(ratios, confidence)
    share, low, high, clipped = clip_interval(1 - 1 / est, 1 - 1 / lo, 1 - 1 / hi,
                                              lowest=0.0, highest=1.0)  # fmt: skip
    return IdleShare(share, low, high, clipped, sum(r < 1 for r in ratios), len(ratios))


def peak_activations(schedule: str, stages: int, microbatches: int, stage: int = 0) -> int:
    """Micro-batches whose activations ``stage`` keeps at once under ``schedule``.

    GPipe: all ``m`` (every forward runs before the first backward). 1F1B: at most
    ``p - stage`` (it warms up with that many forwards, then alternates one forward, one
    backward).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: must be one of {SCHEDULES}, got {schedule!r}")
    check_int("stages", stages, 1)
    check_int("microbatches", microbatches, 1)
    if not 0 <= stage < stages:
        raise ValueError(f"stage: must be in 0..{stages - 1}, got {stage!r}")
    return microbatches if schedule == "gpipe" else min(microbatches, stages - stage)


def build_schedule(
    stage_module: nn.Module,
    stage: int,
    stages: int,
    device: torch.device,
    schedule: str,
    microbatches: int,
    loss_fn: Any,
) -> Any:
    """A ``torch.distributed.pipelining`` schedule running this rank's stage.

    ``schedule.step(X)`` on stage 0, ``schedule.step(target=y, losses=[])`` on the last
    stage, ``schedule.step()`` in between; gradients are averaged over micro-batches, so
    one step equals one step of the unsplit model on the whole batch.
    """
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: must be one of {SCHEDULES}, got {schedule!r}")
    check_int("microbatches", microbatches, 1)
    if schedule == "1f1b" and microbatches < stages:
        raise ValueError(
            f"microbatches: 1F1B needs at least as many micro-batches as stages ({stages}), "
            f"got {microbatches}; use more micro-batches or GPipe"
        )
    kind = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
    pipe_stage = PipelineStage(stage_module, stage, stages, device)
    return kind(pipe_stage, n_microbatches=microbatches, loss_fn=loss_fn)
