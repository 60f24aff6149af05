"""SynthFace speed on one core: rendering (unmasked, masked) and writing a split to disk.

Run with ``pytest --benchmark-only``; images/s are in each benchmark's extra_info.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from meerbench.data.render import occluders
from meerbench.data.render.face import render_face
from meerbench.data.synthface import SplitSpec, generate_split

BATCH = 50


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_render_face_speed(benchmark: pytest.FixtureRequest, masked: bool) -> None:
    """A masked image includes its occluder and its exact unmasked twin."""
    counter = iter(range(10**9))
    cpu: list[float] = []

    def batch() -> None:
        start = time.process_time()
        for _ in range(BATCH):
            i = next(counter)
            render_face(2311, i % 97, i, masked=masked, families=occluders.SEEN_FAMILIES)
        cpu.append(time.process_time() - start)

    benchmark.pedantic(batch, rounds=5, warmup_rounds=1)
    wall = benchmark.stats.stats.min
    benchmark.extra_info["images_per_s_wall"] = round(BATCH / wall, 1)
    benchmark.extra_info["images_per_s_cpu"] = round(BATCH / min(cpu), 1)
    assert BATCH / min(cpu) > 50  # a gross regression guard; the target is >= 300/s per core


def test_generate_split_speed(benchmark: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The synthmask test split's mix (half masked) written as it is into the cache: PNG image,
    twin and occluder map per masked image, manifest, landmarks."""
    counter = iter(range(10**9))
    spec_args = dict(seed=2311, n_identities=4, n_unmasked=10, n_masked=10,
                     families=occluders.SEEN_FAMILIES)
    n_images = 4 * 20

    def write() -> None:
        k = next(counter)
        spec = SplitSpec(name=f"bench{k}", first_identity=10_000 + 4 * k, **spec_args)
        out = generate_split(spec, progress=False, root=tmp_path).dir
        shutil.rmtree(out)

    benchmark.pedantic(write, rounds=3, warmup_rounds=1)
    benchmark.extra_info["images_per_s_wall"] = round(n_images / benchmark.stats.stats.min, 1)
