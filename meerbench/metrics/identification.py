"""Identification (1:N) metrics: chunked top-k, CMC / rank-k, mAP and open-set DIR@FPIR.

Embeddings are assumed L2-normalised, so the dot product is the cosine similarity. Probes whose
identity is absent from the gallery are non-mated (open set). Ties count pessimistically, as in
bob.measure: a non-mate scoring exactly the best mate's score ranks ahead of it. Similarities are
computed per probe block x gallery block, so memory stays bounded (about
``probe_block x gallery_block x 10`` bytes) and the full probe x gallery matrix never exists.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from meerbench.metrics.errors import (
    MetricInputError,
    check_choice,
    reject_unknown_keys,
)
from meerbench.metrics.stats import bootstrap_samples, interval_json, percentile_interval
from meerbench.metrics.sync import gather_updates
from meerbench.metrics.verification import check_distinct, check_far_targets, check_sampling

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "float16", "bfloat16")


# ----------------------------------------------------------------------------- similarity blocks


def topk_similarity(
    probes: ArrayLike,
    gallery: ArrayLike,
    k: int,
    *,
    probe_block: int = 4096,
    gallery_block: int = 65536,
    dtype: str = "float32",
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar gallery items per probe: scores (P, k) float32, indices (P, k) int64.

    Cosine similarity of L2-normalised inputs (not checked) via torch matmul in ``dtype``, with a
    running top-k merged across gallery blocks. Order is by score, ties by lower gallery index, so
    the result does not depend on the block sizes. ``k`` is capped at the gallery size.
    """
    p, g = _embeddings(probes, gallery)
    if k < 1:
        raise MetricInputError(f"k must be >= 1, got {k}")
    k = min(k, g.shape[0])
    scores = np.empty((p.shape[0], k), dtype=np.float32)
    indices = np.empty((p.shape[0], k), dtype=np.int64)
    best: tuple[torch.Tensor, torch.Tensor] | None = None
    for p0, g0, sim in _blocks(p, g, probe_block, gallery_block, dtype, device):
        values, index = _block_topk(sim, min(k, sim.shape[1]))
        index += g0
        if g0 > 0:
            values, index = _merge(*best, values, index, k)
        best = values, index
        if g0 + sim.shape[1] == g.shape[0]:
            scores[p0:p0 + sim.shape[0]] = values.cpu().numpy()
            indices[p0:p0 + sim.shape[0]] = index.cpu().numpy()
    return scores, indices


