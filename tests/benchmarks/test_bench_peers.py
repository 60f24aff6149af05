"""meerbench against the tools users know, at realistic sizes (pytest-benchmark; skipped by
default, run with ``--benchmark-only``; docs/performance.md holds the measured numbers).

Every case runs a pair of tests/peers.py on identical inputs in one process: the peer's call is
the untimed setup before each of meerbench's timed rounds, so the two alternate under the same
machine load; both take the best of their rounds (``time.perf_counter``). Each case checks
agreement under the pair's stated tolerance and records ``peer_over_meerbench`` (above 1:
meerbench faster), the differences measured and the load average in ``benchmark.extra_info``.
A case whose peer package is absent skips with the reason. The largest cases (top-k over a
100,000-item gallery, 2,048-d Frechet) are also marked slow.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from peers import INPUTS, PAIRS
from test_bench_metrics import PeakRss

VERIFICATION_PAIRS = [name for name, pair in PAIRS.items() if pair.kind == "verification"]
IMAGE_PAIRS = [name for name, pair in PAIRS.items() if pair.kind == "images"]

# (pair, size label, input arguments, rounds)
CASES = [
    *[(name, "6,000 pairs", {"n": 6000}, 20) for name in VERIFICATION_PAIRS],
    *[(name, "1,000,000 pairs", {"n": 1_000_000}, 3) for name in VERIFICATION_PAIRS],
    ("bob-cmc-dir", "2,000 probes x 10,000 gallery score lists",
     {"n_probes": 2000, "n_gallery": 10_000, "dim": 512}, 3),
    *[(name, "3,000 images 112x112", {"n": 3000, "size": 112}, 2) for name in IMAGE_PAIRS],
]
SLOW_CASES = [
    ("faiss-IndexFlatIP", "10,000 probes x 100,000 gallery x 512, k=10",
     {"n_probes": 10_000, "n_gallery": 100_000, "dim": 512, "k": 10}, 2),
    ("pytorch_fid-frechet", "2,048-d statistics of 2,560 samples", {"dims": 2048, "n": 2560}, 2),
]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


@functools.cache
def _measured_code() -> str:
    """The commit measured, and any metric module changed in the working tree since it."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout

    changed = git("status", "--porcelain", "--", "meerbench/metrics").split()[1::2]
    return git("rev-parse", "--short", "HEAD").strip() + "".join(f" +{p}" for p in changed)


def _side_by_side(benchmark: Any, name: str, size: str, kwargs: dict[str, Any],
                  rounds: int) -> dict[str, Any]:
    """Time meerbench and the peer alternately, check agreement, record the ratio."""
    pair = PAIRS[name]
    pytest.importorskip(pair.package, reason=f"{name}: peer package {pair.package!r} is not "
                                             "installed (pip install -e '.[bench]')")
    inputs = INPUTS[pair.kind](**kwargs)
    load_before = _load()
    peer_times: list[float] = []
    peer_out: list[Any] = []

    def time_peer() -> None:
        start = time.perf_counter()
        out = pair.peer(inputs)
        peer_times.append(time.perf_counter() - start)
        peer_out[:] = [out]

    ours = benchmark.pedantic(pair.ours, args=(inputs,), setup=time_peer, rounds=rounds,
                              iterations=1)
    measured = pair.agree(ours, peer_out[0], inputs)
    ours_s, peer_s = benchmark.stats.stats.min, min(peer_times)
    info = {"pair": name, "size": size, "meerbench_s": ours_s, "peer_s": peer_s,
            "peer_over_meerbench": peer_s / ours_s, "tolerance": pair.tolerance,
            "load_before": load_before, "load_after": _load(), "rounds": rounds,
            "code": _measured_code(), **measured}
    benchmark.extra_info.update(info)
    print(f"\n{name} [{size}]: meerbench {ours_s:.4g} s, peer {peer_s:.4g} s, "
          f"peer/meerbench {peer_s / ours_s:.2f}, load {load_before}-{info['load_after']}, "
          f"agreement {measured}")
    return info


@pytest.mark.parametrize(("name", "size", "kwargs", "rounds"), CASES,
                         ids=[f"{c[0]}-{c[2].get('n', c[2].get('n_probes'))}" for c in CASES])
def test_bench_peer(benchmark: Any, name: str, size: str, kwargs: dict[str, Any],
                    rounds: int) -> None:
    # The first call of a peer pays its imports and JIT compilation (bob.measure's numba):
    # one untimed warm-up each on tiny inputs keeps that out of the ratio.
    pair = PAIRS[name]
    pytest.importorskip(pair.package)
    tiny = INPUTS[pair.kind](**{**kwargs, **_TINY[pair.kind]})
    pair.peer(tiny), pair.ours(tiny)
    _side_by_side(benchmark, name, size, kwargs, rounds)


_TINY = {"verification": {"n": 2000}, "lists": {"n_probes": 50, "n_gallery": 200},
         "images": {"n": 4}, "gallery": {"n_probes": 10, "n_gallery": 100},
         "stats": {"dims": 8, "n": 20}}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size", "kwargs", "rounds"), SLOW_CASES,
                         ids=[c[0] for c in SLOW_CASES])
def test_bench_peer_large(benchmark: Any, name: str, size: str, kwargs: dict[str, Any],
                          rounds: int) -> None:
    """As test_bench_peer; for top-k also the peak resident memory above the inputs of one more
    call of each (faiss copies the gallery into its index; meerbench holds one block of
    similarities at a time)."""
    info = _side_by_side(benchmark, name, size, kwargs, rounds)
    pair = PAIRS[name]
    if pair.kind != "gallery":
        return
    inputs = INPUTS[pair.kind](**kwargs)
    for side, fn in (("meerbench", pair.ours), ("peer", pair.peer)):
        with PeakRss() as memory:
            fn(inputs)
        info[f"{side}_peak_gb"] = memory.above_entry_gb
    benchmark.extra_info.update(info)
    print(f"peak memory above inputs: meerbench {info['meerbench_peak_gb']:.2f} GB, "
          f"peer {info['peer_peak_gb']:.2f} GB")
