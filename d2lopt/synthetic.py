"""The offline stand-in for FashionMNIST: garment silhouettes, jittered, textured and noisy.

Taught in ``03_dataset_dataloader`` (via :func:`d2lopt.data.fashion_mnist`, which falls back
to it offline) and used directly by ``09_the_loop``. Deterministic for a seed, the same
shapes and 10 classes as the real data set, and hard enough that loss curves and
confusions teach something; :mod:`d2lopt.data` caches its full splits on disk.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import check_int

__all__ = ["FASHION_MNIST_CLASSES", "synthetic_fashion_mnist"]

FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip


def _prototypes(size: int = 28) -> torch.Tensor:
    """Ten garment silhouettes (one per FashionMNIST class), values in [0, 1]."""
    s = size / 28
    yy, xx = torch.meshgrid(torch.arange(size) / s, torch.arange(size) / s, indexing="ij")

    def box(x0: float, x1: float, y0: float, y1: float) -> torch.Tensor:
        return ((xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)).float()

    def trapezoid(top: tuple[float, float], bottom: tuple[float, float], y0: float, y1: float):
        t = ((yy - y0) / (y1 - y0)).clamp(0, 1)
        left = top[0] + (bottom[0] - top[0]) * t
        right = top[1] + (bottom[1] - top[1]) * t
        return ((xx >= left) & (xx <= right) & (yy >= y0) & (yy <= y1)).float()

    torso = box(8, 19, 5, 23)
    long_sleeves = box(3, 7, 6, 21) + box(20, 24, 6, 21)
    protos = [
        torso + box(3, 24, 5, 10),  # t-shirt: short sleeves
        box(9, 13, 3, 25) + box(15, 19, 3, 25) + box(9, 19, 3, 7),  # trouser: two legs
        torso + long_sleeves,  # pullover
        trapezoid((10, 17), (5, 22), 3, 25),  # dress
        torso + long_sleeves - 0.6 * box(13, 14, 5, 23) + box(8, 19, 23, 25),  # coat: opening
        box(3, 25, 18, 19) + box(3, 25, 21, 22) + box(3, 25, 24, 25) + box(20, 25, 14, 25),
        torso + long_sleeves - 0.5 * box(13, 14, 8, 23) + 0.6 * box(11, 16, 4, 6),  # shirt
        trapezoid((15, 22), (3, 25), 12, 20) + box(3, 25, 20, 23),  # sneaker
        box(5, 22, 10, 25) + box(8, 9, 4, 10) + box(18, 19, 4, 10) + box(8, 19, 4, 5),  # bag
        box(13, 22, 3, 25) + box(3, 22, 17, 25),  # ankle boot
    ]
    return torch.stack(protos).clamp(0, 1)


def synthetic_fashion_mnist(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` deterministic, learnable FashionMNIST-like images: ``(uint8 [n,1,28,28], labels)``.

    Each image is a class silhouette under a random affine transform (scale, rotation,
    shear, shift), multiplied by a low-frequency texture, plus pixel noise. A linear model
    reaches roughly 70-80 % accuracy and a small CNN 90 %+, as on the real data set.
    """
    check_int("n", n, 1)
    check_int("seed", seed, 0)
    g = torch.Generator().manual_seed(seed)
    protos = _prototypes()
    labels = torch.randperm(n, generator=g) % len(FASHION_MNIST_CLASSES)
    images = torch.empty(n, 1, 28, 28, dtype=torch.uint8)
    for start in range(0, n, 8192):  # chunks keep peak memory small for 60k images
        y = labels[start : start + 8192]
        m = y.numel()
        u = torch.rand(m, 8, generator=g)
        scale = 0.7 + 0.45 * u[:, 0]
        angle = (u[:, 1] - 0.5) * math.radians(40)
        shear = (u[:, 2] - 0.5) * 0.5
        tx, ty = (u[:, 3] - 0.5) * 0.5, (u[:, 4] - 0.5) * 0.5
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin + shear, tx], 1), torch.stack([sin, cos, ty], 1)], 1
        )
        grid = F.affine_grid(theta, (m, 1, 28, 28), align_corners=False)
        # a faint second silhouette makes neighbouring classes genuinely confusable
        other = (y + 1 + torch.randint(0, 9, (m,), generator=g)) % len(FASHION_MNIST_CLASSES)
        blend = protos[y] + 0.45 * u[:, 7].view(m, 1, 1) * protos[other]
        x = F.grid_sample(blend.unsqueeze(1).clamp(0, 1), grid, align_corners=False)
        texture = F.interpolate(torch.rand(m, 1, 7, 7, generator=g), size=28, mode="bilinear")
        brightness = (0.55 + 0.45 * u[:, 5]).view(m, 1, 1, 1)
        x = x * brightness * (0.55 + 0.45 * texture)
        x = x + 0.12 * torch.randn(m, 1, 28, 28, generator=g) * (0.3 + u[:, 6].view(m, 1, 1, 1))
        images[start : start + m] = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels.long()
