"""Paired tests of one model against another from their per-pair score files.

Accuracy: McNemar on per-pair decisions, each model at its own k-fold thresholds (recomputed from
the score file under the Result's rule). TAR@FAR: paired bootstrap of the TAR difference,
resampling probe identities. Other metrics have no paired test here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meerbench.metrics.errors import MetricInputError
from meerbench.metrics.scorefiles import ScoreTable
from meerbench.metrics.stats import mcnemar
from meerbench.metrics.verification import kfold_accuracy, paired_bootstrap_tar_difference
from meerbench.report.grid import Column, Run
from meerbench.tasks.verification import VERIFICATION


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


#: Why a metric has no paired test (accuracy and TAR@FAR of verification have one).
NO_TEST = "no paired test for this metric"


def has_test(column: Column) -> bool:
    key = column.metric.key
    return column.metric.task == VERIFICATION.name and (key == "acc" or key.startswith("tar@"))


def missing_score_file(run: Run) -> str | None:
    """Why ``run`` has no per-pair scores for paired tests (naming the file the Result expects),
    or None when its score file is there. Readers print this next to their table: a p-value
    column of dashes must never pass silently for "not significant"."""
    name = run.result["files"].get("scores")
    if name is None:
        return f"{run.path} names no score file (files.scores)"
    if run.file("scores") is None:
        return f"{run.path}: score file {name} (files.scores) is missing from the Result's folder"
    return None


def paired_test(run: Run, reference: Run, column: Column, rounds: int = 1000,
                seed: int = 0) -> PairedTest | str:
    """The test of ``run`` against ``reference`` on ``column``, or why there is none."""
    if not has_test(column):
        return NO_TEST
    lists = [r.result["protocol"].get("lists", {}).get("verification") for r in (run, reference)]
    if run.protocol != reference.protocol or lists[0] != lists[1]:
        return "different pair lists"
    tables = [run.scores(), reference.scores()]
    if tables[0] is None or tables[1] is None:
        return "no score file"  # missing_score_file says which, for a note by the table
    a, b = (None if t.folds is None else t.of_condition(column.condition) for t in tables)
    if a is None or b is None or not _same_pairs(a, b):
        return "score files hold different pairs"
    if a.labels.all() or not a.labels.any():
        return "needs genuine and impostor pairs"
    try:
        return _test(run, a, b, column, rounds, seed)
    except MetricInputError as exc:
        return str(exc)


def _test(run: Run, a: ScoreTable, b: ScoreTable, column: Column, rounds: int,
          seed: int) -> PairedTest:
    """McNemar for accuracy, paired bootstrap for TAR@FAR, on one condition's pairs."""
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
    test = paired_bootstrap_tar_difference(a.scores, b.scores, a.labels, tar["target"],
                                           tar["rule"], groups, rounds, seed)
    return PairedTest("paired bootstrap", float(test["p_value"]), test["difference"],
                      test["ci95"])


def _same_pairs(a: ScoreTable, b: ScoreTable) -> bool:
    if a.scores.size != b.scores.size or not np.array_equal(a.labels, b.labels):
        return False
    return all(x is None or y is None or np.array_equal(x, y)
               for x, y in ((a.refs, b.refs), (a.probes, b.probes), (a.folds, b.folds)))
