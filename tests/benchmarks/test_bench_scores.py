"""Score files and the identity bootstrap at scale (issue #17 item 3, issue #15's dense case).

pytest-benchmark, skipped by default; run with ``--benchmark-enable -m slow`` (every case here
builds millions of pairs). Ratios are timed in one process with ``time.perf_counter`` so that
the load of a shared machine cancels; absolute seconds and peak memory go to ``extra_info``.
``MEERBENCH_BENCH_LINES`` shrinks the score file for a quick try of the code.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from test_bench_metrics import PeakRss

from meerbench.cli import main
from meerbench.metrics import scorefiles as sf
from meerbench.metrics import verification as v
from meerbench.metrics.stats import unique_inverse

N_LINES = int(os.environ.get("MEERBENCH_BENCH_LINES", 10_000_000))  # smaller: a quick try
IDENTITIES, IMAGES = 1000, 10  # 10,000 images
CONDITIONS = ("UMR-UMP", "UMR-MP", "MR-MP")


def _pairs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` engine-style pairs over 1,000 identities x 10 images, about 1% genuine."""
    rng = np.random.default_rng(seed)
    probe = rng.integers(0, IDENTITIES * IMAGES, n)
    ref = rng.integers(0, IDENTITIES * IMAGES, n)
    mate = rng.random(n) < 0.01
    ref = np.where(mate, probe // IMAGES * IMAGES + (probe + rng.integers(1, IMAGES, n)) % IMAGES,
                   ref)
    label = probe // IMAGES == ref // IMAGES
    score = np.where(label, rng.normal(0.6, 0.15, n), rng.normal(0.0, 0.12, n))
    return {"ref": ref, "probe": probe, "label": label, "score": score,
            "condition": np.arange(n) % len(CONDITIONS)}


