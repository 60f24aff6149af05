"""Protocol x FaceModel -> Result: data, fitting, embedding, then each of the protocol's tasks
(:mod:`meerbench.tasks`) in order, each adding its section, counts and side files."""

from __future__ import annotations

import datetime
import io
import time
import warnings
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
from meerbench.engine.sections import embeddings_digest, run_task
from meerbench.errors import ModelError
from meerbench.io import ensure_writable_dir
from meerbench.models import load_model
from meerbench.models.base import FaceModel
from meerbench.models.contract import ARCFACE_112, check_alignment
from meerbench.protocol import Protocol, load_protocol, task_type
from meerbench.results import Result, provenance, result_path, result_stem
from meerbench.settings import resolve_device
from meerbench.store import Artefact
from meerbench.tasks import Context, Plan

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
    check_alignment(net.cfg, ARCFACE_112)  # every protocol prepares ArcFace 112x112 faces
    if out is not None:  # plain names, no read-only Result to replace: checked before any work
        result_path(out, net.name, proto.id, proto.version)
    with rank_zero_first():  # rank 0 generates / prepares data into the cache once
        dataset, preparation = prepare_dataset(proto, data, progress)
    tasks = {name: task_type(name) for name in proto.tasks}
    plans = plan_tasks(proto, dataset)
    timings: dict[str, Any] = {"data": time.perf_counter() - t_start}

    t = time.perf_counter()
    opened: dict[str, tuple[Dataset, str]] = {}  # the train split, opened once
    with rank_zero_first():
        fit_info = fit_if_needed(net, proto, data, progress, opened)
    timings["fit"] = time.perf_counter() - t

    needed = np.unique(np.concatenate(
        [np.zeros(0, np.int64)] + [p.images for p in plans.values()])).astype(np.int64)
    keys = [dataset.samples[i].key for i in needed]
    lists = {name: p.sha256 for name, p in plans.items() if p.sha256 is not None}
    content, manifest = dataset.content_hash(keys), dataset.manifest_hash(keys)
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
    ctx = Context(
        protocol=proto, model=net, dataset=dataset, embeddings=emb.embeddings, row=row, out=out,
        stem=result_stem(net.name, proto.id, proto.version), batch_size=batch_size,
        device_type=torch.device(device).type,
        embed_arrays=lambda model, pixels: embed(
            model, ArrayImages(pixels), batch_size=batch_size, device=device,
            progress=progress).embeddings,
        fit=lambda model: fit_if_needed(model, proto, data, progress, opened))
    scored_on = {"protocol": proto.id, "protocol_sha256": proto.sha256, "lists": lists,
                 "content_sha256": content, "embeddings_sha256": embeddings_digest(
                     emb.embeddings), "stem": ctx.stem}
    for name, task in tasks.items():  # the protocol's order
        entries, outcome = run_task(task, proto.tasks[name], plans[name], ctx, scored_on)
        metrics.update(entries)
        counts.update(outcome.counts)
        files.update(outcome.files)
    timings["metrics"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start

    result = Result(
        model={**net.describe(), "fit": fit_info},
        protocol={**proto.provenance(), "config": _jsonable(proto.raw), "lists": lists,
                  "dataset": dataset.name, "manifest_sha256": manifest,
                  "content_sha256": content, "preparation": preparation},
        metrics=metrics, counts=counts, provenance=provenance(emb.device, emb.precision),
        timings=timings, files=files,
    )
    if out is not None:
        result.write(out)
    return result


def plan_tasks(proto: Protocol, dataset: Dataset) -> dict[str, Plan]:
    """Each task's plan (its lists) on ``dataset``, in the protocol's order; a dataset that
    cannot make them (too few identities for the folds, ...) fails here."""
    return {name: task_type(name).plan(config, dataset) for name, config in proto.tasks.items()}


def prepare_dataset(proto: Protocol, data: Any, progress: bool, align_workers: int | None = None
                    ) -> tuple[Dataset, dict[str, Any]]:
    """Read the protocol's dataset, align it when it is not aligned (in ``align_workers``
    processes; default: the idle cores), add synthetic masks.

    Before the slow alignment, a download far smaller than the protocol's published counts is
    warned about (``IncompleteDataset``) and, unless synthetic masks are still to be added (they
    need aligned faces), the tasks' lists are built once so that a dataset that cannot make them
    fails at once.
    """
    dataset = open_dataset(proto.dataset, data, progress=progress)
    info: dict[str, Any] = {"dataset_info": _jsonable(dataset.info)}
    if short := shortfalls(proto, dataset_counts(dataset)):
        warnings.warn(f"{dataset.name} at {dataset.root} looks incomplete: found "
                      f"{'; '.join(short)}. Check the download (published counts: "
                      f"{proto.published.get('source', proto.citation)}).", IncompleteDataset,
                      stacklevel=2)
    if not proto.aligned:
        from meerbench.data.align import align_dataset, as_aligned

        if proto.masking is None:
            plan_tasks(proto, as_aligned(dataset))
        dataset, info["alignment"] = align_dataset(dataset, proto.aligner,
                                                   workers=align_workers, progress=progress)
    if proto.masking is not None:
        from meerbench.data.masking import MaskingSpec, mask_dataset

        m = proto.masking
        spec = MaskingSpec(seed=m.seed, families=m.families, landmarks=m.landmarks)
        dataset, info["masking"] = mask_dataset(dataset, spec, progress=progress)
    return dataset, _jsonable(info)


#: a count below this share of the protocol's published count marks a download as incomplete.
INCOMPLETE_BELOW = 0.5
COUNTED = {"identities": "identities", "images_masked": "masked images",
           "images_unmasked": "unmasked images"}


class IncompleteDataset(UserWarning):
    """The dataset found is far smaller than its protocol's published counts."""


def dataset_counts(dataset: Dataset) -> dict[str, int]:
    """Identities, masked and unmasked images: what protocols publish (``published``)."""
    return {"identities": len({s.identity for s in dataset.samples}),
            "images_masked": sum(s.masked for s in dataset.samples),
            "images_unmasked": sum(not s.masked for s in dataset.samples)}


def shortfalls(proto: Protocol, found: dict[str, int]) -> list[str]:
    """'25 of 525 published identities (5%)' for each count below ``INCOMPLETE_BELOW`` of the
    protocol's published one."""
    out = []
    for key, label in COUNTED.items():
        published = proto.published.get(key)
        if isinstance(published, int) and found[key] < INCOMPLETE_BELOW * published:
            out.append(f"{found[key]:,} of {published:,} published {label} "
                       f"({found[key] / published:.0%})")
    return out


def _jsonable(value: Any) -> Any:
    """Info dicts and protocol mappings as JSON can hold them: paths (and YAML dates) as text,
    tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path | datetime.date):
        return str(value)
    return value


def fit_if_needed(model: FaceModel, proto: Protocol, data: Any, progress: bool,
                  opened: dict[str, tuple[Dataset, str]] | None = None) -> dict | None:
    """Fit a model that needs training data on the protocol's ``train`` split (cached).

    ``opened`` keeps the train split and its content hash for the next model of the same
    evaluation (a restore-then-recognize model and the restoration task's recognizer): the
    split is opened and hashed once.
    """
    if not model.needs_fit:
        return None
    if proto.train is None:
        raise ModelError(
            f"Model {model.name} is fitted on training data, but protocol {proto.id} declares no "
            "'train' dataset. Add a 'train:' section to the protocol or choose another model."
        )
    spec: DatasetSpec = proto.train
    opened = {} if opened is None else opened
    if "train" not in opened:
        train = open_dataset(spec, None if spec.format == "synthface" else data,
                             progress=progress)
        opened["train"] = train, train.content_hash()
    dataset, content = opened["train"]
    fit = Artefact("fits", {"model": model.name, "contract": model.cfg.digest(),
                            "train_content_sha256": content}, label=model.name)
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
