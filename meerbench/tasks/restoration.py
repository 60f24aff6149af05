"""Restoration: masked images with known unmasked twins, restored by the model and scored
against the twin (PSNR, SSIM, LPIPS, FID, identity similarity under a recognizer).

Result: ``metrics.restoration`` (with ``given``: what the restorer was given, as it declares it);
a seeded pick of examples goes to the side file ``files.restoration_samples``. A model that does
not restore is ``skipped`` with the reason. The restored images (kind ``restorations``) and the
scored section with its samples (kind ``restoration-metrics``) are store artefacts.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meerbench.errors import ModelError
from meerbench.io import atomic_open
from meerbench.results import RESTORATION_RANGES, RESTORER_GIVEN
from meerbench.schema import Fields
from meerbench.store import Artefact
from meerbench.tasks import Cell, Context, Metric, Outcome, Plan, Section, Task, code_digest

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
#: Files of the store artefacts: ``restorations`` (the restored images, uint8) and
#: ``restoration-metrics`` (the section's report and the samples archive).
RESTORED, REPORT, SAMPLES_FILE = "restored.npy", "report.json", "samples.npz"


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
        """Restore every masked image that has an unmasked twin; score it against the twin.

        The restorations and the report are store artefacts (:func:`restoration_key`): a rerun
        of the same restorer on the same data reads the report and its samples, nothing else.
        """
        from meerbench.metrics.restoration import metric_settings
        from meerbench.models import load_model

        net, dataset = ctx.model, ctx.dataset
        if not net.can_restore():
            return Outcome(Section.skipped(f"{net.name} does not restore faces"))
        chosen = [s for s in dataset.samples if s.masked and s.twin is not None]
        if not chosen:
            return Outcome(Section.skipped(
                f"{dataset.name} has no masked images with unmasked ground truth"))
        chosen = chosen[: config.max_images] if config.max_images else chosen
        has_maps = all(s.mask_map is not None for s in chosen)
        restorations = Artefact("restorations", restoration_key(net, dataset, chosen, has_maps,
                                                                ctx.batch_size), label=net.name)
        recognizer = load_model(config.recognizer)
        ctx.fit(recognizer)
        scored = Artefact("restoration-metrics", {
            "restorations": restorations.key,
            "recognizer": {"name": recognizer.name, "weights_sha256": recognizer.weights_hash(),
                           "contract": recognizer.cfg.digest(), "batch_size": ctx.batch_size,
                           "device_type": ctx.device_type},
            "metrics": metric_settings(), "samples": SAMPLES, "code_sha256": code_digest()},
            label=net.name)
        scored.ensure(lambda folder: _score(folder, chosen, net, recognizer, config.recognizer,
                                            restorations, ctx))
        report = json.loads(scored.read_bytes(REPORT))
        given = restorations.key["given"]
        outcome = Outcome(Section(values=report if given is None else {**report, "given": given}))
        path = ctx.side_file("restoration.npz")
        if path is not None:
            with atomic_open(path, "wb") as handle:
                handle.write(scored.read_bytes(SAMPLES_FILE))
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


def given_to(net: Any, has_maps: bool) -> str | None:
    """What ``net`` restores from (:data:`meerbench.results.RESTORER_GIVEN`), as it declares it
    (``restoration_given``; None when it declares nothing: the Result then says nothing). A
    restorer that takes the true map gets the lower-face template when the data have no maps
    (:class:`meerbench.models.restorers.RestoreThenRecognize`)."""
    given = getattr(net, "restoration_given", None)
    if given is not None and given not in RESTORER_GIVEN:
        raise ModelError(f"{net.name}: restoration_given must be one of "
                         f"{', '.join(RESTORER_GIVEN)}, got {given!r}.")
    return "template-map" if given == "true-map" and not has_maps else given


def restoration_key(net: Any, dataset: Any, chosen: list[Any], has_maps: bool,
                    batch_size: int) -> dict[str, Any]:
    """Everything the restored pixels depend on: the restorer (name, weights sha256, contract,
    what it is given), where and in which batches it ran, and the content hash of the chosen
    images, their twins and maps."""
    return {"restorer": net.name, "weights_sha256": net.weights_hash(),
            "contract": net.cfg.digest(), "given": given_to(net, has_maps),
            "device_type": _device_type(net), "batch_size": batch_size,
            "content_sha256": dataset.content_hash([s.key for s in chosen])}


def _device_type(net: Any) -> str:
    """Where a torch restorer's weights are (its restorations are computed there); "cpu" for
    the others (OpenCV)."""
    module = getattr(net, "net", None)
    params = module.parameters() if hasattr(module, "parameters") else iter(())
    first = next(params, None)
    return "cpu" if first is None else first.device.type


def _images(chosen: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Masked images, their unmasked twins and (when every image has one) occluder maps."""
    from meerbench.data.images import read_mask, read_rgb

    masked = np.stack([read_rgb(s.path) for s in chosen])
    truth = np.stack([read_rgb(s.twin) for s in chosen])
    maps = (np.stack([read_mask(s.mask_map) for s in chosen])
            if all(s.mask_map is not None for s in chosen) else None)
    return masked, truth, maps


def _restore(folder: Path, net: Any, masked: np.ndarray, maps: np.ndarray | None,
             step: int) -> None:
    restored = np.concatenate([
        net.restore(masked[i:i + step], None if maps is None else maps[i:i + step])
        for i in range(0, len(masked), step)])
    np.save(folder / RESTORED, restored, allow_pickle=False)


def _score(folder: Path, chosen: list[Any], net: Any, recognizer: Any, recognizer_name: str,
           restorations: Artefact, ctx: Context) -> None:
    """The report (``REPORT``) and the seeded samples archive (``SAMPLES_FILE``) into
    ``folder``, from the cached restorations (restored first when not cached)."""
    import torch

    from meerbench.metrics.restoration import restoration_report

    masked, truth, maps = _images(chosen)
    restorations.ensure(lambda f: _restore(f, net, masked, maps, ctx.batch_size))
    restored = np.load(io.BytesIO(restorations.read_bytes(RESTORED)), allow_pickle=False)
    emb = ctx.embed_arrays(recognizer, torch.from_numpy(np.concatenate([restored, truth])))
    report = restoration_report(restored, truth, maps, restored_emb=emb[: len(chosen)],
                                target_emb=emb[len(chosen):], recognizer=recognizer_name)
    (folder / REPORT).write_text(json.dumps(report))
    pick = np.sort(np.random.default_rng(0).choice(len(chosen), min(SAMPLES, len(chosen)),
                                                   replace=False))
    np.savez_compressed(folder / SAMPLES_FILE, keys=np.array([chosen[i].key for i in pick]),
                        masked=masked[pick], restored=restored[pick], truth=truth[pick])
