"""SynthFace rendering speed (images/s on one core); run with ``pytest --benchmark-only``."""

from __future__ import annotations

import time

import pytest

from meerbench.data import masks
from meerbench.data.synthface import render_face

BATCH = 50


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_render_face_speed(benchmark: pytest.FixtureRequest, masked: bool) -> None:
    counter = iter(range(10**9))
    cpu: list[float] = []

    def batch() -> None:
        start = time.process_time()
        for _ in range(BATCH):
            i = next(counter)
            render_face(2311, i % 97, i, masked=masked, families=masks.SEEN_FAMILIES)
        cpu.append(time.process_time() - start)

    benchmark.pedantic(batch, rounds=5, warmup_rounds=1)
    wall = benchmark.stats.stats.min
    benchmark.extra_info["images_per_s_wall"] = round(BATCH / wall, 1)
    benchmark.extra_info["images_per_s_cpu"] = round(BATCH / min(cpu), 1)
    assert BATCH / min(cpu) > 50  # a gross regression guard; the target is >= 300/s per core
