"""Protocol x FaceModel -> Result: data, fitting, embedding, tasks, metrics, files."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meerbench.data.dataset import Dataset, DatasetSpec
from meerbench.data.formats import open_dataset
from meerbench.engine.cache import EmbeddingCache
from meerbench.engine.distributed import init_from_env, rank_zero_first
from meerbench.engine.embed import (
    ArrayImages,
    FileImages,
    RestoredImages,
    embed,
    resolve_precision,
)
from meerbench.errors import ModelError
from meerbench.io import atomic_open, ensure_writable_dir
from meerbench.models import load_model
from meerbench.models.base import FaceModel
from meerbench.protocol import Protocol, build_gallery, build_pairs, load_protocol
from meerbench.results import Result, provenance, result_path
from meerbench.settings import resolve_device
from meerbench.store import Artefact

FRAME = (112, 112)


def evaluate(
    model: str | FaceModel,
    protocol: str | Protocol,
    *,
    data: str | Path | None = None,
    out_dir: str | Path | None = "results",
    device: str | None = None,
    batch_size: int = 64,
    workers: int = 0,
    precision: str = "auto",
    chunk_size: int = 2048,
    progress: bool = True,
) -> Result:
    """Evaluate ``model`` on every task of ``protocol``; write the Result if ``out_dir`` is set."""
    t_start = time.perf_counter()
    device = str(resolve_device(device, "device"))
    rank, _ = init_from_env(device)
    out = ensure_writable_dir(Path(out_dir)) if out_dir is not None and rank == 0 else None
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    net = model if isinstance(model, FaceModel) else load_model(model)
    if out is not None:  # plain names, no read-only Result to replace: checked before any work
        result_path(out, net.name, proto.id)
    with rank_zero_first():  # rank 0 generates / prepares data into the cache once
        dataset, preparation = prepare_dataset(proto, data, progress)
    pairs = build_pairs(proto.verification, dataset) if proto.verification else None
    gallery = build_gallery(proto.identification, dataset) if proto.identification else None
    timings: dict[str, Any] = {"data": time.perf_counter() - t_start}

    t = time.perf_counter()
    with rank_zero_first():
        fit_info = fit_if_needed(net, proto, data, progress)
    timings["fit"] = time.perf_counter() - t

    needed = np.unique(np.concatenate([
        *([pairs.ref, pairs.probe] if pairs is not None else []),
        *([gallery.gallery, gallery.probes] if gallery is not None else []),
    ])).astype(np.int64)
    keys = [dataset.samples[i].key for i in needed]
    lists = {"verification": pairs.sha256 if pairs else None,
             "identification": gallery.sha256 if gallery else None}
    content = dataset.content_hash(keys)
    resolved = resolve_precision(net, torch.device(device), precision)
    cache = EmbeddingCache({
        "model": net.name, "weights_sha256": net.weights_hash(), "contract": net.cfg.digest(),
        "protocol": proto.id, "protocol_version": proto.version, "lists": lists,
        "content_sha256": content, "precision": resolved,
        "device_type": torch.device(device).type, "batch_size": batch_size,
    }, label=net.name)
    chosen = [dataset.samples[i] for i in needed]
    images = (RestoredImages(chosen, FRAME, net) if hasattr(net, "restorer")
              else FileImages(chosen, FRAME))
    emb = embed(net, images, cache=cache,
                batch_size=batch_size, workers=workers, device=device, precision=precision,
                chunk_size=chunk_size, progress=progress)
    timings.update(embed=emb.seconds, embed_cache_hit=emb.cache_hit,
                   images_per_second=len(needed) / emb.seconds if not emb.cache_hit else None)
    row = np.full(len(dataset.samples), -1, dtype=np.int64)
    row[needed] = np.arange(len(needed))

    t = time.perf_counter()
    metrics: dict[str, Any] = {}
    files: dict[str, str] = {}
    counts: dict[str, Any] = {"images": len(needed), "dataset_images": len(dataset.samples),
                              "failures": preparation.get("alignment", {}).get(
                                  "fallback_centre_crop", 0)}
    stem = f"{net.name}__{proto.id}"
    if pairs is not None:
        scores = np.einsum("ij,ij->i", emb.embeddings[row[pairs.ref]],
                           emb.embeddings[row[pairs.probe]]).astype(np.float64)
        metrics["verification"], metrics["verification_by_family"] = verification(
            proto, dataset, pairs, scores)
        counts["pairs"] = {c: int((pairs.condition == c).sum())
                           for c in proto.verification.conditions}
        if out is not None:
            files["scores"] = write_pair_scores(out / f"{stem}.scores.csv", dataset, pairs, scores)
    if gallery is not None:
        metrics["identification"] = identification(proto, dataset, gallery, emb.embeddings, row)
    if proto.restoration is not None and not net.can_restore():
        metrics["restoration"] = {"skipped": f"{net.name} does not restore faces"}
    elif proto.restoration is not None:
        metrics["restoration"], samples = restoration(net, proto, dataset, data, device,
                                                      batch_size, progress)
        if out is not None and samples is not None:
            files["restoration_samples"] = write_npz(out / f"{stem}.restoration.npz", samples)
    timings["metrics"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start

    result = Result(
        model={**net.describe(), "fit": fit_info},
        protocol={**proto.provenance(), "lists": lists, "dataset": dataset.name,
                  "manifest_sha256": dataset.manifest_hash(keys), "content_sha256": content,
                  "preparation": preparation},
        metrics=metrics, counts=counts, provenance=provenance(emb.device, emb.precision),
        timings=timings, files=files,
    )
    if out is not None:
        result.write(out)
    return result


def prepare_dataset(proto: Protocol, data: Any, progress: bool) -> tuple[Dataset, dict[str, Any]]:
    """Read the protocol's dataset, align it when it is not aligned, add synthetic masks."""
    dataset = open_dataset(proto.dataset, data, progress=progress)
    info: dict[str, Any] = {"dataset_info": _jsonable(dataset.info)}
    if not proto.aligned:
        from meerbench.data.align import align_dataset

        dataset, info["alignment"] = align_dataset(dataset, proto.aligner, progress=progress)
    if proto.masking is not None:
        from meerbench.data.masking import MaskingSpec, mask_dataset

        m = proto.masking
        spec = MaskingSpec(seed=m.seed, families=m.families, landmarks=m.landmarks)
        dataset, info["masking"] = mask_dataset(dataset, spec, progress=progress)
    return dataset, _jsonable(info)


