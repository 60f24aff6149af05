"""Paired tests of one model against another from their per-pair score files.

Verification (``files.scores``): accuracy by McNemar on per-pair decisions, each model at its own
k-fold thresholds (recomputed from the score file under the Result's rule); TAR@FAR by a paired
bootstrap of the TAR difference, resampling probe identities. Dense verification
(``files.dense_scores``): TAR@FAR the same way on the dense pairs. Operational: FNMR per condition
by a paired identity bootstrap, each model at its own threshold set again on every resample
(:func:`meerbench.metrics.operational.paired_bootstrap_fnmr_difference`; one run gives every
condition and target, kept per pair of files). Other metrics have no paired test here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from meerbench.metrics.errors import MetricInputError
from meerbench.metrics.operational import paired_bootstrap_fnmr_difference
from meerbench.metrics.scorefiles import ScoreTable
from meerbench.metrics.stats import mcnemar
from meerbench.metrics.verification import kfold_accuracy, paired_bootstrap_tar_difference
from meerbench.report.grid import Column, Run, load_dense_scores
from meerbench.tasks.operational import OPERATIONAL
from meerbench.tasks.verification import VERIFICATION
from meerbench.tasks.verification_dense import VERIFICATION_DENSE


@dataclass(frozen=True)
class PairedTest:
    """Model minus reference on the same pairs; ``ci95`` only for the bootstrap."""

    test: str
    p_value: float
    difference: float
    ci95: list[float] | None = None

    @property
    def marker(self) -> str:
        return "**" if self.p_value < 0.01 else "*" if self.p_value < 0.05 else ""


#: Why a metric has no paired test (see the module docstring for those that have one).
NO_TEST = "no paired test for this metric"


def has_test(column: Column) -> bool:
    key, task = column.metric.key, column.metric.task
    if task == VERIFICATION.name:
        return key == "acc" or key.startswith("tar@")
    if task == VERIFICATION_DENSE.name:
        return key.startswith("tar@")
    return task == OPERATIONAL.name and key.startswith("fnmr@") and "/" not in column.condition


def missing_score_file(run: Run) -> str | None:
    """Why ``run`` lacks per-pair scores for paired tests (naming the files the Result expects),
    or None when its score files are there. Readers print this next to their table: a p-value
    column of dashes must never pass silently for "not significant"."""
    files, metrics = run.result["files"], run.result["metrics"]
    notes = []
    for role, task in (("scores", VERIFICATION.name), ("dense_scores", VERIFICATION_DENSE.name)):
        name = files.get(role)
        if name is None and task in metrics:
            notes.append(f"{run.path} names no score file (files.{role})")
        elif name is not None and run.file(role) is None:
            notes.append(f"{run.path}: score file {name} (files.{role}) is missing from the "
                         "Result's folder")
    return "; ".join(notes) or None


def paired_test(run: Run, reference: Run, column: Column, rounds: int = 1000,
                seed: int = 0) -> PairedTest | str:
    """The test of ``run`` against ``reference`` on ``column``, or why there is none."""
    if not has_test(column):
        return NO_TEST
    task = column.metric.task
    lists = [r.result["protocol"].get("lists", {}).get(task) for r in (run, reference)]
    if run.protocol != reference.protocol or lists[0] != lists[1]:
        return "different pair lists"
    try:
        if task == VERIFICATION.name:
            return _verification_test(run, reference, column, rounds, seed)
        return _dense_test(run, reference, column, rounds, seed)
    except MetricInputError as exc:
        return str(exc)


def _verification_test(run: Run, reference: Run, column: Column, rounds: int,
                       seed: int) -> PairedTest | str:
    """McNemar for accuracy, paired bootstrap for TAR@FAR, on one condition's 10-fold pairs."""
    tables = [run.scores(), reference.scores()]
    if tables[0] is None or tables[1] is None:
        return "no score file"  # missing_score_file says which, for a note by the table
    a, b = (None if t.folds is None else t.of_condition(column.condition) for t in tables)
    if a is None or b is None or not _same_pairs(a, b):
        return "score files hold different pairs"
    if a.labels.all() or not a.labels.any():
        return "needs genuine and impostor pairs"
    key = column.metric.key
    section = VERIFICATION.read(run.result["metrics"])
    if key == "acc":
        rule = section.accuracy_rule(column.condition)
        accs = [kfold_accuracy(t.scores, t.labels, t.folds, rule) for t in (a, b)]
        test = mcnemar(*(acc.accepts(t.scores, t.folds) == t.labels
                         for acc, t in zip(accs, (a, b), strict=True)))
        exact = " (exact)" if test["exact"] else ""
        return PairedTest(f"McNemar{exact}", float(test["p_value"]), accs[0].mean - accs[1].mean)
    tar = section.tar(column.condition, key)
    groups = None if a.probe_ids is None else np.unique(a.probe_ids, return_inverse=True)[1]
    return _tar_test(a.scores, b.scores, a.labels, tar, groups, rounds, seed)


