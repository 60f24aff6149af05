"""MobileFaceNet (Chen et al. 2018) with insightface arcface_torch ``mbf`` state-dict keys.

Keys and shapes match arcface_torch's ``backbones/mobilefacenet.py`` (``get_mbf``: scale 2,
blocks (1, 4, 6, 2); ``get_mbf_large``: scale 4, blocks (2, 8, 12, 4)): ``layers.N`` for the
trunk, ``conv_sep`` and the GDC head ``features`` (depthwise 7x7, Linear without bias,
BatchNorm1d). Every block is a ``layers`` Sequential of Conv2d, BatchNorm2d and (for ``ConvBlock``)
PReLU, as in that file. The expansion widths of the bottlenecks (128, 256, 512) are fixed numbers
there, not multiples of ``scale``; they are kept so. Input 112x112, output ``embedding_dim``.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Conv (no bias) - BN - PReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, act: bool = True) -> None:
        super().__init__()
        parts: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            parts.append(nn.PReLU(cout))
        self.layers = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _linear_block(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> ConvBlock:
    """Conv - BN without activation (arcface_torch's ``LinearBlock``)."""
    return ConvBlock(cin, cout, kernel, groups=groups, act=False)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``inner``, 3x3 depthwise (``stride``), 1x1 project."""

    def __init__(self, cin: int, cout: int, inner: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(cin, inner),
            ConvBlock(inner, inner, 3, stride, 1, groups=inner),
            _linear_block(inner, cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """``count`` residual bottlenecks at constant width."""

    def __init__(self, channels: int, count: int, inner: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(DepthWise(channels, channels, inner, 1, residual=True) for _ in range(count))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise convolution head: 7x7 depthwise, flatten, Linear, BatchNorm1d."""

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _linear_block(512, 512, kernel=7, groups=512),
            nn.Flatten(),
            nn.Linear(512, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet trunk + GDC head; ``scale`` 2, ``blocks`` (1, 4, 6, 2) is arcface ``mbf``."""

    def __init__(self, embedding_dim: int = 512, blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
                 scale: int = 2) -> None:
        super().__init__()
        c64, c128 = 64 * scale, 128 * scale
        stem2 = (ConvBlock(c64, c64, 3, 1, 1, groups=64) if blocks[0] == 1
                 else Residual(c64, blocks[0], 128))
        self.layers = nn.Sequential(
            ConvBlock(3, c64, 3, 2, 1),
            stem2,
            DepthWise(c64, c64, 128, 2, residual=False),
            Residual(c64, blocks[1], 128),
            DepthWise(c64, c128, 256, 2, residual=False),
            Residual(c128, blocks[2], 256),
            DepthWise(c128, c128, 512, 2, residual=False),
            Residual(c128, blocks[3], 256),
        )
        self.conv_sep = ConvBlock(c128, 512)
        self.features = GDC(embedding_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.conv_sep(self.layers(x)))


def mobilefacenet(embedding_dim: int = 512, large: bool = False) -> MobileFaceNet:
    """arcface_torch's ``mbf`` (default) or ``mbf_large``."""
    if large:
        return MobileFaceNet(embedding_dim, blocks=(2, 8, 12, 4), scale=4)
    return MobileFaceNet(embedding_dim)
