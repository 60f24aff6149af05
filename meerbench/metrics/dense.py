"""Dense verification scoring: millions of pairs scored from index arrays by blocked matrix
products, never one Python object (or one gathered embedding row) per pair."""

from __future__ import annotations

import numpy as np

from meerbench.metrics.errors import MetricInputError

#: Reference rows per matrix product: a block of scores is ``BLOCK x probes`` float32.
BLOCK = 1024


def pair_scores(embeddings: np.ndarray, ref: np.ndarray, probe: np.ndarray,
                block: int = BLOCK) -> np.ndarray:
    """Score ``embeddings[ref[i]] . embeddings[probe[i]]`` of every pair i, as float64.

    The distinct references are taken ``block`` at a time and multiplied with every distinct
    probe in one matrix product, from which the block's pairs are picked: the cost is one
    product of (references x probes x width), whatever the number of pairs, and memory is one
    block of scores. Values equal the per-pair dot products up to float32 rounding of the sum.
    """
    emb = np.asarray(embeddings)
    ref, probe = np.asarray(ref, np.int64), np.asarray(probe, np.int64)
    if emb.ndim != 2 or ref.shape != probe.shape or ref.ndim != 1:
        raise MetricInputError(f"embeddings must be (n, width) and ref/probe one index per pair, "
                               f"got {emb.shape}, {ref.shape} and {probe.shape}")
    if ref.size and (min(ref.min(), probe.min()) < 0
                     or max(ref.max(), probe.max()) >= len(emb)):
        raise MetricInputError(f"pair indices must lie in [0, {len(emb)})")
    refs, a = np.unique(ref, return_inverse=True)
    probes, b = np.unique(probe, return_inverse=True)
    order = np.argsort(a, kind="stable")
    bounds = np.searchsorted(a[order], np.arange(0, len(refs) + block, block))
    targets = emb[probes].T
    out = np.empty(ref.size, np.float64)
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if lo == hi:
            continue
        start = k * block
        scores = emb[refs[start:start + block]] @ targets
        picked = order[lo:hi]
        out[picked] = scores[a[picked] - start, b[picked]]
    return out
