"""The course's models and their initialization (taught in ``02_definition``).

Small on purpose: the lessons are about the *pipeline* around the model, and both models
train in seconds on a laptop CPU while still giving a GPU real work at large batch sizes.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import check_int, check_number

__all__ = ["mlp", "cnn", "init_weights", "count_parameters"]


def _check_sizes(**sizes: object) -> None:
    for name, value in sizes.items():
        check_int(name, value, 1)


def _check_module(name: str, value: object) -> None:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name}: expected an nn.Module such as mlp(), got {type(value).__name__}")


def mlp(
    in_features: int = 28 * 28, hidden: int = 256, num_classes: int = 10, dropout: float = 0.0
) -> nn.Sequential:
    """A one-hidden-layer perceptron for 28x28 images (d2l's ``net`` of chapter 5).

    Example:
        >>> mlp()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    _check_sizes(in_features=in_features, hidden=hidden, num_classes=num_classes)
    check_number("dropout", dropout, minimum=0, below=1)  # a probability
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, num_classes))
    return nn.Sequential(*layers)


def cnn(in_channels: int = 1, num_classes: int = 10, width: int = 32) -> nn.Sequential:
    """A small VGG-style CNN with batch norm that accepts any image size.

    Three conv blocks (``width``, ``2*width``, ``4*width`` channels), global average pooling
    and a linear head: the adaptive pooling lets the same model train on 28x28 FashionMNIST
    tensors and on 64x64 RGB images decoded from disk.

    Example:
        >>> cnn(in_channels=3)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """
    _check_sizes(in_channels=in_channels, num_classes=num_classes, width=width)

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(in_channels, width),
        *block(width, 2 * width),
        *block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


@torch.no_grad()
def init_weights(m: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for linear and conv layers.

    Use as ``net.apply(init_weights)`` (the article's model definition); batch-norm layers
    keep their (1, 0) defaults.
    """
    _check_module("m", m)
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    _check_module("net", net)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