def _jsonable(value: Any) -> Any:
    """Paths and tuples in info dicts, as JSON can hold them."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def verification(
    proto: Protocol, dataset: Dataset, pairs: Any, scores: np.ndarray
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The verification metrics per condition, and per condition with masked probes per
    occluder family of the probe. Every interval resamples probe identities (pairs of one person
    are not independent draws)."""
    from meerbench.metrics.verification import VerificationSettings, verification_report

    settings = VerificationSettings.from_dict(proto.metrics["verification"])
    identities = np.array([s.identity for s in dataset.samples])
    groups = np.unique(identities, return_inverse=True)[1][pairs.probe]
    family = np.array([s.mask_type or "" for s in dataset.samples], dtype=object)[pairs.probe]

    def report(sel: np.ndarray) -> dict[str, Any]:
        return verification_report(scores[sel], pairs.label[sel], pairs.fold[sel], settings,
                                   groups=groups[sel])

    by_condition: dict[str, Any] = {}
    by_family: dict[str, dict[str, Any]] = {}
    for cond in proto.verification.conditions:
        sel = pairs.condition == cond
        n, genuine = int(sel.sum()), int(pairs.label[sel].sum())
        if genuine == 0 or genuine == n:  # official lists can leave a condition one-sided
            by_condition[cond] = {"n_pairs": n, "n_genuine": genuine, "n_impostor": n - genuine,
                                  "skipped": "needs genuine and impostor pairs"}
            continue
        by_condition[cond] = report(sel)
        for fam in sorted(set(family[sel]) - {""}):
            in_family = sel & (family == fam)
            if 0 < pairs.label[in_family].sum() < in_family.sum():
                by_family.setdefault(cond, {})[fam] = report(in_family)
    return by_condition, by_family


def identification(
    proto: Protocol, dataset: Dataset, gallery: Any, embeddings: np.ndarray, row: np.ndarray
) -> dict[str, Any]:
    from meerbench.metrics.identification import IdentificationSettings, identification_report

    settings = IdentificationSettings.from_dict(proto.metrics["identification"])
    ids = np.array([s.identity for s in dataset.samples])
    return identification_report(
        embeddings[row[gallery.probes]], ids[gallery.probes],
        embeddings[row[gallery.gallery]], ids[gallery.gallery], settings,
    )