def _block_topk(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row, ties resolved to the lower column (torch.topk leaves that open)."""
    import torch

    values, index = torch.topk(sim, min(k + 1, sim.shape[1]), dim=1)
    if values.shape[1] > k:
        # A tie straddles the k-th place when the (k+1)-th value equals the k-th one: those rows
        # take the lowest columns among the tied values from a stable sort.
        ambiguous = torch.nonzero(values[:, k] == values[:, k - 1]).flatten()
        values, index = values[:, :k], index[:, :k]
        if ambiguous.numel():
            order = torch.sort(sim[ambiguous], dim=1, descending=True, stable=True).indices
            index[ambiguous] = order[:, :k]
            values[ambiguous] = sim[ambiguous].gather(1, order[:, :k])
    index, perm = index.sort(dim=1)
    values = values.gather(1, perm)
    values, perm = values.sort(dim=1, descending=True, stable=True)
    return values, index.gather(1, perm)


def _merge(values_a: torch.Tensor, index_a: torch.Tensor, values_b: torch.Tensor,
           index_b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of two sorted candidate lists; a's indices are all lower, so a stable sort keeps ties
    in index order."""
    import torch

    values = torch.cat([values_a, values_b], dim=1)
    index = torch.cat([index_a, index_b], dim=1)
    values, perm = values.sort(dim=1, descending=True, stable=True)
    return values[:, :k], index.gather(1, perm[:, :k])


def _blocks(probes: np.ndarray, gallery: np.ndarray, probe_block: int, gallery_block: int,
            dtype: str, device: str) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(probe offset, gallery offset, float32 similarity block), probe blocks outermost."""
    import torch

    check_choice("dtype", dtype, DTYPES)
    if probe_block < 1 or gallery_block < 1:
        raise MetricInputError(f"block sizes must be >= 1, got probe_block={probe_block}, "
                               f"gallery_block={gallery_block}")
    tdtype = getattr(torch, dtype)
    g = torch.from_numpy(gallery).to(device=device, dtype=tdtype)
    for p0 in range(0, probes.shape[0], probe_block):
        p = torch.from_numpy(probes[p0:p0 + probe_block]).to(device=device, dtype=tdtype)
        for g0 in range(0, g.shape[0], gallery_block):
            yield p0, g0, (p @ g[g0:g0 + gallery_block].T).float()


def _embeddings(probes: ArrayLike, gallery: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, x in (("probe", probes), ("gallery", gallery)):
        a = np.ascontiguousarray(x, dtype=np.float32)
        if a.ndim != 2 or a.shape[0] == 0:
            raise MetricInputError(f"{name} embeddings must be a non-empty 2-D array (n, dim), "
                                   f"got shape {a.shape}")
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        if bad.size:
            raise MetricInputError(f"{bad.size} {name} embedding(s) contain NaN or inf, "
                                   f"first at row {bad[0]}")
        arrays.append(a)
    if arrays[0].shape[1] != arrays[1].shape[1]:
        raise MetricInputError(f"probe and gallery embeddings differ in dimension: "
                               f"{arrays[0].shape[1]} vs {arrays[1].shape[1]}")
    return arrays[0], arrays[1]


# ----------------------------------------------------------------------------- per-probe outcomes


@dataclass(frozen=True, eq=False)
class ProbeOutcomes:
    """What CMC, mAP and DIR@FPIR need from each probe.

    ``best_mate``, ``rank`` and ``average_precision`` hold one entry per mated probe; ``rank`` is
    1 + the number of non-mates scoring >= the best mate (pessimistic ties). ``nonmated_max`` holds
    the highest score of each non-mated probe.
    """

    best_mate: np.ndarray
    rank: np.ndarray
    average_precision: np.ndarray
    nonmated_max: np.ndarray


def outcomes_from_scores(
    mates: Sequence[ArrayLike | None], nonmates: Sequence[ArrayLike]
) -> ProbeOutcomes:
    """Outcomes from per-probe score lists (bob's CMC format); ``mates[i]`` None = non-mated."""
    if len(mates) != len(nonmates):
        raise MetricInputError(f"{len(mates)} mate lists but {len(nonmates)} non-mate lists")
    best, ranks, precisions, nonmated = [], [], [], []
    for i, (m, n) in enumerate(zip(mates, nonmates, strict=True)):
        neg = np.asarray(n, dtype=np.float64).reshape(-1)
        if m is None or np.size(m) == 0:
            if neg.size == 0:
                raise MetricInputError(f"probe {i} has neither mate nor non-mate scores")
            nonmated.append(neg.max())
            continue
        pos = np.sort(np.asarray(m, dtype=np.float64).reshape(-1))[::-1]
        ahead = (neg[None, :] >= pos[:, None]).sum(axis=1)
        position = np.arange(1, pos.size + 1)
        best.append(pos[0])
        ranks.append(1 + ahead[0])
        precisions.append(np.mean(position / (position + ahead)))
    return ProbeOutcomes(np.asarray(best), np.asarray(ranks, dtype=np.int64),
                         np.asarray(precisions), np.asarray(nonmated))


def cmc(rank: ArrayLike, max_rank: int) -> np.ndarray:
    """Cumulative match characteristic: share of mated probes with rank <= r, r = 1..max_rank."""
    r = np.asarray(rank, dtype=np.int64)
    return np.array([np.count_nonzero(r <= k) / r.size for k in range(1, max_rank + 1)])


def detection_identification_rate(best_mate: ArrayLike, rank: ArrayLike, threshold: float,
                                  max_rank: int = 1) -> float:
    """Share of mated probes whose best mate scores >= threshold at rank <= max_rank (bob/NIST)."""
    best, r = np.asarray(best_mate), np.asarray(rank)
    return float(np.mean((best >= threshold) & (r <= max_rank)))


def false_alarm_rate(nonmated_max: ArrayLike, threshold: float) -> float:
    """FPIR: share of non-mated probes whose highest score is >= threshold (bob/NIST)."""
    return float(np.mean(np.asarray(nonmated_max) >= threshold))


class FpirThresholds:
    """Thresholds on non-mated maxima at FPIR targets (bob ``far_threshold``), for any weights.

    The threshold is the lowest non-mated maximum whose acceptance (score >= it) keeps FPIR <=
    target; when even the highest one breaks the target, the next float above it (FPIR 0).
    """

    def __init__(self, nonmated_max: np.ndarray) -> None:
        self._order = np.argsort(-nonmated_max)
        ordered = nonmated_max[self._order]
        self._starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self._values = ordered[self._starts]

    def __call__(self, targets: Sequence[float],
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(thresholds, achieved FPIRs); ``weights`` is each non-mated probe's multiplicity."""
        w = np.ones(self._order.size) if weights is None else weights[self._order]
        counts = np.add.reduceat(w.astype(np.float64), self._starts)
        present = counts > 0
        values, fpir = self._values[present], np.cumsum(counts[present])
        fpir /= fpir[-1]
        allowed = np.searchsorted(fpir, targets, side="right")
        above_all = np.nextafter(values[0], np.inf)
        chosen = np.maximum(allowed - 1, 0)
        return (np.where(allowed > 0, values[chosen], above_all),
                np.where(allowed > 0, fpir[chosen], 0.0))


@dataclass(frozen=True)
class DirAtFpir:
    """Rank-1 DIR at one FPIR target; ``reliable`` is False when target x n_nonmated < 1."""

    fpir_target: float
    fpir: float
    dir: float
    threshold: float
    n_nonmated: int
    reliable: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dir_at_fpir(outcomes: ProbeOutcomes, targets: Sequence[float]) -> list[DirAtFpir]:
    """Open-set DIR (rank 1) at each FPIR target, thresholds from the non-mated maxima."""
    targets = check_far_targets(targets)
    n = outcomes.nonmated_max.size
    if n == 0:
        return []
    thresholds, fpirs = FpirThresholds(outcomes.nonmated_max)(targets)
    return [
        DirAtFpir(target, float(fpir), detection_identification_rate(
            outcomes.best_mate, outcomes.rank, threshold), float(threshold), n, target * n >= 1)
        for target, threshold, fpir in zip(targets, thresholds, fpirs, strict=True)
    ]


# ----------------------------------------------------------------------------- report


#: Caps on the settings that size work and memory: far above real use, far below exhaustion.
MAX_RANK = 10_000
MAX_BLOCK = 2**28


@dataclass(frozen=True)
class IdentificationSettings:
    """Ranks, FPIR targets, bootstrap and compute options (protocol ``metrics.identification``)."""

    ranks: tuple[int, ...] = (1, 5, 10)
    fpir_targets: tuple[float, ...] = (1e-1, 1e-2)
    max_rank: int = 20
    bootstrap: int = 1000
    seed: int = 0
    dtype: str = "float32"
    probe_block: int = 1024  # 1024 x 2048 float32 blocks (8 MiB) stay in a CPU's L3 cache
    gallery_block: int = 2048
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranks", tuple(int(r) for r in self.ranks))
        object.__setattr__(self, "fpir_targets", check_far_targets(self.fpir_targets))
        if not all(1 <= r <= MAX_RANK for r in (*self.ranks, self.max_rank)):
            raise MetricInputError(f"ranks and max_rank must be >= 1 and at most {MAX_RANK:,}, got "
                                   f"ranks={self.ranks}, max_rank={self.max_rank}")
        check_distinct("ranks", self.ranks)
        check_distinct("fpir_targets", self.fpir_targets)
        if not (0 < self.probe_block and 0 < self.gallery_block
                and self.probe_block * self.gallery_block <= MAX_BLOCK):
            raise MetricInputError(
                f"probe_block x gallery_block must be from 1 to {MAX_BLOCK:,} scores (1 GiB of "
                f"float32), got {self.probe_block:,} x {self.gallery_block:,}")
        check_choice("dtype", self.dtype, DTYPES)
        check_sampling(self.bootstrap, self.seed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdentificationSettings:
        reject_unknown_keys("identification", data, [f.name for f in fields(cls)])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ranks": list(self.ranks), "fpir_targets": list(self.fpir_targets)}


def identification_report(
    probe_emb: ArrayLike,
    probe_ids: ArrayLike,
    gallery_emb: ArrayLike,
    gallery_ids: ArrayLike,
    settings: IdentificationSettings | None = None,
) -> dict[str, Any]:
    """Closed-set CMC / rank-k and mAP over mated probes, open-set DIR@FPIR, as a JSON-ready dict.

    Ranks are exact, not read off a top-k list: one pass over the similarity blocks counts, per
    mate, the non-mates scoring >= it, with ties judged on the bit-identical block values (see
    ``_outcomes``). The best mate counts when an identity has several gallery items; mAP
    averages, per mated probe, the pessimistic precision at each mate. Intervals (95%, seeded)
    resample probe identities.
    """
    settings = settings or IdentificationSettings()
    probes, gallery = _embeddings(probe_emb, gallery_emb)
    p_ids, g_ids = np.asarray(probe_ids), np.asarray(gallery_ids)
    if p_ids.shape != (probes.shape[0],) or g_ids.shape != (gallery.shape[0],):
        raise MetricInputError(
            f"need one identity per embedding: {probes.shape[0]} probes with {p_ids.shape} ids, "
            f"{gallery.shape[0]} gallery items with {g_ids.shape} ids"
        )
    outcomes, mated = _outcomes(probes, p_ids, gallery, g_ids, settings)
    dirs = dir_at_fpir(outcomes, settings.fpir_targets)
    intervals: list[list[float] | None] = [None] * (1 + len(dirs))
    if settings.bootstrap:
        samples = _bootstrap(outcomes, mated, p_ids, [d.fpir_target for d in dirs], settings)
        intervals = [interval_json(row) for row in percentile_interval(samples)]
    curve = cmc(outcomes.rank, settings.max_rank)
    return {
        "n_probes_mated": int(outcomes.rank.size),
        "n_probes_nonmated": int(outcomes.nonmated_max.size),
        "n_gallery": int(gallery.shape[0]),
        "n_gallery_identities": int(np.unique(g_ids).size),
        "rank": {str(r): float(np.mean(outcomes.rank <= r)) for r in settings.ranks},
        "cmc": curve.tolist(),
        "map": float(outcomes.average_precision.mean()),
        "dir_at_fpir": [d.to_dict() for d in dirs],
        "tie_rule": "pessimistic",
        "dtype": settings.dtype,
        "ci95": {"rank1": intervals[0], "dir_at_fpir": intervals[1:]},
    }


def _outcomes(probes: np.ndarray, probe_ids: np.ndarray, gallery: np.ndarray,
              gallery_ids: np.ndarray, settings: IdentificationSettings
              ) -> tuple[ProbeOutcomes, np.ndarray]:
    """Exact pessimistic outcomes from one chunked pass, and the mated-probe mask.

    Each mate's score is first estimated in float64 from the same (dtype-rounded) inputs, with a
    band that the blocked matmul's value lands in (``_mate_bands``). In the pass,
    gallery items clearly above the band are counted, items inside it are kept with their block
    values, and each mate's own block value is read out; ties are then judged on bit-identical
    block values. A mate whose block value falls outside its band (an unusually inexact BLAS) is
    recounted exactly in a second pass over its probe only.
    """
    import torch

    _, codes = np.unique(np.concatenate([probe_ids, gallery_ids]), return_inverse=True)
    p_code, g_code = codes[:probe_ids.size], codes[probe_ids.size:]
    mated = np.isin(p_code, g_code)
    if not mated.any():
        raise MetricInputError("no probe identity appears in the gallery: nothing to identify")
    mate_cols = _mate_columns(p_code[mated], g_code)
    lo, hi = _mate_bands(probes[mated], gallery, mate_cols, settings.dtype)
    order = np.r_[np.flatnonzero(mated), np.flatnonzero(~mated)]  # mated probes first
    n_mated, width = mate_cols.shape
    dev = settings.device
    lo_t, hi_t = (torch.from_numpy(a).to(dev) for a in (lo, hi))
    cols_t = torch.from_numpy(mate_cols).to(dev)
    above = torch.zeros((n_mated, width), dtype=torch.int64, device=dev)
    exact = torch.full((n_mated, width), torch.inf, device=dev)
    band: list[tuple[torch.Tensor, torch.Tensor]] = []  # (flat mate index, block value)
    nonmated_max = torch.full((probes.shape[0] - n_mated,), -torch.inf, device=dev)
    scratch = torch.empty(min(settings.probe_block, n_mated)
                          * min(settings.gallery_block, gallery.shape[0]), device=dev)
    for p0, g0, sim in _blocks(probes[order], gallery, settings.probe_block,
                               settings.gallery_block, settings.dtype, dev):
        m = min(sim.shape[0], max(n_mated - p0, 0))  # rows of mated probes in this block
        if m:
            rows, s = slice(p0, p0 + m), sim[:m]
            work = scratch[:s.numel()].view(s.shape)
            for j in range(width):
                low, high = lo_t[rows, j, None], hi_t[rows, j, None]
                n_above = _count(work.copy_(s).gt_(high))
                in_band = torch.nonzero(_count(work.copy_(s).ge_(low)) > n_above).flatten()
                above[rows, j] += n_above
                if in_band.numel():
                    sub = s[in_band]
                    r, c = torch.nonzero((sub >= low[in_band]) & (sub <= high[in_band]),
                                         as_tuple=True)
                    band.append(((in_band[r] + p0) * width + j, sub[r, c]))
            local = cols_t[rows] - g0
            r, j = torch.nonzero((local >= 0) & (local < sim.shape[1]), as_tuple=True)
            exact[r + p0, j] = s[r, local[r, j]]
        if m < sim.shape[0]:
            block = slice(p0 + m - n_mated, p0 + sim.shape[0] - n_mated)
            nonmated_max[block] = torch.maximum(nonmated_max[block], sim[m:].amax(dim=1))
    exact_np = exact.cpu().numpy()
    at_or_above = above.cpu().numpy()
    index = torch.cat([b[0] for b in band] or [torch.zeros(0, dtype=torch.int64)]).cpu().numpy()
    values = torch.cat([b[1] for b in band] or [torch.zeros(0)]).cpu().numpy()
    np.add.at(at_or_above.reshape(-1), index, values >= exact_np.reshape(-1)[index])
    outside = np.isfinite(exact_np) & ((exact_np < lo) | (exact_np > hi))
    redo = np.flatnonzero(outside.any(axis=1))
    if redo.size:
        exact_np[redo], at_or_above[redo] = _recount(probes[order[redo]], gallery,
                                                     mate_cols[redo], settings)
    return _from_mate_counts(exact_np, at_or_above, nonmated_max.cpu().numpy()), mated


def _count(flags: torch.Tensor) -> torch.Tensor:
    """Per-row count of a 0/1 float block (an in-place comparison): float sums are exact here
    (rows are far shorter than 2**24) and much faster than summing a bool tensor."""
    import torch

    return flags.sum(dim=1).to(torch.int64)


def _mate_columns(mated_codes: np.ndarray, gallery_codes: np.ndarray) -> np.ndarray:
    """Gallery columns of each mated probe's mates, (n_mated, most mates), -1 padded."""
    by_code = np.argsort(gallery_codes, kind="stable")
    sorted_codes = gallery_codes[by_code]
    start = np.searchsorted(sorted_codes, mated_codes, side="left")
    count = np.searchsorted(sorted_codes, mated_codes, side="right") - start
    offset = np.arange(count.max())
    take = np.minimum(start[:, None] + offset[None, :], by_code.size - 1)
    return np.where(offset[None, :] < count[:, None], by_code[take], -1)


# Unit roundoff of the accumulation (float32 on every backend torch uses) and of the output.
_ACCUMULATE_U = 2.0**-24
_OUTPUT_U = {"float32": 0.0, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def _mate_bands(probes: np.ndarray, gallery: np.ndarray, mate_cols: np.ndarray,
                dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi] per mate that should contain its blocked-matmul score: the float64 dot product of
    the dtype-rounded inputs +- twice the usual floating-point error of a length-d sum
    (sqrt(d) u sum|p_i g_i|, about 17x the largest error measured for float32 matmul at d = 512;
    the worst-case d u bound would widen the band 11x), plus the output rounding. A score outside
    costs a recount, never a wrong rank. Padding gets +inf, so nothing counts for it."""
    import torch

    def rounded(x: np.ndarray) -> np.ndarray:
        return torch.from_numpy(x).to(getattr(torch, dtype)).double().numpy()

    lo = np.full(mate_cols.shape, np.inf)
    hi = np.full(mate_cols.shape, np.inf)
    dim = probes.shape[1]
    for j in range(mate_cols.shape[1]):
        has = np.flatnonzero(mate_cols[:, j] >= 0)
        for start in range(0, has.size, 8192):  # bounded float64 temporaries
            rows = has[start:start + 8192]
            products = rounded(probes[rows]) * rounded(gallery[mate_cols[rows, j]])
            dot = products.sum(axis=1)
            err = np.sqrt(dim) * _ACCUMULATE_U * np.abs(products).sum(axis=1)
            err = 2 * (err + _OUTPUT_U[dtype] * (np.abs(dot) + err)) + np.finfo(np.float32).tiny
            lo[rows, j], hi[rows, j] = dot - err, dot + err
    # Widen to float32 so the pass compares block values without a float64 temporary.
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    lo32 = np.where(lo32 > lo, np.nextafter(lo32, np.float32(-np.inf)), lo32)
    hi32 = np.where(hi32 < hi, np.nextafter(hi32, np.float32(np.inf)), hi32)
    return lo32, hi32


def _recount(probes: np.ndarray, gallery: np.ndarray, mate_cols: np.ndarray,
             settings: IdentificationSettings) -> tuple[np.ndarray, np.ndarray]:
    """Mate scores and, per mate, the gallery items scoring >= it, for a few probes: two passes
    over identical blocks of just these probes (a BLAS may round a smaller block differently
    from the main pass, so both the scores and the counts come from these blocks)."""
    import torch

    dev = settings.device
    cols = torch.from_numpy(mate_cols).to(dev)
    exact = torch.full(mate_cols.shape, torch.inf, device=dev)
    counts = torch.zeros(mate_cols.shape, dtype=torch.int64, device=dev)

    def blocks() -> Iterator[tuple[int, int, torch.Tensor]]:
        return _blocks(probes, gallery, settings.probe_block, settings.gallery_block,
                       settings.dtype, dev)

    for p0, g0, sim in blocks():
        local = cols[p0:p0 + sim.shape[0]] - g0
        r, j = torch.nonzero((local >= 0) & (local < sim.shape[1]), as_tuple=True)
        exact[r + p0, j] = sim[r, local[r, j]]
    for p0, _, sim in blocks():
        rows = slice(p0, p0 + sim.shape[0])
        for j in range(mate_cols.shape[1]):
            counts[rows, j] += (sim >= exact[rows, j, None]).sum(dim=1)
    return exact.cpu().numpy(), counts.cpu().numpy()


def _from_mate_counts(mate_scores: np.ndarray, at_or_above: np.ndarray,
                      nonmated_max: np.ndarray) -> ProbeOutcomes:
    """Outcomes from each mate's score (+inf padded) and its count of gallery items >= it."""
    key = np.where(np.isfinite(mate_scores), -mate_scores, np.inf)
    order = np.argsort(key, axis=1, kind="stable")  # best mate first, +inf padding last
    mates = np.take_along_axis(mate_scores, order, axis=1)
    counts = np.take_along_axis(at_or_above, order, axis=1)
    valid = np.isfinite(mates)
    column = np.arange(mates.shape[1])
    run_end = np.where(np.c_[mates[:, 1:] != mates[:, :-1], np.ones(len(mates), bool)],
                       column, mates.shape[1])
    mates_at_or_above = 1 + np.minimum.accumulate(run_end[:, ::-1], axis=1)[:, ::-1]
    ahead = counts - mates_at_or_above
    position = column + 1
    precision = np.divide(position, position + ahead, out=np.zeros(mates.shape),
                          where=valid).sum(axis=1)
    return ProbeOutcomes(best_mate=mates[:, 0].astype(np.float64), rank=1 + ahead[:, 0],
                         average_precision=precision / valid.sum(axis=1),
                         nonmated_max=nonmated_max.astype(np.float64))


def _bootstrap(outcomes: ProbeOutcomes, mated: np.ndarray, probe_ids: np.ndarray,
               targets: list[float], settings: IdentificationSettings) -> np.ndarray:
    """Resampled [rank-1, DIR per target] over probe identities (NaN where undefined)."""
    first = (outcomes.rank == 1).astype(np.float64)
    thresholds = FpirThresholds(outcomes.nonmated_max) if targets else None

    def statistic(weights: np.ndarray) -> np.ndarray:
        w_mated, w_nonmated = weights[mated], weights[~mated]
        total = w_mated.sum()
        values = np.full(1 + len(targets), np.nan)
        if total:
            values[0] = w_mated @ first / total
        if total and targets and w_nonmated.any():
            limits = thresholds(targets, w_nonmated)[0]
            detected = first[:, None] * (outcomes.best_mate[:, None] >= limits[None, :])
            values[1:] = w_mated @ detected / total
        return values

    return bootstrap_samples(statistic, mated.size, probe_ids, settings.bootstrap, settings.seed)


class IdentificationState:
    """Accumulates probe embeddings and identities over ``update`` calls (e.g. per batch or per
    rank's shard); ``compute`` against a gallery equals ``identification_report`` in one shot.
    Under ``torch.distributed`` every rank's probes are gathered (rank order) first."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, probe_emb: ArrayLike, probe_ids: ArrayLike) -> None:
        emb, ids = np.asarray(probe_emb), np.asarray(probe_ids)
        if emb.ndim != 2 or len(emb) != len(ids):
            raise MetricInputError(
                f"probe embeddings must be (n, d) with one identity each; got {emb.shape} and "
                f"{len(ids)} identities")
        self._parts.append((emb, ids))

    def compute(self, gallery_emb: ArrayLike, gallery_ids: ArrayLike,
                settings: IdentificationSettings | None = None) -> dict[str, Any]:
        parts = gather_updates(self._parts)
        if not parts:
            raise MetricInputError("no probes given: update() was never called")
        return identification_report(np.concatenate([p[0] for p in parts]),
                                     np.concatenate([p[1] for p in parts]),
                                     gallery_emb, gallery_ids, settings)
