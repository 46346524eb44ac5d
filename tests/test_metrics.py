"""Accumulators and evaluation: d2l compatibility, hand-computed losses, sync counts."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from d2lopt import Accumulator, DeviceAccumulator, count_host_syncs, evaluate, evaluate_loss
from d2lopt.lab.article import article_evaluate_loss
from d2lopt.metrics import evaluate_accuracy


def test_accumulator_matches_real_d2l_under_random_operations() -> None:
    d2l = pytest.importorskip("d2l.torch")
    rng = random.Random(1234)
    for n in (1, 2, 3, 5):
        ours, theirs = Accumulator(n), d2l.Accumulator(n)
        for _ in range(200):
            op = rng.random()
            if op < 0.1:
                ours.reset()
                theirs.reset()
            else:
                args = []
                for _ in range(n):
                    kind = rng.randrange(3)
                    value = rng.uniform(-10, 10)
                    args.append(
                        value if kind == 0 else int(value) if kind == 1 else torch.tensor(value)
                    )
                ours.add(*args)
                theirs.add(*args)
            i = rng.randrange(n)
            assert ours[i] == theirs[i]
            assert ours.data == theirs.data


def test_accumulator_rejects_wrong_arity() -> None:
    acc = Accumulator(2)
    with pytest.raises(ValueError, match="expected 2 values"):
        acc.add(1.0)


def test_device_accumulator_sums_tensors_and_numbers() -> None:
    acc = DeviceAccumulator(3)
    acc.add(torch.tensor(1.5), 2, torch.tensor([1, 2, 3]).sum())
    acc.add(torch.tensor(0.5), 3, 4)
    assert acc.values() == [2.0, 5.0, 10.0]
    assert acc[1] == 5.0
    acc.reset()
    assert acc.values() == [0.0, 0.0, 0.0]


def test_device_accumulator_add_never_syncs_and_reads_once() -> None:
    acc = DeviceAccumulator(2)
    with count_host_syncs() as adds:
        for _ in range(50):
            acc.add(torch.rand(8).sum(), 8)
    assert adds.count == 0
    with count_host_syncs() as reads:
        acc.values()
    assert reads.count == 1


def test_device_accumulator_state_round_trip() -> None:
    acc = DeviceAccumulator(2)
    acc.add(torch.tensor(3.0), 4)
    other = DeviceAccumulator(2)
    other.load_state(acc.state())
    assert other.values() == [3.0, 4.0]


def _data(n: int = 37, batch: int = 8):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 5, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return X, y, [(X[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_evaluate_loss_matches_hand_computation(reduction: str) -> None:
    X, y, batches = _data()  # 37 samples: the last batch is short, weighting matters
    net = nn.Linear(5, 3)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(net(X), y, reduction="mean").item()
    got = evaluate_loss(net, batches, nn.CrossEntropyLoss(reduction=reduction))
    assert got == pytest.approx(expected, rel=1e-6)


def test_evaluate_loss_for_a_plain_mean_loss_function() -> None:
    X, y, batches = _data()
    net = nn.Linear(5, 3)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(net(X), y).item()
    assert evaluate_loss(net, batches, nn.functional.cross_entropy) == pytest.approx(expected)


def test_evaluate_loss_agrees_with_the_article_version() -> None:
    _, _, batches = _data()
    net = nn.Linear(5, 3)
    crit = nn.CrossEntropyLoss(reduction="none")
    assert evaluate_loss(net, batches, crit) == pytest.approx(
        article_evaluate_loss(net, batches, crit, "cpu"), rel=1e-6
    )


def test_evaluate_loss_syncs_once_where_the_article_syncs_per_batch() -> None:
    _, _, batches = _data()
    net = nn.Linear(5, 3)
    crit = nn.CrossEntropyLoss(reduction="none")
    with count_host_syncs() as ours:
        evaluate_loss(net, batches, crit)
    with count_host_syncs() as article:
        article_evaluate_loss(net, batches, crit, "cpu")
    assert ours.count == 1
    assert article.count == len(batches)  # float(loss.sum()) once per batch


def test_evaluate_restores_training_mode_and_records_no_graph() -> None:
    _, _, batches = _data()
    net = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    seen_modes = []
    net[1].register_forward_hook(lambda m, i, o: seen_modes.append((m.training, o.requires_grad)))
    net.train()
    a = evaluate_loss(net, batches, nn.CrossEntropyLoss())
    b = evaluate_loss(net, batches, nn.CrossEntropyLoss())
    assert a == b  # dropout was off: deterministic
    assert net.training
    assert all(mode == (False, False) for mode in seen_modes)
    net.eval()
    evaluate_loss(net, batches, nn.CrossEntropyLoss())
    assert not net.training


def test_evaluate_restores_mode_when_the_loop_raises() -> None:
    net = nn.Linear(5, 3).train()

    def broken():
        yield torch.randn(2, 5), torch.tensor([0, 1])
        raise RuntimeError("disk vanished")

    with pytest.raises(RuntimeError, match="disk vanished"):
        evaluate_loss(net, broken(), nn.CrossEntropyLoss())
    assert net.training


def test_evaluate_accuracy_counts_correct_predictions() -> None:
    net = nn.Identity()
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 1, 1])
    assert evaluate_accuracy(net, [(scores, labels)]) == 0.75
    result = evaluate(net, [(scores[:2], labels[:2]), (scores[2:], labels[2:])], None)
    assert result["accuracy"] == 0.75 and result["samples"] == 4


def test_evaluate_loss_requires_a_criterion() -> None:
    with pytest.raises(ValueError, match="criterion"):
        evaluate_loss(nn.Linear(2, 2), [], None)  # type: ignore[arg-type]