def _dense_test(run: Run, reference: Run, column: Column, rounds: int,
                seed: int) -> PairedTest | str:
    """Dense TAR@FAR or operational FNMR on the dense score files of both Results."""
    paths = run.file("dense_scores"), reference.file("dense_scores")
    if paths[0] is None or paths[1] is None:
        return "no dense score file"  # missing_score_file says which
    if not _same_dense_pairs(*paths):
        return "dense score files hold different pairs"
    a = load_dense_scores(paths[0])
    task, key, condition = column.metric.task, column.metric.key, column.condition
    if task == VERIFICATION_DENSE.name:
        sel = a.of_condition(condition)
        if a.label[sel].all() or not a.label[sel].any():
            return "needs genuine and impostor pairs"
        tar = VERIFICATION_DENSE.read(run.result["metrics"]).tar(condition, key)
        b = load_dense_scores(paths[1])
        return _tar_test(a.score[sel], b.score[sel], a.label[sel], tar,
                         a.probe_identity[sel], rounds, seed)
    settings = run.result["metrics"][OPERATIONAL.name]  # the report's own targets and seed
    targets = tuple(float(p["target"]) for p in settings["operating_points"])
    found = _fnmr_tests(*paths, targets, rounds, seed)
    target = float(key.split("@")[1])
    for entry in found:
        if entry["condition"] == condition and entry["target"] == target:
            if entry["difference"] is None:
                return "FNMR undefined (no genuine pairs)"
            return PairedTest("paired bootstrap", entry["p_value"], entry["difference"],
                              entry["ci95"])
    return "not in the dense score files"


@lru_cache(maxsize=16)
def _same_dense_pairs(path_a: Path, path_b: Path) -> bool:
    """Whether two dense score files hold the same pairs: compared once per pair of files, not
    once per column (five arrays of 15 M entries on SynthMask v2)."""
    return load_dense_scores(path_a).same_pairs(load_dense_scores(path_b))


@lru_cache(maxsize=16)
def _fnmr_tests(path_a: Path, path_b: Path, targets: tuple[float, ...], rounds: int,
                seed: int) -> list[dict]:
    """Every (target, condition) FNMR test of two dense score files at once."""
    a, b = load_dense_scores(path_a), load_dense_scores(path_b)
    conditions = np.asarray(a.conditions)[a.condition]
    return paired_bootstrap_fnmr_difference(a.score, b.score, a.label, conditions, targets,
                                            a.probe_identity, rounds, seed)


def _tar_test(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray,
              tar: dict, groups: np.ndarray | None, rounds: int, seed: int) -> PairedTest:
    test = paired_bootstrap_tar_difference(scores_a, scores_b, labels, tar["target"],
                                           tar["rule"], groups, rounds, seed)
    return PairedTest("paired bootstrap", float(test["p_value"]), test["difference"],
                      test["ci95"])


def _same_pairs(a: ScoreTable, b: ScoreTable) -> bool:
    if a.scores.size != b.scores.size or not np.array_equal(a.labels, b.labels):
        return False
    return all(x is None or y is None or np.array_equal(x, y)
               for x, y in ((a.refs, b.refs), (a.probes, b.probes), (a.folds, b.folds)))
