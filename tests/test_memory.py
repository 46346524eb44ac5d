"""d2lopt.memory and d2lopt.lab.copy_on_read: predicted bytes, measured peaks, workers' memory."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import d2lopt
from d2lopt.lab.copy_on_read import ArrayDataset, PayloadDataset, PythonObjectsDataset
from d2lopt.memory import (
    MiB,
    allocator_bytes,
    batch_that_fits,
    checkpointed_forward,
    gradient_bytes,
    measure_memory,
    optimizer_state_bytes,
    parameter_bytes,
    peak_memory,
    predict_optimizer_state_bytes,
    saved_activation_bytes,
    worker_memory,
)

COURSE_MODELS = {
    "mlp": lambda: d2lopt.mlp(),
    "mlp-dropout": lambda: d2lopt.mlp(hidden=64, dropout=0.5),
    "cnn": lambda: d2lopt.cnn(width=8),
    "cnn-rgb": lambda: d2lopt.cnn(in_channels=3, width=4),
}
OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps),
    "adamw": lambda ps: torch.optim.AdamW(ps),
}


def _batch(net: nn.Module, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    channels = net[0].in_channels if isinstance(net[0], nn.Conv2d) else 1
    return torch.randn(n, channels, 28, 28), torch.randint(0, 10, (n,))


@pytest.mark.parametrize("model", COURSE_MODELS)
def test_predicted_parameter_and_gradient_bytes_equal_the_measured_ones(model) -> None:
    built = measure_memory(COURSE_MODELS[model])
    net = built.result
    assert built.retained == parameter_bytes(net, buffers=True)
    X, y = _batch(net)
    grads = measure_memory(lambda: nn.functional.cross_entropy(net(X), y).backward())
    assert grads.retained == parameter_bytes(net) == gradient_bytes(net)


@pytest.mark.parametrize("kind", OPTIMIZERS)
@pytest.mark.parametrize("model", COURSE_MODELS)
def test_predicted_optimizer_state_equals_the_measured_state(model, kind) -> None:
    net = COURSE_MODELS[model]()
    X, y = _batch(net)
    nn.functional.cross_entropy(net(X), y).backward()
    opt = OPTIMIZERS[kind](net.parameters())
    predicted = predict_optimizer_state_bytes(list(net.parameters()), kind)
    step = measure_memory(opt.step)  # the first step allocates the state
    assert step.retained == predicted == optimizer_state_bytes(opt)


def test_an_unknown_optimizer_kind_is_named() -> None:
    with pytest.raises(ValueError, match="kind: expected"):
        predict_optimizer_state_bytes([torch.ones(2, requires_grad=True)], "lbfgs")


def test_cuda_bytes_are_rounded_to_the_allocator_block() -> None:
    assert allocator_bytes(4, "cuda") == 512
    assert allocator_bytes(1024, "cuda") == 1024
    assert allocator_bytes(4, "cpu") == 4
    params = [torch.ones(1, requires_grad=True)]  # on the CPU: not in a CUDA allocator's count
    assert predict_optimizer_state_bytes(params, "adam", device="cuda") == 0
    assert predict_optimizer_state_bytes(params, "adam") == 2 * 4 + 4


def test_peak_memory_reports_the_runs_own_peak_not_what_was_allocated_before() -> None:
    def work() -> None:
        tmp = torch.ones(1 << 16)  # 256 KiB, freed at return
        del tmp

    alone = peak_memory(work).bytes
    held = torch.zeros(1 << 22)  # 16 MiB live before the run: must not count
    with_held = peak_memory(work).bytes
    assert alone == with_held == (1 << 16) * 4
    assert held.numel() == 1 << 22
    assert measure_memory(work).retained == 0


def test_frees_of_earlier_tensors_are_unseen_on_cpu() -> None:
    # the profiler knows no size for a block allocated before it started: such a free is
    # not counted, so a call's numbers never depend on what was allocated before it. In a
    # fresh process: a thread left by an earlier test (a loader's prefetch thread) may free a
    # batch it allocated under an earlier test's profiler inside this window, which counts.
    code = (
        "import torch\n"
        "from d2lopt.memory import measure_memory\n"
        "box = [torch.ones(1 << 16)]\n"
        "use = measure_memory(box.clear)\n"
        "assert not box\n"
        "print('peak, retained:', use.peak, use.retained)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "peak, retained: 0 0" in done.stdout.splitlines()


def test_devices_without_a_counter_are_skipped() -> None:
    use = measure_memory(lambda: None, "meta")
    assert use.peak is None and use.retained is None and "skipped" in use.method


def test_saved_activations_grow_with_the_batch_and_exclude_the_weights() -> None:
    torch.manual_seed(0)
    net = d2lopt.mlp(hidden=32)
    sizes = []
    for n in (8, 16):
        X = torch.randn(n, 1, 28, 28)
        sizes.append(saved_activation_bytes(lambda X=X: net(X), exclude=[*net.parameters(), X]))
    # one Linear saves the hidden ReLU output (n x 32 float32); the input X is excluded
    assert sizes == [8 * 32 * 4, 16 * 32 * 4]


def test_bf16_autocast_saves_fewer_activation_bytes() -> None:
    torch.manual_seed(0)
    net = d2lopt.cnn(width=4)
    X = torch.randn(8, 1, 28, 28)
    fp32 = saved_activation_bytes(lambda: net(X), exclude=net.parameters())

    def bf16() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(X)

    assert saved_activation_bytes(bf16, exclude=net.parameters()) < fp32


def _deep_mlp(depth: int = 24, width: int = 128) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(width, width)]
    for _ in range(depth):
        layers += [nn.ReLU(), nn.Linear(width, width)]
    return nn.Sequential(*layers)


def test_checkpointing_lowers_the_measured_peak_on_cpu() -> None:
    # a deep, narrow model at a large batch: activations dwarf everything else, so
    # keeping one chunk input in 8 layers must lower the peak of a training step
    torch.manual_seed(0)
    net = _deep_mlp()
    X = torch.randn(256, 128)

    def step(every: int | None) -> None:
        out = net(X) if every is None else checkpointed_forward(net, X, every)
        out.square().mean().backward()

    step(None)  # gradients allocated once, before measuring
    plain, ckpt = peak_memory(lambda: step(None)).bytes, peak_memory(lambda: step(8)).bytes
    assert ckpt < 0.6 * plain, (plain, ckpt)


def test_checkpointed_forward_gives_the_same_output_and_gradients() -> None:
    torch.manual_seed(0)
    net = d2lopt.cnn(width=4).eval()  # eval: batch norm's statistics stay put
    X = torch.randn(4, 1, 28, 28)
    plain = net(X)
    plain.sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    ckpt = checkpointed_forward(net, X, 4)
    ckpt.sum().backward()
    assert torch.allclose(plain, ckpt)
    assert all(torch.allclose(a, p.grad) for a, p in zip(grads, net.parameters(), strict=True))
    with pytest.raises(ValueError, match="every"):
        checkpointed_forward(net, X, 0)


def test_batch_that_fits_reads_a_line() -> None:
    assert batch_that_fits([10, 20], [110, 210], budget=510) == 50
    with pytest.raises(ValueError, match="batches/peaks"):
        batch_that_fits([10], [110], budget=500)
    with pytest.raises(ValueError, match="do not grow"):
        batch_that_fits([10, 20], [110, 110], budget=500)


def test_the_two_layouts_hold_the_same_samples() -> None:
    objects, array = PythonObjectsDataset(50, 8, seed=3), ArrayDataset(50, 8, seed=3)
    assert len(objects) == len(array) == 50
    for i in (0, 17, 49):
        (xa, ya), (xb, yb) = objects[i], array[i]
        assert ya == yb and torch.equal(xa, xb)


def test_worker_memory_without_workers_is_empty() -> None:
    usage = worker_memory(DataLoader(ArrayDataset(64, 4), batch_size=16))
    assert usage.uss == {} and usage.batches == ()
    with pytest.raises(ValueError, match="every"):
        worker_memory([], every=0)


FORK = "fork" in mp.get_all_start_methods()


def _epoch_growth(dataset) -> float:
    loader = DataLoader(dataset, batch_size=256, num_workers=2, multiprocessing_context="fork",
                        shuffle=True, generator=torch.Generator().manual_seed(0))  # fmt: skip
    usage = worker_memory(loader, every=8)
    assert len(usage.uss) == 2 and usage.batches[-1] == len(loader) - 1
    return usage.mean_growth()


@pytest.mark.slow
@pytest.mark.skipif(not FORK, reason="copy-on-read is a fork effect")
def test_copy_on_read_list_of_objects_grows_and_an_array_stays_within_a_bound() -> None:
    n = 20_000  # 20k samples of 64 floats: ~45 MiB as Python objects, 4.9 MiB as an array
    grows = _epoch_growth(PythonObjectsDataset(n, 64))
    array = ArrayDataset(n, 64)
    flat = _epoch_growth(array)
    # each of 2 workers reads half the samples: their objects' pages become private
    assert grows > 8 * MiB, grows / MiB
    assert flat < 0.5 * array.x.nbytes + 2 * MiB, flat / MiB
    assert grows > 4 * flat


@pytest.mark.slow
def test_prefetch_holds_workers_times_prefetch_factor_batches() -> None:
    payload = PayloadDataset(512, sample_bytes=1024)
    loader = DataLoader(payload, batch_size=4, num_workers=2, prefetch_factor=3)
    it = iter(loader)
    try:
        assert payload.wait_until_idle(settle_s=0.5) == 2 * 3 * 4
    finally:
        del it
    X = next(iter(DataLoader(payload, batch_size=4)))[1]
    assert X.shape == (4, 256)
    with pytest.raises(ValueError, match="sample_bytes"):
        PayloadDataset(4, sample_bytes=3)
