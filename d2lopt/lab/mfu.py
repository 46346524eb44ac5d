"""Model FLOP utilisation: how close to the machine's own limit (``12_putting_it_together``).

"Of the ceiling" compares a loop with the same loop on data already on the device; it cannot
say how much of the *machine* the step uses. Model FLOP utilisation (MFU) can: the model's
FLOPs per sample times the samples per second reached, over the peak matrix throughput this
device reaches in this process. The FLOPs are counted the standard way (PaLM, appendix B;
nanoGPT's ``estimate_mfu``): matrix multiplications, convolutions and attention only, the
ops with a formula in ``torch.utils.flop_counter``. Element-wise work (batch norm, ReLU,
pooling, the loss, the optimizer) counts zero: it costs time, not "model FLOPs", which is
why a small CNN on a CPU sits far below 100 %, and why the figure says where time goes.
The peak is *measured*, as Stas Bekman's ``mamf-finder`` does (maximum achievable matmul
FLOPS), not read from a datasheet: a CPU has no datasheet figure a learner can find.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..devices import as_device, synchronize
from ..errors import ParamError, ParamTypeError, check_bool, check_int, check_number
from ..precision import amp_dtype

__all__ = ["flops_per_sample", "matmul_peak", "precision_dtype", "utilisation"]

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_BLOCK_S = 0.01  # one timed block lasts about this long: a GPU's launch cost is amortized


def flops_per_sample(
    build_or_net: nn.Module | Callable[[], nn.Module],
    batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor],
    *, train: bool = True, channels_last: bool = False,
) -> float:  # fmt: skip
    """FLOPs of one training step (forward + backward of the loss) per sample of ``batch``.

    ``train=False`` counts the forward pass only. The loss is cross-entropy against the
    batch's labels (``(X, y)``), or ``out.sum()`` for ``X`` alone: the backward FLOPs are
    the same. The count runs on the CPU (FLOPs do not depend on the device) on a deep copy
    of the model, or a fresh ``build()``, with the RNG forked: the caller's weights, grads
    and random stream are untouched. Only matmuls, convolutions and attention count (see
    the module docstring); a batch of a few samples gives the same per-sample count.

    The backward pass counts what autograd computes, which ``FlopCounterMode`` reads from
    the op's ``output_mask`` (torch 2.14 ``torch/utils/flop_counter.py``,
    ``conv_backward_flop``: grad_input only ``if output_mask[0]``, grad_weight ``if
    output_mask[1]``; the mm/addmm backward likewise runs only the products autograd
    needs). The input batch does not require grad, so the *first* layer computes its weight
    gradient but no input gradient: for the course CNN a training step is 3x the forward
    FLOPs minus the first conv's forward, not 3x (``tests/test_mfu.py`` counts it by hand).
    """
    check_bool("train", train)
    check_bool("channels_last", channels_last)
    x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
    if not isinstance(x, torch.Tensor) or x.ndim == 0 or len(x) == 0:
        raise ParamTypeError("batch", f"must be X or (X, y) with X a batch tensor, got {x!r}")
    if channels_last and x.ndim != 4:
        raise ParamError("channels_last", f"needs 4-d image batches, got shape {tuple(x.shape)}")
    with torch.random.fork_rng(devices=[]):  # a build() or dropout must not shift the run's RNG
        if isinstance(build_or_net, nn.Module):
            net = copy.deepcopy(build_or_net)
        elif callable(build_or_net):
            net = build_or_net()
        else:
            raise ParamTypeError("build_or_net", f"must be an nn.Module or a function "
                                 f"returning one, got {type(build_or_net).__name__}")  # fmt: skip
        fmt = torch.channels_last if channels_last else torch.preserve_format
        net = net.to("cpu", memory_format=fmt).train(train)
        x = x.detach().to("cpu", memory_format=fmt)
        with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(train):
            out = net(x)
            if train:
                loss = out.sum() if y is None else F.cross_entropy(out, y.to("cpu"))
                loss.backward()
    return counter.get_total_flops() / len(x)


def precision_dtype(amp: str) -> torch.dtype:
    """The matmul dtype of a ``TrainConfig.amp`` mode: ``'off'`` -> float32, ``'bf16'``,
    ``'fp16'``; under autocast the matmuls and convolutions run in the 16-bit type, so
    that is the peak a rung is held against."""
    return amp_dtype(amp) or torch.float32


def matmul_peak(
    device: torch.device | str, dtype: torch.dtype, *, seconds: float = 1.0,
    sizes: Sequence[int] = (256, 512, 1024, 2048), repeats: int = 5,
    timer: Callable[[], float] = time.perf_counter,
    mm: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = torch.mm,
) -> dict:  # fmt: skip
    """The best matmul FLOP/s this process reaches on ``device`` in ``dtype`` (mamf-finder).

    For each square size ``n`` (2 n^3 FLOPs per product): one untimed call, then up to
    ``repeats`` timed blocks of ``mm(a, b)`` (device synchronized around each block; a block
    repeats the product to last ~10 ms, so a GPU's launch cost is not what is measured). A
    size scores the median of its blocks; the peak is the best size. The sizes go smallest
    first and stop when ``seconds`` is spent, or when the next size's two calls would
    overrun it at the best rate seen (bf16 on a CPU without bf16 units is many times slower
    than fp32: a 2048 product there takes seconds); the first size is always measured.
    TF32 counts as float32 when it is on (``precision.set_tf32``): it is what fp32 runs at.
    ``timer`` and ``mm`` exist for tests (a simulated clock).
    """
    dev = as_device(device)
    if dtype not in _DTYPES:
        raise ParamError("dtype", f"must be one of {tuple(_DTYPES.values())}, got {dtype!r}")
    check_number("seconds", seconds, above=0)
    check_int("repeats", repeats, 1)
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
        raise ParamTypeError("sizes", f"must be a non-empty sequence of ints, got {sizes!r}")
    for n in sizes:
        check_int("sizes", n, 1)
    start = timer()
    best, best_n = 0.0, sizes[0]
    for i, n in enumerate(sizes):
        flops, left = 2.0 * n**3, seconds - (timer() - start)
        if i and (left <= 0 or (best > 0 and 2 * flops / best > left)):
            break  # the first size always runs; a later one only if it fits the budget
        a = torch.randn(n, n, device=dev).to(dtype)
        b = torch.randn(n, n, device=dev).to(dtype)
        synchronize(dev)  # sync: the random fill is not part of the first call's time
        t0 = timer()
        mm(a, b)  # untimed warm-up (allocator, library init); its time sizes the blocks
        synchronize(dev)
        first = max(timer() - t0, 1e-9)
        calls = max(1, min(64, int(_BLOCK_S / first)))
        rates: list[float] = []
        while len(rates) < repeats and (not rates or timer() - start < seconds):
            synchronize(dev)  # sync: start with the queue empty
            t0 = timer()
            for _ in range(calls):
                mm(a, b)
            synchronize(dev)  # sync: the products have finished, not just been queued
            elapsed = timer() - t0
            if elapsed <= 0:  # a clock too coarse for this block: it tells nothing
                break
            rates.append(flops * calls / elapsed)
        rate = statistics.median(rates) if rates else 0.0
        if rate > best:
            best, best_n = rate, n
    return {"flops_per_s": best, "size": best_n, "dtype": _DTYPES[dtype], "device": str(dev),
            "seconds": timer() - start}  # fmt: skip


def utilisation(flops_per_sample: float, samples_per_s: float, peak_flops_per_s: float) -> float:
    """Model FLOP/s reached over the peak: ``flops_per_sample * samples_per_s / peak``.

    NaN when there is no peak (0 or NaN: not measured); NaN in, NaN out for the others.
    """
    for name, value in (("flops_per_sample", flops_per_sample), ("samples_per_s", samples_per_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ParamError(name, f"must be a number >= 0 (NaN: not measured), got {value!r}")
    peak = peak_flops_per_s
    if isinstance(peak, bool) or not isinstance(peak, (int, float)) or peak < 0 or math.isinf(peak):
        raise ParamError("peak_flops_per_s", f"must be a finite number >= 0 (0 or NaN: not "
                         f"measured), got {peak!r}")  # fmt: skip
    if not peak > 0:
        return math.nan
    return flops_per_sample * samples_per_s / peak
