"""Verification: pairs per masked condition, cosine scores, k-fold accuracy, AUC, EER, TAR@FAR.

Balanced LFW-style folds; :mod:`.verification_dense` is the dense variant (same sections).

Result: ``metrics.verification.<condition>`` (one entry per condition) and
``metrics.verification_by_family.<condition>.<family>`` (conditions with masked probes, per
occluder family of the probe); the per-pair scores go to the side file ``files.scores``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meerbench.data.dataset import Dataset
from meerbench.metrics.verification import VerificationSettings
from meerbench.protocol.sampling import CONDITIONS, PairList, VerificationTask, build_pairs
from meerbench.schema import Fields
from meerbench.tasks import (
    DAGGER,
    Cell,
    Context,
    ListFile,
    Metric,
    Outcome,
    Plan,
    Section,
    Task,
    interval,
    legend,
    sci,
)

RULES = ("acc", "auc", "eer", "tar@")

#: Regression tolerance of a rate read at a threshold set by FAR/FMR <= 1e-4 (leaderboard
#: ``--check``): such a threshold rests on a few dozen impostor scores, so the last bits of
#: inference move it. Measured: dense TAR@1e-4/1e-5 moved by up to 0.2 points between bf16 and
#: fp32 inference of one model, and by 0.11 points between two machines' bf16 (docs/protocols.md).
LOW_RATE_TOLERANCE = 0.005


def low_rate_tolerance(target: float) -> float:
    """:data:`LOW_RATE_TOLERANCE` at FAR/FMR targets <= 1e-4, else the default 0.001."""
    return LOW_RATE_TOLERANCE if target <= 1e-4 else 1e-3


def metric(key: str, task: str = "verification") -> Metric:
    """acc, auc, eer or tar@<FAR target> of ``task`` (a verification task type's name)."""
    if key.startswith("tar@"):
        target = float(key[4:])
        return Metric(key, task, f"TAR@FAR={sci(target)}", "%", True, order=(3, -target),
                      tolerance=low_rate_tolerance(target))
    label, higher = {"acc": ("Accuracy", True), "auc": ("AUC", True), "eer": ("EER", False)}[key]
    return Metric(key, task, label, "%", higher, order=(RULES.index(key), 0.0))


@dataclass(frozen=True)
class VerificationSection:
    """Entries per condition, and per condition and occluder family of the probe."""

    conditions: dict[str, Section]
    by_family: dict[str, dict[str, Section]] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "ok" if any(c.ok for c in self.conditions.values()) else "skipped"

    @property
    def reason(self) -> str | None:
        return None if self.status == "ok" else "; ".join(
            sorted({str(c.reason) for c in self.conditions.values()}))

    def accuracy_rule(self, condition: str) -> str:
        return self.conditions[condition].values["accuracy"]["rule"]

    def tar(self, condition: str, key: str) -> dict[str, Any]:
        """The TAR@FAR entry of metric ``key`` (``tar@0.001``) under ``condition``."""
        return next(t for t in self.conditions[condition].values["tar_at_far"]
                    if f"tar@{t['target']:g}" == key)

    def to_dict(self) -> dict[str, Any]:
        return {c: s.to_dict() for c, s in self.conditions.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any],
                  by_family: dict[str, Any] | None = None) -> VerificationSection:
        return cls({c: Section.from_dict(m) for c, m in data.items()},
                   {c: {f: Section.from_dict(m) for f, m in fams.items()}
                    for c, fams in (by_family or {}).items()})


