"""Tests for d2lopt.lab.mfu: FLOPs by hand count, the matmul peak on a simulated clock (12)."""

from __future__ import annotations

import math

import pytest
import torch

from d2lopt.errors import ParamError
from d2lopt.lab.mfu import flops_per_sample, matmul_peak, precision_dtype, utilisation
from d2lopt.models import cnn, mlp


def _cnn_counts(size: int) -> tuple[int, int]:
    """cnn(in_channels=3), width 32: three 3x3 'same' convs, each followed by a 2x2 max pool,
    then global average pooling and Linear(128, 10). Batch norm, ReLU and pooling count 0."""
    conv1 = 2 * 3 * 32 * 3 * 3 * size * size  # 2 Cin Cout k k Hout Wout
    conv2 = 2 * 32 * 64 * 3 * 3 * (size // 2) ** 2
    conv3 = 2 * 64 * 128 * 3 * 3 * (size // 4) ** 2
    head = 2 * 128 * 10  # 2 in out
    forward = conv1 + conv2 + conv3 + head
    # backward: every layer's weight gradient costs its forward again (conv(inp, grad_out),
    # mm(grad_out.T, x)); its input gradient too, except the first conv's: the batch does not
    # require grad, so convolution_backward runs with output_mask[0] False there.
    weight_grads = conv1 + conv2 + conv3 + head
    input_grads = conv2 + conv3 + head
    return forward, forward + weight_grads + input_grads


@pytest.mark.parametrize("size", [32, 64])
def test_cnn_flops_match_the_hand_count(size):
    forward, step = _cnn_counts(size)
    assert (forward, step) == {32: (20_646_400, 60_169_728), 64: (82_577_920, 240_655_872)}[size]
    x, y = torch.randn(2, 3, size, size), torch.tensor([1, 7])
    assert flops_per_sample(cnn(in_channels=3), (x, y), train=False) == forward
    assert flops_per_sample(cnn(in_channels=3), (x, y)) == step
    assert flops_per_sample(lambda: cnn(in_channels=3), x) == step  # a build; X alone
    assert flops_per_sample(cnn(in_channels=3), (x, y), channels_last=True) == step


def test_mlp_flops_match_the_hand_count():
    hidden, head = 2 * 784 * 256, 2 * 256 * 10
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    assert flops_per_sample(mlp(), (x, y), train=False) == hidden + head
    # weight grads of both linears; the input grad of the head only (X needs no grad)
    assert flops_per_sample(mlp(), (x, y)) == (hidden + head) + (hidden + head) + head


def test_counting_leaves_the_callers_model_and_rng_alone():
    net = cnn(in_channels=3)
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = [(p.detach().clone(), p.grad.clone()) for p in net.parameters()]
    buffers = [b.clone() for b in net.buffers()]
    net.eval()
    batch = (torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    rng = torch.get_rng_state()
    flops_per_sample(net, batch)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not net.training  # the copy was put in train mode, not the caller's model
    for p, (w, g) in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, w) and torch.equal(p.grad, g)
    assert all(torch.equal(a, b) for a, b in zip(net.buffers(), buffers, strict=True))


def test_flops_per_sample_refuses_bad_input():
    with pytest.raises(ParamError) as err:
        flops_per_sample(cnn(), torch.randn(2, 784), channels_last=True)
    assert err.value.param == "channels_last"
    with pytest.raises(ParamError) as err:
        flops_per_sample("cnn", torch.randn(2, 1, 28, 28))
    assert err.value.param == "build_or_net"
    with pytest.raises(ParamError) as err:
        flops_per_sample(cnn(), torch.randn(0, 1, 28, 28))
    assert err.value.param == "batch"


class _FakeMachine:
    """A clock and an ``mm`` that takes exactly 2 n^3 / rate seconds of it."""

    def __init__(self, rate):
        self.now, self.rate, self.sizes = 0.0, rate, []

    def timer(self):
        return self.now

    def mm(self, a, b):
        n = a.shape[0]
        self.sizes.append(n)
        self.now += 2 * n**3 / self.rate(n)
        return a


def test_matmul_peak_recovers_the_simulated_rate_and_its_best_size():
    machine = _FakeMachine(lambda n: {8: 1e9, 16: 4e9, 32: 2e9}[n])
    out = matmul_peak("cpu", torch.float32, sizes=(8, 16, 32), seconds=10.0,
                      timer=machine.timer, mm=machine.mm)  # fmt: skip
    assert out["flops_per_s"] == pytest.approx(4e9) and out["size"] == 16
    assert out["dtype"] == "float32" and out["device"] == "cpu"
    assert set(machine.sizes) == {8, 16, 32} and out["seconds"] == pytest.approx(machine.now)


def test_matmul_peak_stops_starting_sizes_when_the_budget_is_spent():
    # 2 * 64^3 FLOPs at 1e5 FLOP/s: 5.2 s a call, so a block is one call
    machine = _FakeMachine(lambda n: 1e5)
    out = matmul_peak("cpu", torch.bfloat16, sizes=(64, 128), seconds=1.0, repeats=5,
                      timer=machine.timer, mm=machine.mm)  # fmt: skip
    # the first size always runs: its warm-up and one timed call, then the budget is gone
    assert machine.sizes == [64, 64] and out["size"] == 64 and out["dtype"] == "bfloat16"
    assert out["flops_per_s"] == pytest.approx(1e5)
    # a later size that would overrun the budget at the rate seen is not started
    machine = _FakeMachine(lambda n: 1e9)  # 8: 1 us a call, 256: 34 ms a call
    matmul_peak("cpu", torch.float32, sizes=(8, 256), seconds=0.05, timer=machine.timer,
                mm=machine.mm)  # fmt: skip
    assert set(machine.sizes) == {8}


def test_matmul_peak_runs_on_this_cpu():
    out = matmul_peak("cpu", torch.float32, seconds=0.2)
    assert 0 < out["flops_per_s"] < math.inf and out["size"] in (256, 512, 1024, 2048)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"dtype": torch.int32}, "dtype"), ({"seconds": 0}, "seconds"), ({"sizes": ()}, "sizes"),
     ({"sizes": (256, 0)}, "sizes"), ({"repeats": 0}, "repeats")],
)  # fmt: skip
def test_matmul_peak_names_the_bad_parameter(kwargs, param):
    args = {"device": "cpu", "dtype": torch.float32, **kwargs}
    with pytest.raises(ParamError) as err:
        matmul_peak(args.pop("device"), args.pop("dtype"), **args)
    assert err.value.param == param


def test_precision_dtype_follows_the_amp_modes():
    assert [precision_dtype(a) for a in ("off", "bf16", "fp16")] == [
        torch.float32, torch.bfloat16, torch.float16,
    ]  # fmt: skip
    with pytest.raises(ParamError) as err:
        precision_dtype("fp8")
    assert err.value.param == "amp"


def test_utilisation_arithmetic_and_a_missing_peak():
    assert utilisation(1e6, 100.0, 1e9) == pytest.approx(0.1)
    assert math.isnan(utilisation(1e6, 100.0, 0.0))
    assert math.isnan(utilisation(1e6, 100.0, math.nan))
    assert math.isnan(utilisation(1e6, math.nan, 1e9))
    with pytest.raises(ParamError) as err:
        utilisation(-1.0, 100.0, 1e9)
    assert err.value.param == "flops_per_sample"