def restoration(net: FaceModel, proto: Protocol, dataset: Dataset, data: Any, device: str,
                batch_size: int, progress: bool) -> tuple[dict[str, Any], dict | None]:
    """Restore every masked image that has an unmasked twin; score it against the twin."""
    from meerbench.data.images import read_mask, read_rgb
    from meerbench.metrics.restoration import restoration_report

    task = proto.restoration
    chosen = [s for s in dataset.samples if s.masked and s.twin is not None]
    if not chosen:
        return {"skipped": f"{dataset.name} has no masked images with unmasked ground truth"}, None
    chosen = chosen[: task.max_images] if task.max_images else chosen
    masked = np.stack([read_rgb(s.path) for s in chosen])
    truth = np.stack([read_rgb(s.twin) for s in chosen])
    maps = (np.stack([read_mask(s.mask_map) for s in chosen])
            if all(s.mask_map is not None for s in chosen) else None)
    restored = np.concatenate([
        net.restore(masked[i:i + batch_size], None if maps is None else maps[i:i + batch_size])
        for i in range(0, len(chosen), batch_size)])
    recognizer = load_model(task.recognizer)
    fit_if_needed(recognizer, proto, data, progress)
    pair = torch.from_numpy(np.concatenate([restored, truth]))
    emb = embed(recognizer, ArrayImages(pair), batch_size=batch_size, device=device,
                progress=progress).embeddings
    report = restoration_report(restored, truth, maps, restored_emb=emb[: len(chosen)],
                                target_emb=emb[len(chosen):], recognizer=task.recognizer)
    # a fixed, seeded pick of examples for restoration grids (the same keys for every model)
    pick = np.sort(np.random.default_rng(0).choice(len(chosen), min(8, len(chosen)),
                                                   replace=False))
    samples = {"keys": np.array([chosen[i].key for i in pick]), "masked": masked[pick],
               "restored": restored[pick], "truth": truth[pick]}
    return report, samples


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    with atomic_open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path.name


def write_pair_scores(path: Path, dataset: Dataset, pairs: Any, scores: np.ndarray) -> str:
    """Per-pair scores, so every number can be recomputed without the model."""
    from meerbench.metrics.scorefiles import write_scores_csv

    keys = np.array([s.key for s in dataset.samples], dtype=object)
    ids = np.array([s.identity for s in dataset.samples], dtype=object)
    write_scores_csv(path, scores, pairs.label, refs=keys[pairs.ref], probes=keys[pairs.probe],
                     ref_ids=ids[pairs.ref], probe_ids=ids[pairs.probe], folds=pairs.fold,
                     conditions=pairs.condition)
    return path.name


def fit_if_needed(model: FaceModel, proto: Protocol, data: Any, progress: bool) -> dict | None:
    """Fit a model that needs training data on the protocol's ``train`` split (cached)."""
    if not model.needs_fit:
        return None
    if proto.train is None:
        raise ModelError(
            f"Model {model.name} is fitted on training data, but protocol {proto.id} declares no "
            "'train' dataset. Add a 'train:' section to the protocol or choose another model."
        )
    spec: DatasetSpec = proto.train
    dataset = open_dataset(spec, None if spec.format == "synthface" else data,
                           progress=progress)
    fit = Artefact("fits", {"model": model.name, "contract": model.cfg.digest(),
                            "train_content_sha256": dataset.content_hash()}, label=model.name)
    cached = fit.open() is not None
    if not cached:
        def fill(folder: Path) -> None:
            model.fit(_preprocessed(model, dataset, progress),
                      np.array([s.identity for s in dataset.samples]))
            np.savez(folder / "state.npz", **model.state())

        fit.build(fill)
    with np.load(io.BytesIO(fit.read_bytes("state.npz")), allow_pickle=False) as saved:
        model.load_state(dict(saved))
    return {"train": spec.name, "images": len(dataset.samples), "cached": cached}


def _preprocessed(model: FaceModel, dataset: Dataset, progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    images = FileImages(dataset.samples, FRAME)
    loader = torch.utils.data.DataLoader(images, batch_size=256)
    with tqdm(total=len(images), disable=not progress, unit="img", desc=f"fit {model.name}",
              leave=False) as bar:
        parts = []
        for batch in loader:
            parts.append(model.cfg.preprocess(batch))
            bar.update(len(batch))
    return torch.cat(parts)
