"""Operational: NIST FRVT masked-face style FNMR at a threshold fixed on unmasked impostors.

Its pairs come from the verification pair machinery: ``lists: sampled`` (default) reads the
fields of ``tasks.verification`` (:func:`meerbench.protocol.build_pairs`), ``lists: dense``
those of ``tasks.verification_dense`` (:func:`meerbench.protocol.build_dense_pairs`: every
genuine pair and millions of impostors, which FMR 1e-5 needs); its rule comes from
:mod:`meerbench.metrics.operational`. Result: ``metrics.operational`` (a :class:`Section`
holding the report: ``operating_points``, one per FMR target of ``metrics.operational``, each
with its threshold, per condition and per occluder family of the probe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from meerbench.data.dataset import Dataset
from meerbench.metrics.errors import MetricInputError
from meerbench.metrics.operational import (
    MIN_FALSE_MATCHES,
    REFERENCE,
    OperationalSettings,
    operational_report,
)
from meerbench.protocol.sampling import DenseVerificationTask, PairList, VerificationTask
from meerbench.schema import Fields
from meerbench.tasks import (
    DAGGER,
    PM_LEGEND,
    Cell,
    Context,
    ListFile,
    Metric,
    Outcome,
    Plan,
    Section,
    Task,
    interval,
    sci,
)
from meerbench.tasks.verification import VERIFICATION, Verification, low_rate_tolerance
from meerbench.tasks.verification_dense import VERIFICATION_DENSE

#: ``lists`` -> the task type whose pair fields, lists and scoring the operational task uses.
LISTS: dict[str, Verification] = {"sampled": VERIFICATION, "dense": VERIFICATION_DENSE}

#: Regression tolerance of a mask penalty (a ratio: a 0.1-point move of the reference FNMR of
#: 7% moves the penalty at FMR 1e-3 by 0.05).
PENALTY_TOLERANCE = 0.05
#: The rates of one operating point, in table order: key prefix, label, unit, scale.
RATES = (("fnmr", "FNMR", "%", 100.0), ("fmr", "FMR", "%", 100.0),
         ("mask_penalty", "Mask penalty", "x", 1.0))
DAGGER_NOTE = (f"{DAGGER} not measured: the threshold rests on fewer than {MIN_FALSE_MATCHES} "
               f"{REFERENCE} false matches")
#: What an operational table's numbers mean, for pages that show them.
NOTE = (f"Operational (FNMR, FMR, mask penalty @FMR): one threshold per FMR target, set on "
        f"{REFERENCE} impostor scores (bob far_threshold; match: score >= threshold) and applied "
        f"to every condition and occluder family; mask penalty: FNMR / FNMR({REFERENCE}); "
        f"operational {DAGGER_NOTE}.")


def metric(key: str) -> Metric:
    """``fnmr@<FMR target>``, ``fmr@<target>`` or ``mask_penalty@<target>``: the rate of a
    condition at the threshold set on the reference impostors at that FMR target."""
    kind, target = key.split("@")
    index = [r[0] for r in RATES].index(kind)
    _, label, unit, scale = RATES[index]
    value = float(target)
    tolerance = PENALTY_TOLERANCE if kind == "mask_penalty" else low_rate_tolerance(value)
    return Metric(key, "operational", f"{label}@FMR={sci(value)}", unit, False, scale=scale,
                  order=(index, -value), tolerance=tolerance)


@dataclass(frozen=True)
class OperationalTask:
    """The pairs (read as the ``lists`` task type reads them) and whether to split by family."""

    lists: str
    pairs: VerificationTask | DenseVerificationTask
    by_family: bool = True

    @property
    def source(self) -> Verification:
        return LISTS[self.lists]


def condition_name(condition: str, family: str) -> str:
    """The grid's condition of a family entry: ``UMR-MP/surgical``."""
    return f"{condition}/{family}" if family else condition