class Verification(Task):
    name = "verification"
    cached = True
    settings = VerificationSettings
    per_condition = True
    headline = ("acc", "tar@", "eer")

    def parse(self, fields: Fields) -> VerificationTask:
        """``pairs``: ``generated`` (seeded) or ``official`` (the dataset's own list, which
        brings its own folds)."""
        conditions = fields.unique_list("conditions", tuple(CONDITIONS), list(CONDITIONS))
        source = fields.choice("pairs", ("generated", "official"), "generated")
        official = source == "official"
        task = VerificationTask(
            seed=0 if official else fields.seed("seed"),
            folds=0 if official else fields.positive_int("folds", 10),
            pairs_per_fold=0 if official else fields.positive_int("pairs_per_fold"),
            conditions=conditions, pairs=source,
            allow_fewer=False if official else fields.get("allow_fewer", bool, False),
        )
        if task.pairs_per_fold % 2:
            raise fields.error("pairs_per_fold", "an even number (half genuine, half impostor)")
        return task

    def plan(self, config: VerificationTask, dataset: Dataset) -> Plan:
        pairs = build_pairs(config, dataset)
        return Plan(np.concatenate([pairs.ref, pairs.probe]), pairs.sha256, pairs)

    def list_file(self, plan: Plan, keys: list[str]) -> ListFile:
        pairs: PairList = plan.lists
        rows = [(c, f, keys[r], keys[p], lab) for r, p, lab, f, c in zip(
            pairs.ref, pairs.probe, pairs.label, pairs.fold, pairs.condition, strict=True)]
        return ListFile("pairs", ("condition", "fold", "ref", "probe", "label"), rows,
                        f"pairs: {len(rows):,}")

    def run(self, config: VerificationTask, plan: Plan, ctx: Context) -> Outcome:
        pairs: PairList = plan.lists
        scores = self.scores(pairs, ctx)
        settings = VerificationSettings.from_dict(ctx.protocol.metrics[self.name])
        section = score_pairs(config.conditions, settings, ctx.dataset, pairs, scores)
        counts = {"pairs": {c: int((pairs.condition == c).sum()) for c in config.conditions}}
        path = ctx.side_file("scores.csv")
        files = {} if path is None else {"scores": write_pair_scores(path, ctx.dataset, pairs,
                                                                     scores)}
        return Outcome(section, counts, files)

    def scores(self, pairs: PairList, ctx: Context) -> np.ndarray:
        """Cosine scores of ``pairs`` (float64), computed once per evaluation: the operational
        task on the same lists reads the very values this task wrote to its score file."""
        return ctx.derived((self.name, pairs.sha256), lambda: np.einsum(
            "ij,ij->i", ctx.vectors(pairs.ref), ctx.vectors(pairs.probe)).astype(np.float64))

    @property
    def family_key(self) -> str:
        """The Result's ``metrics`` key of the per-family entries."""
        return f"{self.name}_by_family"

    def read(self, metrics: dict[str, Any]) -> VerificationSection | None:
        entry = metrics.get(self.name)
        return None if entry is None else VerificationSection.from_dict(
            entry, metrics.get(self.family_key))

    def write(self, section: VerificationSection, metrics: dict[str, Any]) -> None:
        metrics[self.name] = section.to_dict()
        metrics[self.family_key] = {
            c: {f: s.to_dict() for f, s in fams.items()} for c, fams in section.by_family.items()}

    def cells(self, section: VerificationSection) -> Iterator[tuple[str, Metric, Cell]]:
        for cond, entry in section.conditions.items():
            if not entry.ok:
                yield cond, metric("acc", self.name), Cell(
                    None, note=f"skipped: {entry.reason}", n=entry.values.get("n_pairs"))
                continue
            m = entry.values
            n = m.get("n_pairs")
            acc = m["accuracy"]
            if acc is not None:
                yield cond, metric("acc", self.name), Cell(
                    acc["mean"], interval(acc["ci95"]),
                    f"{acc['rule']}, {len(acc['per_fold'])}-fold", n=n)
            yield cond, metric("auc", self.name), Cell(
                m["auc"]["value"], interval(m["auc"]["ci95"]), "trapezoid, ties 1/2", n=n)
            yield cond, metric("eer", self.name), Cell(
                m["eer"]["value"], interval(m["eer"]["ci95"]), m["eer"]["rule"], n=n)
            for t in m["tar_at_far"]:
                yield cond, metric(f"tar@{t['target']:g}", self.name), Cell(
                    t["tar"], interval(t["ci95"]), t["rule"], t["reliable"], t["warning"], n)

    def summary(self, section: VerificationSection) -> list[str]:
        """One line per condition: accuracy ± its 95% interval (as in the tables), AUC, EER,
        and TAR@FAR with † where it is not measured; the legend of the marks shown below."""
        shown: dict[str, dict[str, tuple[Metric, Cell]]] = {}
        for cond, m, cell in self.cells(section):
            shown.setdefault(cond, {})[m.key] = (m, cell)
        tars = list(dict.fromkeys(k for cells in shown.values() for k in cells
                                  if k.startswith("tar@")))
        accs = [cells["acc"][1] for cells in shown.values() if "acc" in cells]
        acc_head = "acc % ± 95% CI" if legend(accs) else "acc %"
        folded = not any(e.ok and e.values["accuracy"] is None  # dense pairs: no accuracy
                         for e in section.conditions.values())
        head = f"{'condition':<9}{f' {acc_head:>16}' if folded else ''} {'AUC':>7} {'EER %':>7} " \
            + " ".join(f"{'TAR@' + k[4:]:>10}" for k in tars)
        lines = [head, "-" * len(head)]
        for cond, entry in section.conditions.items():
            if not entry.ok:
                lines.append(f"{cond:<9} skipped: {entry.reason} "
                             f"({entry.values['n_pairs']} pairs)")
                continue
            m, cells = entry.values, shown[cond]
            acc = cells["acc"][1].text(cells["acc"][0]) if "acc" in cells else "n/a"
            tar = " ".join(f"{metric.show(c.value) + ('' if c.reliable else DAGGER):>10}"
                           for metric, c in (cells[k] for k in tars if k in cells))
            lines.append(f"{cond:<9}{f' {acc:>16}' if folded else ''} {m['auc']['value']:>7.4f} "
                         f"{100 * m['eer']['value']:>7.2f} {tar}".rstrip())
        tar_marks = [Cell(c.value, reliable=c.reliable) for cells in shown.values()
                     for k in tars if k in cells for c in [cells[k][1]]]  # shown without ±
        return lines + legend([*accs, *tar_marks])


