"""Model parallelism and sharding (issue 16): the pipeline's arithmetic, its correctness
against the unsplit model, and per-rank state bytes of DDP, FSDP and a pipeline.

The multi-process checks launch the real torchrun once (module fixture) on 2 CPU ranks.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from d2lopt.dist import parallelism
from d2lopt.dist.parallelism import StateBytes, state_bytes
from d2lopt.dist.pipeline import bubble_fraction, build_schedule, peak_activations, split_stages
from d2lopt.models import cnn, mlp
from d2lopt.sharding import gradient_sync


# ------------------------------------------------------------------------------ arithmetic
def test_split_keeps_every_layer_once_and_puts_weights_on_every_stage():
    net = cnn()
    for n in (1, 2, 3, 4):
        stages = split_stages(net, n)
        assert len(stages) == n
        assert [m for s in stages for m in s] == list(net)  # contiguous, in order, no copies
        assert all(any(True for _ in s.parameters()) for s in stages)
    assert [len(s) for s in split_stages(mlp(), 2)] == [3, 1]  # weightless ReLU rides along


def test_the_split_minimizes_the_heaviest_stage():
    net = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10), nn.Linear(10, 10), nn.Linear(10, 20))
    sizes = [sum(p.numel() for p in s.parameters()) for s in split_stages(net, 2)]
    assert max(sizes) == 330 and sum(sizes) == 550  # no cut makes the heavier stage lighter


def test_bubble_and_activation_arithmetic():
    assert bubble_fraction(1, 1) == 0.0
    assert bubble_fraction(2, 1) == 0.5 and bubble_fraction(2, 8) == pytest.approx(1 / 9)
    assert bubble_fraction(4, 4) == pytest.approx(3 / 7)
    assert peak_activations("gpipe", 2, 8) == 8
    assert [peak_activations("1f1b", 4, 8, s) for s in range(4)] == [4, 3, 2, 1]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: split_stages(mlp(), 3), ValueError, "stages: the model has 2 layers with weights"),
        (lambda: split_stages(nn.Linear(2, 2), 1), TypeError, "net: expected an nn.Sequential"),
        (lambda: split_stages(mlp(), 0), ValueError, "stages: must be >= 1, got 0"),
        (lambda: bubble_fraction(2, 0), ValueError, "microbatches: must be >= 1, got 0"),
        (lambda: peak_activations("zb", 2, 2), ValueError, "schedule: must be one of"),
        (lambda: peak_activations("gpipe", 2, 2, stage=2), ValueError, "stage: must be in 0..1"),
        (lambda: build_schedule(mlp(), 0, 2, torch.device("cpu"), "1f1b", 1, None), ValueError,
         "microbatches: 1F1B needs at least as many micro-batches as stages (2)"),
    ],
)  # fmt: skip
def test_bad_input_names_the_parameter(call, error, match):
    with pytest.raises(error, match=match.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_state_bytes_counts_params_grads_and_optimizer_state_exactly():
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    n = sum(p.numel() for p in net.parameters())
    assert state_bytes(net, opt) == StateBytes(4 * n, 0, 0)  # no step yet: no grads, no momentum
    net(torch.zeros(2, 1, 28, 28)).sum().backward()
    opt.step()
    assert state_bytes(net, opt).to_dict() == {
        "params": 4 * n, "grads": 4 * n, "optimizer": 4 * n, "total": 12 * n,
    }  # fmt: skip


def test_gradient_sync_is_a_no_op_outside_a_process_group():
    with gradient_sync(mlp(), "", sync=False):
        pass


# ------------------------------------------------------------------------------ 2 ranks
@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("lab") / "two.json"
    return parallelism.run(2, out, rounds=1, batch_size=16, microbatches=(1, 4), device="cpu")


@pytest.mark.slow
def test_pipeline_output_and_gradients_equal_the_unsplit_model(lab):
    for schedule in ("gpipe", "1f1b"):
        check = lab["check"][schedule]
        assert check["microbatches"] == 4 and check["tensors"] == len(list(cnn().parameters()))
        assert check["loss_diff"] <= 1e-6 and check["grad_diff"] <= 1e-5, check


@pytest.mark.slow
def test_fsdp_holds_half_and_each_stage_part_of_the_state(lab):
    ddp, fsdp, pipe = (lab["bytes"][k] for k in ("ddp", "fsdp", "pipeline"))
    whole = 3 * 4 * sum(p.numel() for p in cnn().parameters())  # params + grads + momentum
    assert [r["total"] for r in ddp] == [whole, whole]  # every rank holds everything
    assert sum(r["total"] for r in fsdp) == pytest.approx(whole, rel=0.01)  # padding aside
    assert all(abs(r["total"] - whole / 2) <= 0.01 * whole for r in fsdp)
    assert sum(r["total"] for r in pipe) == whole and all(r["total"] < whole for r in pipe)


@pytest.mark.slow
def test_timing_rounds_cover_every_variant_in_lockstep(lab):
    t = lab["timing"]
    assert t["rounds"] == 1
    assert set(t["step"]) == {"ddp", "fsdp", "gpipe m=1", "gpipe m=4", "1f1b m=4"}  # 1F1B: m >= 2
    assert all(len(v) == 1 and v[0] > 0 for v in t["step"].values())
    assert all(len(v) == 2 for v in t["per_rank"].values())  # every rank reported


def test_the_program_refuses_to_run_without_torchrun():
    proc = subprocess.run([sys.executable, "-m", "d2lopt.parallelism", "--json", "x.json"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode != 0 and "launch with torchrun" in proc.stderr


def test_idle_shares_are_clipped_to_what_is_possible_and_count_the_rounds_that_crossed() -> None:
    from d2lopt.dist.pipeline import idle_share

    # 13's committed "1f1b m=2 stage 0: idle 10% [-8%, 26%]": in some rounds the compute
    # alone took longer than the whole step, so the interval reached below 0 %
    step = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    compute = [0.8, 1.1, 0.7, 1.05, 0.9, 0.75]
    share = idle_share(step, compute)
    assert share.low == 0.0 and share.clipped and share.noisy_rounds == 2 and share.rounds == 6
    assert 0.0 < share.estimate < share.high < 1.0
    assert str(share).endswith("(clipped at 0 %: in 2 of 6 rounds the compute alone took "
                               "longer than the whole step, which is noise)")  # fmt: skip
    calm = idle_share(step, [0.5, 0.52, 0.48, 0.5, 0.51, 0.49])
    assert not calm.clipped and str(calm) == "50% [48%, 52%], 6 rounds"