def entries(point: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(condition, entry) of one operating point: conditions, then their families."""
    yield from point["conditions"].items()
    for cond, fams in point["by_family"].items():
        for fam, entry in fams.items():
            yield condition_name(cond, fam), entry


class Operational(Task):
    """Threshold on UMR-UMP impostors at FMR targets; FNMR, FMR, mask penalty there."""

    name = "operational"
    cached = True
    settings = OperationalSettings
    per_condition = True
    headline = ("fnmr@", "mask_penalty@")
    dagger_legend = DAGGER_NOTE

    def parse(self, fields: Fields) -> OperationalTask:
        """``lists``: ``sampled`` (default; the pair fields of ``tasks.verification``) or
        ``dense`` (those of ``tasks.verification_dense``); conditions must include UMR-UMP.
        ``by_family`` (default true): also per occluder family of the probe."""
        lists = fields.choice("lists", tuple(LISTS), "sampled")
        by_family = fields.get("by_family", bool, True)
        pairs = LISTS[lists].parse(fields)
        if REFERENCE not in pairs.conditions:
            raise fields.error("conditions", f"a list including {REFERENCE} (its impostors set "
                                             "the threshold)")
        return OperationalTask(lists, pairs, by_family)

    def plan(self, config: OperationalTask, dataset: Dataset) -> Plan:
        """The lists' own plan; ``lists`` holds (``lists`` kind, pairs)."""
        found = config.source.plan(config.pairs, dataset)
        return dataclasses.replace(found, lists=(config.lists, found.lists))

    def list_file(self, plan: Plan, keys: list[str]) -> ListFile | None:
        """The pairs as their task type writes them (dense lists: none, too many)."""
        lists, pairs = plan.lists
        found = LISTS[lists].list_file(dataclasses.replace(plan, lists=pairs), keys)
        return None if found is None else dataclasses.replace(found, suffix="operational-pairs")

    def run(self, config: OperationalTask, plan: Plan, ctx: Context) -> Outcome:
        pairs: PairList = plan.lists[1]
        scores = LISTS[config.lists].scores(pairs, ctx)
        settings = OperationalSettings.from_dict(ctx.protocol.metrics[self.name])
        samples = ctx.dataset.samples
        identities = np.unique([s.identity for s in samples], return_inverse=True)[1]
        families = None
        if config.by_family:
            families = np.array([s.mask_type or "" if s.masked else "" for s in samples],
                                dtype=object)[pairs.probe]
        counts = {"operational_pairs": {c: int((pairs.condition == c).sum())
                                        for c in config.pairs.conditions}}
        try:
            report = operational_report(scores, pairs.label, pairs.condition, settings,
                                        groups=identities[pairs.probe], families=families)
        except MetricInputError as exc:
            return Outcome(Section.skipped(str(exc), fmr_targets=list(settings.fmr_targets)),
                           counts)
        return Outcome(Section(values=report), counts)

    def cells(self, section: Section) -> Iterator[tuple[str, Metric, Cell]]:
        if not section.ok:  # n/a in each FNMR table, with the reason
            for target in section.values["fmr_targets"]:
                yield REFERENCE, metric(f"fnmr@{target:g}"), Cell(
                    None, note=f"skipped: {section.reason}")
            return
        rule = section.values["rule"]
        for point in section.values["operating_points"]:
            target = point["target"]
            for cond, entry in entries(point):
                for kind, *_ in RATES:
                    if kind in entry:
                        n = entry["n_impostor" if kind == "fmr" else "n_genuine"]
                        rate = entry[kind]
                        yield cond, metric(f"{kind}@{target:g}"), Cell(
                            rate["value"], interval(rate["ci95"]), rule, point["reliable"],
                            point["warning"], n)

    def summary(self, section: Section) -> list[str]:
        """One line per condition (and family): FNMR ± 95% CI and the mask penalty at each
        FMR target's threshold, † where the threshold is not measured."""
        if not section.ok:
            return [f"{self.name}  skipped: {section.reason}"]
        points = section.values["operating_points"]
        head = f"{'operational':<22}" + "".join(
            f"{'FNMR% @FMR=' + sci(p['target']):>24}" for p in points)
        lines = [head, "-" * len(head)]
        rows = dict.fromkeys(c for p in points for c, _ in entries(p))
        for cond in rows:
            shown = []
            for p in points:
                entry = dict(entries(p)).get(cond)
                fnmr = None if entry is None else entry["fnmr"]
                text = "n/a"
                if fnmr is not None and fnmr["value"] is not None:
                    text = Cell(fnmr["value"], interval(fnmr["ci95"]),
                                reliable=p["reliable"]).text(metric(f"fnmr@{p['target']:g}"))
                    penalty = entry.get("mask_penalty", {}).get("value")
                    text += "" if penalty is None else f" ({penalty:.2f}x)"
                shown.append(f"{text:>24}")
            lines.append(f"{cond:<22}" + "".join(shown))
        marks = [f"thresholds on {REFERENCE} impostors; (Nx) mask penalty", PM_LEGEND]
        if not all(p["reliable"] for p in points):
            marks.append(DAGGER_NOTE)
        return [*lines, "  " + "; ".join(marks)]


OPERATIONAL = Operational()
