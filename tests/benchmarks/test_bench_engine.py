"""Engine throughput against a plain forward loop of the same model on the same tensors.

Run with ``python -m pytest tests/benchmarks --benchmark-only``. Both sides run in this process on
the same pre-decoded uint8 images; the plain loop gets its inputs already preprocessed, so the
ratio charges the engine for its own preprocessing, flip fusion, normalisation and bookkeeping.
"""

from __future__ import annotations

import time

import torch
import torchvision

from meerbench.engine.embed import ArrayImages, embed
from meerbench.models.base import FaceModelCfg, TorchFaceModel

N, BATCH = 256, 64


def resnet18_model() -> TorchFaceModel:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=512)
    return TorchFaceModel("resnet18-random", FaceModelCfg(), net)


def plain_loop(model: TorchFaceModel, batches: list[torch.Tensor]) -> None:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for x in batches:
            model.net(x)


def test_engine_vs_plain_forward_loop(benchmark):
    model = resnet18_model()
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
        setup=time_plain_loop, rounds=5, iterations=1,
    )
    engine_s = benchmark.stats.stats.min
    ratio = min(plain) / engine_s
    benchmark.extra_info.update(engine_img_s=N / engine_s, plain_img_s=N / min(plain), ratio=ratio)
    print(f"\nengine {N / engine_s:.1f} img/s, plain {N / min(plain):.1f} img/s, ratio {ratio:.3f}")
    assert ratio >= 0.9


