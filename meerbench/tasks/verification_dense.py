"""Dense verification: every genuine pair and all (or a seeded uniform sample of millions of)
impostor pairs per condition, scored by blocked matrix products on the embeddings, so TAR@FAR is
measured down to FAR = 1e-5; EER and AUC too, with identity-bootstrap intervals. No folds, so no
accuracy: the LFW-style ``verification`` task stays the comparable 10-fold one.

Result: ``metrics.verification_dense.<condition>`` and
``metrics.verification_dense_by_family.<condition>.<family>`` (as :mod:`.verification`); the
scores go to the side file ``files.dense_scores`` (a compressed npz, :func:`write_dense_scores`,
read back by :func:`read_dense_scores` for paired tests).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from meerbench.data.dataset import Dataset
from meerbench.errors import DatasetError
from meerbench.io import atomic_open
from meerbench.metrics.verification import VerificationSettings
from meerbench.protocol.sampling import (
    CONDITIONS,
    DenseVerificationTask,
    PairList,
    build_dense_pairs,
    condition_codes,
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
        used = np.zeros(len(dataset.samples), bool)  # a mark per image: O(pairs), no sort
        used[pairs.ref] = used[pairs.probe] = True
        return Plan(np.flatnonzero(used), pairs.sha256, pairs)

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


#: Arrays of a dense score file: per sample ``keys`` and ``identities``, the ``conditions``
#: names, then per pair ``ref``/``probe`` (rows of ``keys``), ``label``, ``condition`` (index
#: into ``conditions``) and ``score``.
DENSE_ARRAYS = ("keys", "identities", "conditions", "ref", "probe", "label", "condition", "score")


def write_dense_scores(path: Path, dataset: Dataset, conditions: tuple[str, ...],
                       pairs: PairList, scores: np.ndarray) -> str:
    """The dense pairs' scores as a compressed npz (:data:`DENSE_ARRAYS`; ints as int32 rows,
    uint8 labels and condition codes): the values every metric was computed from, as float32
    when that holds them exactly (scores of float32 embeddings), else float64. The sample
    identities let paired tests resample probe identities (:func:`read_dense_scores`)."""
    exact32 = np.array_equal(scores.astype(np.float32), scores)
    arrays = {
        "keys": np.array([s.key for s in dataset.samples]),
        "identities": np.array([s.identity for s in dataset.samples]),
        "conditions": np.array(conditions),
        "ref": pairs.ref.astype(np.int32), "probe": pairs.probe.astype(np.int32),
        "label": pairs.label.astype(np.uint8),
        "condition": condition_codes(pairs.condition, conditions),
        "score": scores.astype(np.float32) if exact32 else scores,
    }
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path.name


@dataclass(frozen=True)
class DenseScores:
    """A dense score file as read back: per pair ``ref``/``probe`` sample rows, ``label``
    (bool), ``condition`` (code into ``conditions``), ``score`` (float64), and per sample
    ``identities``."""

    conditions: tuple[str, ...]
    identities: np.ndarray
    ref: np.ndarray
    probe: np.ndarray
    label: np.ndarray
    condition: np.ndarray
    score: np.ndarray

    def of_condition(self, name: str) -> np.ndarray:
        """Mask of the pairs of condition ``name`` (none when the file lacks it)."""
        if name not in self.conditions:
            return np.zeros(self.score.size, bool)
        return self.condition == self.conditions.index(name)

    @cached_property
    def probe_identity(self) -> np.ndarray:
        """Each pair's probe identity as a code (the cluster of identity bootstraps)."""
        return np.unique(self.identities, return_inverse=True)[1].reshape(-1)[self.probe]

    def same_pairs(self, other: DenseScores) -> bool:
        """Whether both files hold the same pairs in the same order (what a paired test needs)."""
        return self.conditions == other.conditions and all(
            np.array_equal(x, y) for x, y in (
                (self.ref, other.ref), (self.probe, other.probe), (self.label, other.label),
                (self.condition, other.condition), (self.identities, other.identities)))


def read_dense_scores(path: Path) -> DenseScores:
    """A dense score file (:func:`write_dense_scores`), checked before use: no pickles, every
    array of :data:`DENSE_ARRAYS`, one length per pair array, rows and codes in range."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in DENSE_ARRAYS if k not in archive.files]
            if missing:
                raise ValueError(f"lacks array(s) {', '.join(missing)} (files written before "
                                 "'identities' was added: run the model again)")
            a = {k: archive[k] for k in DENSE_ARRAYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        raise DatasetError(f"{path}: not a dense score file: {exc}") from None
    n, samples = a["score"].shape, a["keys"].shape
    bad = [k for k in ("ref", "probe", "label", "condition") if a[k].shape != n]
    bad += ["identities"] * (a["identities"].shape != samples)
    if bad or a["score"].ndim != 1:
        raise DatasetError(f"{path}: array(s) {', '.join(bad) or 'score'} do not match: every "
                           f"pair array needs shape {n} and identities one per key {samples}")
    for k, top in (("ref", samples[0]), ("probe", samples[0]), ("condition", len(a["conditions"])),
                   ("label", 2)):
        if a[k].size and (a[k].min() < 0 or a[k].max() >= top):
            raise DatasetError(f"{path}: array {k!r} holds values outside [0, {top})")
    return DenseScores(tuple(str(c) for c in a["conditions"]), a["identities"], a["ref"],
                       a["probe"], a["label"].astype(bool), a["condition"],
                       a["score"].astype(np.float64))


VERIFICATION_DENSE = DenseVerification()
