"""Tests for d2lopt.precision: every AMP mode on CPU, the GradScaler's sync, one TF32 API."""

from __future__ import annotations

import pytest
import torch
from conftest import requires_cuda
from torch import nn

import d2lopt
from d2lopt.precision import autocast_ctx, check_amp, grad_scaler, set_tf32


@pytest.fixture
def restore_tf32():
    """set_tf32 changes process-wide flags: put the legacy pair back afterwards."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    yield
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = cudnn


def _fp16_steps(steps: int) -> tuple[list[float], torch.dtype, int]:
    torch.manual_seed(0)
    net = d2lopt.mlp(hidden=64)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    X, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    autocast, scaler = autocast_ctx("cpu", "fp16"), grad_scaler("cpu", "fp16")
    losses, syncs = [], 0
    for _ in range(steps):
        with autocast:
            out = net(X)
            loss = nn.functional.cross_entropy(out, y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        with d2lopt.count_host_syncs() as counter:
            scaler.step(optimizer)
        syncs += counter.count
        scaler.update()
        losses.append(loss.detach().item())
    return losses, out.dtype, syncs


def test_fp16_with_a_grad_scaler_trains_on_cpu():
    check_amp("cpu", "fp16")  # no longer refused: it runs (torch.amp on CPU)
    assert d2lopt.TrainConfig(amp="fp16", device="cpu").amp == "fp16"
    losses, dtype, syncs = _fp16_steps(8)
    assert dtype == torch.float16  # autocast really ran the matmuls in fp16
    assert losses[-1] < losses[0] and all(map(torch.isfinite, torch.tensor(losses)))
    assert syncs == 8  # scaler.step reads its inf/NaN check on the host, once per step


def test_scaler_is_enabled_only_for_fp16():
    assert grad_scaler("cpu", "fp16").is_enabled()
    assert not grad_scaler("cpu", "bf16").is_enabled()
    assert not grad_scaler("cpu", "off").is_enabled()


def test_fit_trains_in_fp16_on_cpu():
    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    config = d2lopt.TrainConfig(num_epochs=2, batch_size=32, amp="fp16", device="cpu")
    history = d2lopt.fit(d2lopt.mlp(hidden=32), loader, loader, config, progress=False)
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)


@pytest.mark.parametrize("enabled", [True, False])
def test_set_tf32_keeps_legacy_and_new_readers_consistent(enabled, restore_tf32):
    set_tf32(enabled)
    # every reader torch.compile's inductor uses must answer, and agree (pytorch#166387)
    assert torch.get_float32_matmul_precision() == ("high" if enabled else "highest")
    assert torch.backends.cuda.matmul.allow_tf32 is enabled
    assert (torch.backends.cuda.matmul.fp32_precision == "tf32") is enabled
    assert torch.backends.cudnn.allow_tf32 is enabled
    assert (torch.backends.cudnn.conv.fp32_precision == "tf32") is enabled


def test_the_new_api_alone_breaks_the_legacy_reader(restore_tf32):
    # why set_tf32 uses the legacy pair: after the new API, the legacy reader raises
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
            torch.get_float32_matmul_precision()
    finally:
        set_tf32(False)  # the legacy setter makes both views agree again
    assert torch.get_float32_matmul_precision() == "highest"


@requires_cuda
def test_fp16_and_tf32_then_compile_on_cuda(restore_tf32):
    set_tf32(True)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).cuda()
    model = torch.compile(net)
    with autocast_ctx("cuda", "fp16"):
        loss = model(torch.randn(8, 1, 28, 28, device="cuda")).float().mean()
    grad_scaler("cuda", "fp16").scale(loss).backward()
    set_tf32(False)
    model(torch.randn(8, 1, 28, 28, device="cuda")).sum().backward()  # recompiles: no raise
