"""IResNet (ArcFace's "improved" ResNet) with insightface arcface_torch state-dict keys.

Parameter names and shapes match ``backbone.pth`` files written by arcface_torch, so those load
with ``strict=True``: ``conv1``, ``bn1``, ``prelu``, ``layer1``..``layer4`` of ``IBasicBlock``
(``bn1 conv1 bn2 prelu conv2 bn3`` and ``downsample.0/1``), ``bn2``, ``dropout``, ``fc`` and the
``features`` BatchNorm1d. ``width`` scales every channel count and ``input_size`` sets the input
side (the ``fc`` input follows); both default to the published 1.0 and 112.
"""

from __future__ import annotations

import torch
from torch import nn

DEPTHS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN-conv-BN-PReLU-conv(stride)-BN, plus the (projected) input."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """Stem at full resolution, four stride-2 stages, then BN-flatten-FC-BN to the embedding."""

    def __init__(self, layers: tuple[int, ...], width: float = 1.0, input_size: int = 112,
                 embedding_dim: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        channels = [max(1, round(c * width)) for c in (64, 64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0], eps=1e-5)
        self.prelu = nn.PReLU(channels[0])
        stages = []
        for cin, cout, blocks in zip(channels[:-1], channels[1:], layers, strict=True):
            rest = (IBasicBlock(cout, cout) for _ in range(blocks - 1))
            stages.append(nn.Sequential(IBasicBlock(cin, cout, stride=2), *rest))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(channels[-1], eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        side = input_size
        for _ in range(4):
            side = (side + 1) // 2  # a 3x3, padding 1, stride 2 convolution
        self.fc = nn.Linear(channels[-1] * side * side, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.features.weight.requires_grad_(False)  # arcface_torch keeps this scale fixed at 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet(depth: int, width: float = 1.0, input_size: int = 112, embedding_dim: int = 512,
            dropout: float = 0.0) -> IResNet:
    """IResNet-``depth`` (18, 34, 50, 100 or 200)."""
    if depth not in DEPTHS:
        raise ValueError(f"IResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
    return IResNet(DEPTHS[depth], width, input_size, embedding_dim, dropout)
