"""Restoration: masked images with known unmasked twins, restored by the model and scored
against the twin (PSNR, SSIM, LPIPS, FID, identity similarity under a recognizer).

Result: ``metrics.restoration``; a seeded pick of examples goes to the side file
``files.restoration_samples``. A model that does not restore is ``skipped`` with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from meerbench.io import atomic_open
from meerbench.results import RESTORATION_RANGES
from meerbench.schema import Fields
from meerbench.tasks import Cell, Context, Metric, Outcome, Plan, Section, Task

#: label, unit, higher is better, scale, digits, tolerance; in report order (the Result's).
_SHOWN: dict[str, tuple[str, str, bool, float, int, float]] = {
    "psnr": ("PSNR", "dB", True, 1.0, 2, 0.01),
    "psnr_masked_region": ("PSNR (mask)", "dB", True, 1.0, 2, 0.01),
    "ssim": ("SSIM", "", True, 1.0, 4, 1e-3),
    "ssim_masked_region": ("SSIM (mask)", "", True, 1.0, 4, 1e-3),
    "identity_similarity": ("ID sim.", "", True, 1.0, 4, 1e-3),
    "fid": ("FID", "", False, 1.0, 2, 0.1),
    "lpips": ("LPIPS", "", False, 1.0, 4, 1e-3),
    "lpips_masked_region": ("LPIPS (mask)", "", False, 1.0, 4, 1e-3),
}
METRICS = {key: Metric(key, "restoration", *_SHOWN[key], order=(7, float(i)))
           for i, key in enumerate(RESTORATION_RANGES)}
#: Examples kept per Result for restoration grids (the same seeded pick for every model).
SAMPLES = 8


@dataclass(frozen=True)
class RestorationConfig:
    """At most ``max_images`` masked images; identity similarity under ``recognizer``."""

    max_images: int | None = None
    recognizer: str = "fisherfaces"


class Restoration(Task):
    name = "restoration"

    def parse(self, fields: Fields) -> RestorationConfig:
        return RestorationConfig(fields.positive_int("max_images", None),
                                 fields.get("recognizer", str, "fisherfaces"))

    def plan(self, config: RestorationConfig, dataset: Any) -> Plan:
        return Plan()  # restores its own images; embeds them under its own recognizer

    def run(self, config: RestorationConfig, plan: Plan, ctx: Context) -> Outcome:
        """Restore every masked image that has an unmasked twin; score it against the twin."""
        import torch

        from meerbench.data.images import read_mask, read_rgb
        from meerbench.metrics.restoration import restoration_report
        from meerbench.models import load_model

        net, dataset = ctx.model, ctx.dataset
        if not net.can_restore():
            return Outcome(Section.skipped(f"{net.name} does not restore faces"))
        chosen = [s for s in dataset.samples if s.masked and s.twin is not None]
        if not chosen:
            return Outcome(Section.skipped(
                f"{dataset.name} has no masked images with unmasked ground truth"))
        chosen = chosen[: config.max_images] if config.max_images else chosen
        masked = np.stack([read_rgb(s.path) for s in chosen])
        truth = np.stack([read_rgb(s.twin) for s in chosen])
        maps = (np.stack([read_mask(s.mask_map) for s in chosen])
                if all(s.mask_map is not None for s in chosen) else None)
        step = ctx.batch_size
        restored = np.concatenate([
            net.restore(masked[i:i + step], None if maps is None else maps[i:i + step])
            for i in range(0, len(chosen), step)])
        recognizer = load_model(config.recognizer)
        ctx.fit(recognizer)
        emb = ctx.embed_arrays(recognizer, torch.from_numpy(np.concatenate([restored, truth])))
        report = restoration_report(restored, truth, maps, restored_emb=emb[: len(chosen)],
                                    target_emb=emb[len(chosen):], recognizer=config.recognizer)
        outcome = Outcome(Section(values=report))
        path = ctx.side_file("restoration.npz")
        if path is not None:
            pick = np.sort(np.random.default_rng(0).choice(len(chosen), min(SAMPLES, len(chosen)),
                                                           replace=False))
            with atomic_open(path, "wb") as handle:
                np.savez_compressed(handle, keys=np.array([chosen[i].key for i in pick]),
                                    masked=masked[pick], restored=restored[pick],
                                    truth=truth[pick])
            outcome.files["restoration_samples"] = path.name
        return outcome

    def cells(self, section: Section) -> Iterator[tuple[str, Metric, Cell]]:
        if not section.ok:
            return
        for key, shown in METRICS.items():
            entry = section.values.get(key)
            if not isinstance(entry, dict):
                continue
            value = entry.get("mean", entry.get("value"))
            if value is not None:
                note = None
            elif "weights_file" in entry:  # its reason names a folder of the running machine
                note = f"needs {entry['weights_file']} (not on disk at run time)"
            else:
                note = str(entry.get("reason", "not measured")).split(": ")[0]
            rule = f"cosine under {entry['recognizer']}" if "recognizer" in entry else None
            yield self.name, shown, Cell(value, rule=rule, note=note,
                                         n=entry.get("n_averaged", entry.get("n_images")))


RESTORATION = Restoration()
