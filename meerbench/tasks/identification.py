"""Identification: a seeded gallery, closed-set ranks (CMC) and mAP, open-set DIR@FPIR.

Result: ``metrics.identification``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from meerbench.data.dataset import Dataset
from meerbench.metrics.identification import IdentificationSettings
from meerbench.protocol.sampling import Gallery, IdentificationTask, build_gallery
from meerbench.schema import Fields
from meerbench.tasks import (
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


def metric(key: str) -> Metric:
    """rank<K>, map or dir@<FPIR target>."""
    if key.startswith("rank"):
        return Metric(key, "identification", f"Rank-{key[4:]}", "%", True,
                      order=(4, float(key[4:])))
    if key.startswith("dir@"):
        target = float(key[4:])
        return Metric(key, "identification", f"DIR@FPIR={sci(target)}", "%", True,
                      order=(6, -target))
    if key != "map":
        raise KeyError(key)
    return Metric("map", "identification", "mAP", "%", True, order=(5, 0.0))


class Identification(Task):
    name = "identification"
    cached = True
    settings = IdentificationSettings
    headline = ("rank1", "rank5", "map", "dir@")

    def parse(self, fields: Fields) -> IdentificationTask:
        """Enrol ``gallery_identities`` identities or ``gallery_fraction`` of the enrollable
        ones (exactly one of the two)."""
        task = IdentificationTask(
            seed=fields.seed("seed"),
            gallery_identities=fields.positive_int("gallery_identities", None),
            gallery_fraction=fields.get("gallery_fraction", float, None),
            gallery_per_identity=fields.positive_int("gallery_per_identity", 1),
            gallery_masked=fields.get("gallery_masked", bool, False),
            probes_masked=fields.get("probes_masked", bool, True),
        )
        frac = task.gallery_fraction
        if (task.gallery_identities is None) == (frac is None):
            raise fields.error("gallery_identities", "exactly one of gallery_identities and "
                               "gallery_fraction")
        if frac is not None and not 0 < frac < 1:
            raise fields.error("gallery_fraction", f"a number in (0, 1), got {frac}")
        return task

    def plan(self, config: IdentificationTask, dataset: Dataset) -> Plan:
        gallery = build_gallery(config, dataset)
        return Plan(np.concatenate([gallery.gallery, gallery.probes]), gallery.sha256, gallery)

    def list_file(self, plan: Plan, keys: list[str]) -> ListFile:
        gallery: Gallery = plan.lists
        rows = [("gallery", keys[i]) for i in gallery.gallery] + [
            ("probe", keys[i]) for i in gallery.probes]
        return ListFile("gallery", ("role", "key"), rows, f"gallery: {len(gallery.gallery):,} "
                        f"images, probes: {len(gallery.probes):,}")

    def run(self, config: IdentificationTask, plan: Plan, ctx: Context) -> Outcome:
        from meerbench.metrics.identification import identification_report

        gallery: Gallery = plan.lists
        settings = IdentificationSettings.from_dict(ctx.protocol.metrics[self.name])
        ids = np.array([s.identity for s in ctx.dataset.samples])
        return Outcome(Section(values=identification_report(
            ctx.vectors(gallery.probes), ids[gallery.probes],
            ctx.vectors(gallery.gallery), ids[gallery.gallery], settings)))

    def cells(self, section: Section) -> Iterator[tuple[str, Metric, Cell]]:
        if not section.ok:
            return
        m = section.values
        rule = f"{m.get('tie_rule', 'pessimistic')} ties"
        n = m.get("n_probes_mated")
        for k, v in sorted(m["rank"].items(), key=lambda kv: int(kv[0])):
            yield self.name, metric(f"rank{k}"), Cell(
                v, interval(m["ci95"]["rank1"]) if k == "1" else None, rule, n=n)
        yield self.name, metric("map"), Cell(m["map"], n=n)
        intervals = m["ci95"].get("dir_at_fpir") or [None] * len(m["dir_at_fpir"])
        for d, ci in zip(m["dir_at_fpir"], intervals, strict=True):
            note = None if d["reliable"] else (
                f"FPIR {d['fpir_target']:g} with {d['n_nonmated']} non-mated probes allows no "
                "false alarm: DIR is not measured at this FPIR")
            yield self.name, metric(f"dir@{d['fpir_target']:g}"), Cell(
                d["dir"], interval(ci), None, d["reliable"], note, n)

    def summary(self, section: Section) -> list[str]:
        """Rank-k and DIR@FPIR as the tables show them (± 95% CI, †), with their legend."""
        if not section.ok:
            return super().summary(section)
        cells = [(m, c) for _, m, c in self.cells(section) if m.key != "map"]
        ranks = ", ".join(f"rank-{m.key[4:]}: {c.text(m)}%" for m, c in cells
                          if m.key.startswith("rank"))
        dirs = ", ".join(f"{m.label}: {c.text(m)}%" for m, c in cells
                         if m.key.startswith("dir@"))
        return [f"identification  {ranks}; {dirs}", *legend(c for _, c in cells)]


IDENTIFICATION = Identification()
