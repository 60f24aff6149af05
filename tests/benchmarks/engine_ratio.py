"""Shared measurement: the engine against a plain forward loop of the same model, same tensors.

Both sides run in one process on the same pre-decoded uint8 images; the plain loop gets its
inputs already preprocessed, so the ratio charges the engine for its own preprocessing, flip
fusion, normalisation and bookkeeping. The plain loop runs untimed (as pytest-benchmark's setup)
before each engine round, so the two interleave and share the machine's noise.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from meerbench.engine.embed import ArrayImages, embed
from meerbench.models.base import FaceModelCfg, TorchFaceModel
from meerbench.models.iresnet import iresnet


def random_iresnet(depth: int) -> TorchFaceModel:
    """Random IResNet with finite activations (inf/denormal values would distort timings)."""
    torch.manual_seed(0)
    net = iresnet(depth)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
    nn.init.normal_(net.fc.weight, 0, net.fc.in_features ** -0.5)
    return TorchFaceModel(f"iresnet{depth}-random", FaceModelCfg(), net)


def plain_loop(model: TorchFaceModel, batches: list[torch.Tensor]) -> None:
    """The baseline: bf16-autocast forward of each batch on its own device, waited for."""
    device = batches[0].device
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        for x in batches:
            model.net(x)
    if device.type == "cuda":
        torch.cuda.synchronize()


def engine_vs_plain(benchmark, model: TorchFaceModel, n: int, batch: int, rounds: int) -> float:
    """Record engine and plain images/s in ``extra_info``; return plain time / engine time."""
    images = torch.randint(0, 256, (n, 112, 112, 3), dtype=torch.uint8)
    batches = [model.cfg.preprocess(images[i:i + batch]).contiguous(
        memory_format=torch.channels_last) for i in range(0, n, batch)]
    plain_loop(model, batches[:1])  # warm-up both paths
    embed(model, ArrayImages(images[:batch]), batch_size=batch, progress=False)
    plain: list[float] = []

    def time_plain_loop() -> None:
        t = time.perf_counter()
        plain_loop(model, batches)
        plain.append(time.perf_counter() - t)

    benchmark.pedantic(lambda: embed(model, ArrayImages(images), batch_size=batch, progress=False),
                       setup=time_plain_loop, rounds=rounds, iterations=1)
    engine_s = benchmark.stats.stats.min
    ratio = min(plain) / engine_s
    benchmark.extra_info.update(engine_img_s=n / engine_s, plain_img_s=n / min(plain), ratio=ratio)
    print(f"\n{model.name}: engine {n / engine_s:.1f} img/s, plain {n / min(plain):.1f} img/s, "
          f"ratio {ratio:.3f}")
    return ratio