def _write_csv(path: Path, pairs: dict[str, np.ndarray]) -> None:
    """The engine's CSV layout (:data:`sf.CSV_COLUMNS`), written by pyarrow (write_scores_csv
    would take minutes at this size; the bytes are the same layout, scores as shortest repr)."""
    images = pa.array([f"id{i // IMAGES:04d}/{i % IMAGES}.png" for i in range(IDENTITIES * IMAGES)])
    names = pa.array([f"id{i:04d}" for i in range(IDENTITIES)])

    def text(codes: np.ndarray, values: pa.Array) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), values).cast(
            pa.string())

    table = pa.table({
        "ref": text(pairs["ref"], images), "probe": text(pairs["probe"], images),
        "ref_id": text(pairs["ref"] // IMAGES, names),
        "probe_id": text(pairs["probe"] // IMAGES, names),
        "label": pairs["label"].astype(np.int8), "score": pairs["score"],
        "fold": (pairs["probe"] // IMAGES % 10).astype(np.int8),
        "condition": text(pairs["condition"], pa.array(CONDITIONS))})
    pcsv.write_csv(table, path, pcsv.WriteOptions(quoting_style="none"))


@pytest.fixture(scope="module")
def score_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scores") / "10m.scores.csv"
    _write_csv(path, _pairs(N_LINES))
    return path


def _seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _line_by_line(path: Path) -> sf.ScoreTable:
    with sf._open_text(path) as handle:
        return sf._read_csv(path, handle)


@pytest.mark.slow
def test_bench_read_10m_line_csv(benchmark, score_file: Path, tmp_path: Path) -> None:
    """New reader vs the line-by-line reader it replaced, same file, same process; gzip and
    Parquet read times and sizes."""
    old_s, old = _seconds(lambda: _line_by_line(score_file))
    with PeakRss() as memory:
        table = benchmark.pedantic(sf.load_scores, args=(score_file,), rounds=1, iterations=1)
    new_s = benchmark.stats["median"]
    for name in ("scores", "labels", "folds", "ref_ids", "probe_ids", "conditions", "refs",
                 "probes"):
        np.testing.assert_array_equal(getattr(table, name), getattr(old, name), err_msg=name)
    del old
    needed_s, _ = _seconds(lambda: sf.load_scores(score_file, ("probe_id", "fold", "condition")))
    packed = tmp_path / "10m.scores.csv.gz"
    with score_file.open("rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    gzip_s, _ = _seconds(lambda: sf.load_scores(packed))
    parquet = tmp_path / "10m.parquet"
    write_s, _ = _seconds(lambda: sf.write_table_parquet(parquet, table))
    parquet_s, again = _seconds(lambda: sf.load_scores(parquet))
    np.testing.assert_array_equal(again.scores, table.scores)
    benchmark.extra_info.update(
        lines=N_LINES, csv_mb=score_file.stat().st_size / 1e6, new_s=new_s, old_s=old_s,
        speedup=old_s / new_s, new_peak_gb_above_entry=memory.above_entry_gb,
        metrics_columns_only_s=needed_s, gzip_mb=packed.stat().st_size / 1e6, gzip_s=gzip_s,
        parquet_mb=parquet.stat().st_size / 1e6, parquet_write_s=write_s,
        parquet_read_s=parquet_s, parquet_speedup_over_csv=new_s / parquet_s)
    assert old_s / new_s > 2


def _metrics(path: Path, rounds: int) -> dict:
    """``meerbench metrics --scores path --json`` in this process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["metrics", "--scores", str(path), "--json", "--bootstrap", str(rounds),
                     "--no-progress"])
    assert code == 0
    return json.loads(out.getvalue())


@pytest.mark.slow
def test_bench_metrics_scores_10m(benchmark, score_file: Path) -> None:
    """``meerbench metrics --scores`` on 10M lines: with 1,000 identity-bootstrap rounds (time,
    peak memory), and without bootstrap, from the CSV and from its Parquet copy, against the
    same reports computed from arrays."""
    with PeakRss() as memory:
        result = benchmark.pedantic(_metrics, args=(score_file, 1000), rounds=1, iterations=1)
    boot_s = benchmark.stats["median"]
    table = sf.load_scores(score_file, ("probe_id", "fold", "condition"))
    groups = unique_inverse(table.probe_ids)[1]
    config = v.VerificationSettings(bootstrap=0)

    def from_arrays() -> dict:
        return {c: v.verification_report(table.scores[s], table.labels[s], table.folds[s], config,
                                         groups[s])
                for c in CONDITIONS if (s := table.conditions == c).any()}

    parquet = score_file.with_suffix(".parquet")
    sf.write_table_parquet(parquet, sf.load_scores(score_file))
    runs = {"csv": lambda: _metrics(score_file, 0)["verification"], "arrays": from_arrays,
            "parquet": lambda: _metrics(parquet, 0)["verification"]}
    best, outs = dict.fromkeys(runs, np.inf), {}
    for _ in range(3):  # interleaved, best of three: the load of a shared machine varies
        for name, run in runs.items():
            seconds, outs[name] = _seconds(run)
            best[name] = min(best[name], seconds)
    assert outs["csv"] == outs["arrays"] == outs["parquet"]
    benchmark.extra_info.update(
        lines=N_LINES, bootstrap_1000_s=boot_s, peak_gb_above_entry=memory.above_entry_gb,
        no_bootstrap_csv_s=best["csv"], arrays_s=best["arrays"],
        csv_over_arrays=best["csv"] / best["arrays"], no_bootstrap_parquet_s=best["parquet"],
        parquet_over_arrays=best["parquet"] / best["arrays"])
    assert all(r["auc"]["ci95"] for r in result["verification"].values())


def _dense(n_impostor: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 45,000 genuine pairs of 1,000 identities x 10 images and ``n_impostor`` impostor
    pairs; the cluster of a pair is its probe identity."""
    rng = np.random.default_rng(seed)
    a, b = np.triu_indices(IMAGES, 1)
    genuine_probe = (np.arange(IDENTITIES)[:, None] * IMAGES + b).ravel()
    probe = np.r_[genuine_probe, rng.integers(0, IDENTITIES * IMAGES, n_impostor)]
    labels = np.r_[np.ones(genuine_probe.size, bool), np.zeros(n_impostor, bool)]
    scores = np.where(labels, rng.normal(0.6, 0.15, labels.size),
                      rng.normal(0.0, 0.12, labels.size))
    return scores, labels, probe // IMAGES


def _traced_peak_gb(fn, *args) -> float:
    """Peak of memory allocated (numpy included) while ``fn(*args)`` runs, by tracemalloc:
    unlike RSS it does not depend on what the allocator kept from earlier work."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1] / 2**30
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_bench_dense_10m_impostors_identity_bootstrap(benchmark) -> None:
    """Issue #15: 10M impostor pairs, 1,000 identity-bootstrap rounds (the dense task's report,
    no folds); peak memory allocated at 2.5M and 10M impostors (linear: ratio ~4); the per-pair
    weights it replaces, both timed on 20 rounds."""
    config, few = v.VerificationSettings(bootstrap=1000), v.VerificationSettings(bootstrap=20)
    peaks = {}
    for n in (2_500_000, 10_000_000):
        scores, labels, groups = _dense(n)
        peaks[n] = _traced_peak_gb(v.verification_report, scores, labels, None, few, groups)
    report = benchmark.pedantic(v.verification_report,
                                args=(scores, labels, None, config, groups), rounds=1,
                                iterations=1)
    seconds = benchmark.stats["median"]
    grouped_s, grouped = _seconds(lambda: v.verification_report(scores, labels, None, few,
                                                                groups))
    original = v._per_cluster_is_cheaper
    v._per_cluster_is_cheaper = lambda k, n: False  # the per-pair weights path
    try:
        per_pair_s, per_pair = _seconds(lambda: v.verification_report(scores, labels, None, few,
                                                                      groups))
    finally:
        v._per_cluster_is_cheaper = original
    assert per_pair == grouped
    benchmark.extra_info.update(
        impostor_pairs=10_000_000, genuine_pairs=int(labels.sum()), rounds=1000,
        seconds=seconds, peak_gb_2_5m=peaks[2_500_000], peak_gb_10m=peaks[10_000_000],
        memory_ratio_10m_over_2_5m=peaks[10_000_000] / peaks[2_500_000],
        bytes_per_pair_10m=peaks[10_000_000] * 2**30 / labels.size,
        report_20_rounds_per_cluster_s=grouped_s, report_20_rounds_per_pair_s=per_pair_s)
    assert report["tar_at_far"][3]["ci95"] is not None
