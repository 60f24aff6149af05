"""Engine throughput for IResNet-50 on CPU against a plain forward loop on the same tensors.

Run with ``python -m pytest tests/benchmarks --benchmark-only``. As in ``test_bench_engine.py``,
both sides run in this process on the same pre-decoded uint8 images and the plain loop gets its
inputs already preprocessed, so the ratio charges the engine for its own work. IResNet-50 costs
about six times a torchvision ResNet-50 at 112x112 (stride-1 stem), hence the small image count.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from meerbench.engine.embed import ArrayImages, embed
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


def plain_loop(model: TorchFaceModel, batches: list[torch.Tensor]) -> None:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for x in batches:
            model.net(x)


def test_iresnet50_engine_vs_plain_forward_loop(benchmark):
    model = iresnet50_model()
    images = torch.randint(0, 256, (N, 112, 112, 3), dtype=torch.uint8)
    batches = [model.cfg.preprocess(images[i:i + BATCH]).contiguous(
        memory_format=torch.channels_last) for i in range(0, N, BATCH)]
    plain_loop(model, batches[:1])  # warm-up both paths
    embed(model, ArrayImages(images[:BATCH]), batch_size=BATCH, progress=False)

    plain: list[float] = []

    def time_plain_loop() -> None:  # runs untimed before each engine round: interleaves the two
        t = time.perf_counter()
        plain_loop(model, batches)
        plain.append(time.perf_counter() - t)

    benchmark.pedantic(
        lambda: embed(model, ArrayImages(images), batch_size=BATCH, progress=False),
        setup=time_plain_loop, rounds=3, iterations=1,
    )
    engine_s = benchmark.stats.stats.min
    ratio = min(plain) / engine_s
    benchmark.extra_info.update(engine_img_s=N / engine_s, plain_img_s=N / min(plain), ratio=ratio)
    print(f"\nIResNet-50: engine {N / engine_s:.1f} img/s, plain {N / min(plain):.1f} img/s, "
          f"ratio {ratio:.3f}")
    # The forward dominates (~6 GFLOP per image), so the engine's own work is a few per cent; the
    # bound leaves room for noise on shared CPUs and catches e.g. a lost bf16 autocast (~0.5).
    assert ratio >= 0.8
