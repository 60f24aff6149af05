"""Engine throughput against a plain forward loop of a resnet18-sized random-weight model.

Run with ``python -m pytest tests/benchmarks --benchmark-only`` (method: ``engine_ratio.py``).
"""

from __future__ import annotations

import torch
import torchvision
from engine_ratio import engine_vs_plain

from meerbench.models.base import FaceModelCfg, TorchFaceModel


def test_engine_vs_plain_forward_loop(benchmark):
    torch.manual_seed(0)
    model = TorchFaceModel("resnet18-random", FaceModelCfg(),
                           torchvision.models.resnet18(num_classes=512))
    assert engine_vs_plain(benchmark, model, n=256, batch=64, rounds=5) >= 0.9
