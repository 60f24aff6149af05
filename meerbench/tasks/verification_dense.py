"""Dense verification: every genuine pair and all (or a seeded uniform sample of millions of)
impostor pairs per condition, scored by blocked matrix products on the embeddings, so TAR@FAR is
measured down to FAR = 1e-5; EER and AUC too, with identity-bootstrap intervals. No folds, so no
accuracy: the LFW-style ``verification`` task stays the comparable 10-fold one.

Result: ``metrics.verification_dense.<condition>`` and
``metrics.verification_dense_by_family.<condition>.<family>`` (as :mod:`.verification`); the
scores go to the side file ``files.dense_scores`` (a compressed npz, :func:`write_dense_scores`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meerbench.data.dataset import Dataset
from meerbench.io import atomic_open
from meerbench.metrics.verification import VerificationSettings
from meerbench.protocol.sampling import (
    CONDITIONS,
    DenseVerificationTask,
    PairList,
    build_dense_pairs,
)
from meerbench.schema import Fields
from meerbench.tasks import Context, ListFile, Outcome, Plan
from meerbench.tasks.verification import Verification, VerificationSection, score_pairs


class DenseVerification(Verification):
    """Dense 1:1: every genuine pair, all or millions of impostors: TAR@FAR to 1e-5, EER, AUC."""

    name = "verification_dense"
    headline = ("tar@", "eer", "auc")

    @property
    def title(self) -> str:
        return "Dense verification"

    def parse(self, fields: Fields) -> DenseVerificationTask:
        """``impostors``: impostor pairs per condition, a seeded uniform sample (leave it out
        for all of them)."""
        return DenseVerificationTask(
            seed=fields.seed("seed"),
            conditions=fields.unique_list("conditions", tuple(CONDITIONS), list(CONDITIONS)),
            impostors=fields.positive_int("impostors", None, maximum=MAX_IMPOSTORS))

    def summary(self, section: VerificationSection) -> list[str]:
        """The verification table (no accuracy column) under a line saying what it counts."""
        counts = sorted({e.values["n_impostor"] for e in section.conditions.values() if e.ok})
        what = f"{' / '.join(f'{n:,}' for n in counts)} impostor pairs" if counts else "skipped"
        return [f"{self.name}  every genuine pair, {what} per condition",
                *super().summary(section)]

    def plan(self, config: DenseVerificationTask, dataset: Dataset) -> Plan:
        pairs = build_dense_pairs(config, dataset)
        return Plan(np.unique(np.r_[pairs.ref, pairs.probe]), pairs.sha256, pairs)

    def list_file(self, plan: Plan, keys: list[str]) -> ListFile | None:
        """None: millions of pairs are no CSV; the protocol, seed and sha256 reproduce them."""
        return None

    def scores(self, pairs: PairList, ctx: Context) -> np.ndarray:
        """Blocked matrix-product scores (:func:`meerbench.metrics.dense.pair_scores`), once per
        evaluation."""
        from meerbench.metrics.dense import pair_scores

        return ctx.derived((self.name, pairs.sha256), lambda: pair_scores(
            ctx.embeddings, ctx.row[pairs.ref], ctx.row[pairs.probe]))

    def run(self, config: DenseVerificationTask, plan: Plan, ctx: Context) -> Outcome:
        pairs: PairList = plan.lists
        scores = self.scores(pairs, ctx)
        settings = VerificationSettings.from_dict(ctx.protocol.metrics[self.name])
        section = score_pairs(config.conditions, settings, ctx.dataset, pairs, scores,
                              folds=False)
        counts = {"dense_pairs": {c: int((pairs.condition == c).sum())
                                  for c in config.conditions}}
        path = ctx.side_file("dense-scores.npz")
        files = {} if path is None else {"dense_scores": write_dense_scores(
            path, ctx.dataset, config.conditions, pairs, scores)}
        return Outcome(section, counts, files)


#: Most impostor pairs per condition a protocol may ask for (about 17 bytes each in memory).
MAX_IMPOSTORS = 100_000_000


def write_dense_scores(path: Path, dataset: Dataset, conditions: tuple[str, ...],
                       pairs: PairList, scores: np.ndarray) -> str:
    """The dense pairs' scores as a compressed npz: ``keys`` (sample keys), ``conditions``, and
    per pair ``ref``/``probe`` (int32 rows of ``keys``), ``label`` (uint8), ``condition``
    (uint8 index) and ``score``: the values every metric was computed from, as float32 when
    that holds them exactly (scores of float32 embeddings), else float64."""
    exact32 = np.array_equal(scores.astype(np.float32), scores)
    arrays = {
        "keys": np.array([s.key for s in dataset.samples]),
        "conditions": np.array(conditions),
        "ref": pairs.ref.astype(np.int32), "probe": pairs.probe.astype(np.int32),
        "label": pairs.label.astype(np.uint8),
        "condition": _condition_codes(pairs.condition, conditions),
        "score": scores.astype(np.float32) if exact32 else scores,
    }
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path.name


def _condition_codes(names: np.ndarray, conditions: tuple[str, ...]) -> np.ndarray:
    """Index in ``conditions`` of each pair's condition name."""
    codes = np.zeros(len(names), np.uint8)
    for i, cond in enumerate(conditions):
        codes[names == cond] = i
    return codes


VERIFICATION_DENSE = DenseVerification()
