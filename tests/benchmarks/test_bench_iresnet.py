"""Engine throughput for IResNet-50 on CPU against a plain forward loop on the same tensors.

Run with ``python -m pytest tests/benchmarks --benchmark-only`` (method: ``engine_ratio.py``).
IResNet-50 costs
about six times a torchvision ResNet-50 at 112x112 (stride-1 stem), hence the small image count.
"""

from __future__ import annotations

import torch
from engine_ratio import engine_vs_plain
from torch import nn

from meerbench.models.base import FaceModelCfg, TorchFaceModel
from meerbench.models.iresnet import iresnet

N, BATCH = 32, 16


def iresnet50_model() -> TorchFaceModel:
    """Random IResNet-50 with finite activations (inf/denormal values would distort timings)."""
    torch.manual_seed(0)
    net = iresnet(50)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
    nn.init.normal_(net.fc.weight, 0, net.fc.in_features ** -0.5)
    return TorchFaceModel("iresnet50-random", FaceModelCfg(), net)


def test_iresnet50_engine_vs_plain_forward_loop(benchmark):
    # The forward dominates (~6 GFLOP per image), so the engine's own work is a few per cent; the
    # bound leaves room for noise on shared CPUs and catches e.g. a lost bf16 autocast (~0.5).
    assert engine_vs_plain(benchmark, iresnet50_model(), n=N, batch=BATCH, rounds=3) >= 0.8
