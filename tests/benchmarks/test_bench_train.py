"""Training throughput of meer-s (refinement stage, the costliest) against a plain IResNet-18.

Run with ``python -m pytest tests/benchmarks/test_bench_train.py --benchmark-only``. Both sides
use the encoder of ``configs/train/meer-s.yaml`` (IResNet-18 at its width and input size), the same
batch of 2 x PAIRS images (masked + unmasked), bf16 autocast, channels_last and one AdamW step; the
plain side is the IResNet forward + ArcFace head + backward only. The ratio (meer / plain
images per second) lands in ``extra_info``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from meerbench.models.iresnet import iresnet
from meerbench.models.meer import MeerNet
from meerbench.train.config import load_config
from meerbench.train.data import Batch
from meerbench.train.losses import MarginHead
from meerbench.train.objective import Objective

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train" / "meer-s.yaml"
PAIRS, CLASSES, ROUNDS = 64, 1900, 3


def _batch(side: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    masked = torch.rand(PAIRS, 3, side, side, generator=g) * 2 - 1
    maps = torch.zeros(PAIRS, 1, side, side)
    maps[..., side // 2:, :] = 1
    return Batch(masked.contiguous(memory_format=torch.channels_last),
                 (masked * 0.5).contiguous(memory_format=torch.channels_last),
                 maps.contiguous(memory_format=torch.channels_last),
                 torch.randint(0, 5, (PAIRS,), generator=g),
                 torch.randint(0, CLASSES, (PAIRS,), generator=g))


def _timed(step, rounds: int = ROUNDS) -> float:
    step()  # warm-up
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t)
    return best


def test_meer_s_training_throughput_vs_plain_iresnet(benchmark):
    torch.manual_seed(0)
    cfg = load_config(CONFIG)
    batch = _batch(cfg.arch.input_size)
    weights = cfg.stages[-1].losses
    meer = Objective(cfg, MeerNet(cfg.arch), CLASSES).to(memory_format=torch.channels_last)
    meer_opt = torch.optim.AdamW(meer.parameters(), lr=1e-4)
    plain = iresnet(cfg.arch.depth, cfg.arch.width, cfg.arch.input_size,
                    cfg.arch.embedding_dim).to(memory_format=torch.channels_last)
    head = MarginHead(cfg.arch.embedding_dim, CLASSES, "arcface", 32, 0.5)
    plain_opt = torch.optim.AdamW([*plain.parameters(), *head.parameters()], lr=1e-4)
    images = torch.cat([batch.masked, batch.unmasked])
    labels = batch.label.repeat(2)

    def meer_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            total, _, _ = meer(batch, weights)
        total.backward()
        meer_opt.step()
        meer_opt.zero_grad(set_to_none=True)

    def plain_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = head(plain(images), labels)
        loss.backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    plain_s = _timed(plain_step)
    benchmark.pedantic(meer_step, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    meer_s = benchmark.stats.stats.min
    n = 2 * PAIRS
    ratio = (n / meer_s) / (n / plain_s)
    benchmark.extra_info.update(meer_img_s=n / meer_s, plain_img_s=n / plain_s, ratio=ratio,
                                batch_images=n, input_size=cfg.arch.input_size)
    print(f"\nmeer-s {n / meer_s:.1f} img/s, plain IResNet-18 {n / plain_s:.1f} img/s, "
          f"ratio {ratio:.3f}")
    assert 0 < ratio < 1.5