def score_pairs(conditions: tuple[str, ...], settings: VerificationSettings, dataset: Any,
                pairs: Any, scores: np.ndarray, folds: bool = True) -> VerificationSection:
    """The metrics per condition, and per condition with masked probes per occluder family of
    the probe (k-fold accuracy only with ``folds``). Every interval resamples probe identities
    (pairs of one person are not independent draws)."""
    from meerbench.metrics.verification import verification_report

    identities = np.array([s.identity for s in dataset.samples])
    groups = np.unique(identities, return_inverse=True)[1][pairs.probe]
    # occluder family of each probe as a code into sorted names ("" first: unmasked)
    names, codes = np.unique([s.mask_type or "" for s in dataset.samples], return_inverse=True)
    family = codes[pairs.probe]

    def report(sel: np.ndarray) -> Section:
        return Section(values=verification_report(
            scores[sel], pairs.label[sel], pairs.fold[sel] if folds else None, settings,
            groups=groups[sel]))

    by_condition: dict[str, Section] = {}
    by_family: dict[str, dict[str, Section]] = {}
    for cond in conditions:
        sel = pairs.condition == cond
        n, genuine = int(sel.sum()), int(pairs.label[sel].sum())
        if genuine == 0 or genuine == n:  # official lists can leave a condition one-sided
            by_condition[cond] = Section.skipped("needs genuine and impostor pairs", n_pairs=n,
                                                 n_genuine=genuine, n_impostor=n - genuine)
            continue
        by_condition[cond] = report(sel)
        for code in np.unique(family[sel]):
            in_family = sel & (family == code)
            if names[code] and 0 < pairs.label[in_family].sum() < in_family.sum():
                by_family.setdefault(cond, {})[str(names[code])] = report(in_family)
    return VerificationSection(by_condition, by_family)


def write_pair_scores(path: Path, dataset: Dataset, pairs: PairList, scores: np.ndarray) -> str:
    """Per-pair scores, so every number can be recomputed without the model."""
    from meerbench.metrics.scorefiles import write_scores_csv

    keys = np.array([s.key for s in dataset.samples], dtype=object)
    ids = np.array([s.identity for s in dataset.samples], dtype=object)
    write_scores_csv(path, scores, pairs.label, refs=keys[pairs.ref], probes=keys[pairs.probe],
                     ref_ids=ids[pairs.ref], probe_ids=ids[pairs.probe], folds=pairs.fold,
                     conditions=pairs.condition)
    return path.name


VERIFICATION = Verification()
