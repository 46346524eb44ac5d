"""The course models and their initialization."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from d2lopt import cnn, count_parameters, init_weights, mlp


@pytest.mark.parametrize(
    ("net", "shape"),
    [(mlp(), (4, 1, 28, 28)), (cnn(), (4, 1, 28, 28)), (cnn(in_channels=3), (4, 3, 64, 64))],
)
def test_models_output_class_scores(net: nn.Module, shape: tuple[int, ...]) -> None:
    assert net(torch.zeros(shape)).shape == (4, 10)


def test_init_weights_resets_linear_and_conv_layers() -> None:
    net = cnn(width=8)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(3.0)
    net.apply(init_weights)
    conv, bn, linear = net[0], net[1], net[-1]
    bound = (6 / (conv.in_channels * 9 + conv.out_channels * 9)) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.std() > 0
    assert torch.all(linear.bias == 0)
    assert torch.all(bn.weight == 3.0)  # batch norm keeps what it had: not a linear/conv layer


def test_count_parameters() -> None:
    assert count_parameters(mlp(hidden=10)) == 784 * 10 + 10 + 10 * 10 + 10
