"""Protocols: versioned YAML definitions of a benchmark, validated on load.

A protocol names its dataset (a registered format plus options), its preprocessing, an optional
training split for baselines that fit, its tasks and its metric settings. Pair lists and
galleries are *generated* here, deterministically from the protocol's seed and the sorted sample
list; their sha256 is part of the protocol's identity and lands in every Result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from meerbench.data.dataset import Dataset, DatasetSpec
from meerbench.errors import ProtocolError
from meerbench.registry import PROTOCOLS
from meerbench.schema import Fields

#: (reference masked?, probe masked?) for each masked-benchmark condition.
CONDITIONS: dict[str, tuple[bool, bool]] = {
    "UMR-UMP": (False, False),
    "UMR-MP": (False, True),
    "MR-MP": (True, True),
}
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class VerificationTask:
    seed: int
    folds: int
    pairs_per_fold: int
    conditions: tuple[str, ...]


@dataclass(frozen=True)
class IdentificationTask:
    seed: int
    gallery_identities: int
    gallery_per_identity: int
    probes_masked: bool


@dataclass(frozen=True)
class RestorationTask:
    max_images: int | None = None


@dataclass(frozen=True)
class Protocol:
    """A validated protocol. ``sha256`` hashes the file's canonical content."""

    id: str
    version: int
    description: str
    citation: str
    dataset: DatasetSpec
    aligned: bool
    train: DatasetSpec | None
    verification: VerificationTask | None
    identification: IdentificationTask | None
    restoration: RestorationTask | None
    metrics: dict[str, dict[str, Any]]
    source: str
    sha256: str
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "sha256": self.sha256, "source": self.source}


@dataclass(frozen=True)
class PairList:
    """Verification pairs as indices into ``Dataset.samples``, one block per condition."""

    ref: np.ndarray
    probe: np.ndarray
    label: np.ndarray
    fold: np.ndarray
    condition: np.ndarray
    sha256: str


@dataclass(frozen=True)
class Gallery:
    """Identification split: gallery and probe sample indices."""

    gallery: np.ndarray
    probes: np.ndarray
    sha256: str


def parse_protocol(data: Any, source: str) -> Protocol:
    """Validate a protocol mapping; ``source`` (a file name) appears in every error."""
    top = Fields(data, source)
    schema = top.get("schema", int, SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise top.error("schema", f"{SCHEMA_VERSION} (this meerbench reads schema {SCHEMA_VERSION})")
    pid = top.get("id", str)
    version = top.positive_int("version")
    description = top.get("description", str)
    citation = top.get("citation", str, "")

    dataset = _dataset_spec(top.sub("dataset"), pid)

    pre = top.sub("preprocessing", {})
    aligned = pre.get("aligned", bool, True) if pre else True
    if pre:
        pre.finish()

    train_fields = top.sub("train", None)
    train = _dataset_spec(train_fields, f"{pid}-train") if train_fields else None

    tasks = top.sub("tasks")
    verification = identification = restoration = None
    if v := tasks.sub("verification", None):
        conditions = tuple(v.get("conditions", list, list(CONDITIONS)))
        for c in conditions:
            if c not in CONDITIONS:
                raise v.error("conditions", f"a list drawn from {', '.join(CONDITIONS)}, got {c!r}")
        verification = VerificationTask(
            seed=v.get("seed", int), folds=v.positive_int("folds", 10),
            pairs_per_fold=v.positive_int("pairs_per_fold"), conditions=conditions,
        )
        if verification.pairs_per_fold % 2:
            raise v.error("pairs_per_fold", "an even number (half genuine, half impostor)")
        v.finish()
    if i := tasks.sub("identification", None):
        identification = IdentificationTask(
            seed=i.get("seed", int), gallery_identities=i.positive_int("gallery_identities"),
            gallery_per_identity=i.positive_int("gallery_per_identity", 1),
            probes_masked=i.get("probes_masked", bool, True),
        )
        i.finish()
    if r := tasks.sub("restoration", None):
        restoration = RestorationTask(r.positive_int("max_images", None))
        r.finish()
    tasks.finish()
    if not (verification or identification or restoration):
        raise tasks.error("", "at least one of verification, identification, restoration")

    metrics_fields = top.sub("metrics", {})
    metrics = {k: metrics_fields.get(k, dict, {}) for k in ("verification", "identification")}
    metrics_fields.finish()
    _check_metric_settings(metrics, source)
    top.finish()

    canonical = yaml.safe_dump(data, sort_keys=True).encode()
    return Protocol(
        id=pid, version=version, description=description, citation=citation, dataset=dataset,
        aligned=aligned, train=train, verification=verification, identification=identification,
        restoration=restoration, metrics=metrics, source=source,
        sha256=hashlib.sha256(canonical).hexdigest(), raw=dict(data),
    )


def _dataset_spec(fields: Fields, default_name: str) -> DatasetSpec:
    spec = DatasetSpec(fields.get("format", str), fields.get("name", str, default_name),
                       fields.get("options", dict, {}))
    fields.finish()
    return spec


def _check_metric_settings(metrics: dict[str, dict[str, Any]], source: str) -> None:
    from meerbench.metrics.identification import IdentificationSettings
    from meerbench.metrics.verification import VerificationSettings

    for key, cls in (("verification", VerificationSettings), ("identification", IdentificationSettings)):
        try:
            cls.from_dict(metrics[key])
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"{source}: field 'metrics.{key}': {exc}") from None


def read_protocol_file(path: Path) -> Protocol:
    """Load and validate one protocol YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProtocolError(f"Protocol file not found: {path}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProtocolError(f"{path}: not valid YAML: {exc}") from None
    return parse_protocol(data, str(path))


def _register_builtin_protocols() -> None:
    for item in sorted(resources.files("meerbench.protocols").iterdir(), key=lambda p: p.name):
        if item.name.endswith(".yaml"):
            path = Path(str(item))
            PROTOCOLS.add(path.stem, path)


_register_builtin_protocols()


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A protocol by registered name, or a YAML file by path (anything ending in .yaml/.yml)."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return read_protocol_file(Path(text))
    obj = PROTOCOLS.get(text)
    if callable(obj):  # plugin entry points may give a function returning a path or a mapping
        obj = obj()
    if isinstance(obj, dict):
        return parse_protocol(obj, f"<protocol {text} from {PROTOCOLS.entry(text).origin}>")
    return read_protocol_file(Path(str(obj)))


def describe_protocols() -> list[tuple[str, str]]:
    """(name, description + citation) for ``meerbench list protocols``; bad files say so."""
    rows = []
    for entry in PROTOCOLS.entries():
        try:
            proto = load_protocol(entry.name)
            cite = f" [{proto.citation}]" if proto.citation else ""
            rows.append((entry.name, f"v{proto.version}: {proto.description}{cite}"))
        except ProtocolError as exc:
            rows.append((entry.name, f"INVALID: {exc}"))
    return rows


def _list_hash(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def build_pairs(task: VerificationTask, dataset: Dataset) -> PairList:
    """Balanced genuine/impostor pairs per condition in folds with identities disjoint across folds.

    Deterministic from ``task.seed`` and the sorted sample list: identities are shuffled once and
    cut into folds; each (condition, fold) draws from its own seeded generator.
    """
    identities = sorted({s.identity for s in dataset.samples})
    if len(identities) < 2 * task.folds:
        raise ProtocolError(
            f"Dataset {dataset.name} has {len(identities)} identities; {task.folds} folds need at "
            f"least {2 * task.folds}."
        )
    order = np.random.default_rng([task.seed, 0]).permutation(len(identities))
    fold_ids = [[identities[j] for j in chunk] for chunk in np.array_split(order, task.folds)]
    by_id_state: dict[tuple[str, bool], list[int]] = {}
    for idx, s in enumerate(dataset.samples):
        by_id_state.setdefault((s.identity, s.masked), []).append(idx)

    half = task.pairs_per_fold // 2
    blocks: list[np.ndarray] = []
    for c_index, cond in enumerate(task.conditions):
        ref_masked, probe_masked = CONDITIONS[cond]
        for fold, ids in enumerate(fold_ids):
            rng = np.random.default_rng([task.seed, 1 + c_index, fold])
            genuine = _genuine_candidates(ids, by_id_state, ref_masked, probe_masked)
            if len(genuine) < half:
                raise ProtocolError(
                    f"Dataset {dataset.name}, condition {cond}, fold {fold}: only {len(genuine)} "
                    f"genuine pairs possible, {half} needed; lower tasks.verification.pairs_per_fold."
                )
            pick = np.sort(rng.choice(len(genuine), size=half, replace=False))
            gen = np.asarray(genuine, dtype=np.int64)[pick]
            imp = _impostor_pairs(ids, by_id_state, ref_masked, probe_masked, half, rng)
            rows = np.concatenate([gen, imp])
            meta = np.column_stack([
                np.r_[np.ones(half, np.int64), np.zeros(half, np.int64)],
                np.full(2 * half, fold), np.full(2 * half, c_index),
            ])
            blocks.append(np.column_stack([rows, meta]))
    table = np.concatenate(blocks)
    keys = [s.key for s in dataset.samples]
    lines = [
        f"{task.conditions[c]}\t{f}\t{keys[r]}\t{keys[p]}\t{lab}" for r, p, lab, f, c in table.tolist()
    ]
    return PairList(
        ref=table[:, 0], probe=table[:, 1], label=table[:, 2], fold=table[:, 3],
        condition=np.asarray(task.conditions, dtype=object)[table[:, 4]], sha256=_list_hash(lines),
    )


def _genuine_candidates(
    ids: list[str], table: dict[tuple[str, bool], list[int]], ref_masked: bool, probe_masked: bool
) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for ident in ids:
        refs = table.get((ident, ref_masked), [])
        probes = table.get((ident, probe_masked), [])
        if ref_masked == probe_masked:
            out.extend((a, b) for i, a in enumerate(refs) for b in refs[i + 1:])
        else:
            out.extend((a, b) for a in refs for b in probes)
    return out


def _impostor_pairs(
    ids: list[str], table: dict[tuple[str, bool], list[int]], ref_masked: bool, probe_masked: bool,
    count: int, rng: np.random.Generator,
) -> np.ndarray:
    refs = [i for i in ids if table.get((i, ref_masked))]
    probes = [i for i in ids if table.get((i, probe_masked))]
    chosen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    for _ in range(count * 50):
        if len(out) == count:
            break
        a, b = refs[rng.integers(len(refs))], probes[rng.integers(len(probes))]
        if a == b:
            continue
        ra = table[(a, ref_masked)]
        pb = table[(b, probe_masked)]
        pair = (ra[rng.integers(len(ra))], pb[rng.integers(len(pb))])
        canon = tuple(sorted(pair)) if ref_masked == probe_masked else pair
        if canon not in chosen:
            chosen.add(canon)
            out.append(pair)
    if len(out) < count:
        raise ProtocolError(f"Could not draw {count} distinct impostor pairs from {len(ids)} identities.")
    return np.asarray(out, dtype=np.int64)


def build_gallery(task: IdentificationTask, dataset: Dataset) -> Gallery:
    """Enrol ``gallery_identities`` identities with unmasked images; all other identities' probes
    are non-mated (open set). Deterministic from ``task.seed`` and the sorted sample list."""
    identities = sorted({s.identity for s in dataset.samples})
    if task.gallery_identities >= len(identities):
        raise ProtocolError(
            f"Dataset {dataset.name} has {len(identities)} identities; gallery_identities "
            f"({task.gallery_identities}) must be smaller to leave non-mated probes."
        )
    rng = np.random.default_rng([task.seed, 0])
    enrolled = {identities[j] for j in rng.permutation(len(identities))[: task.gallery_identities]}
    gallery: list[int] = []
    for ident in sorted(enrolled):
        candidates = [i for i, s in enumerate(dataset.samples) if s.identity == ident and not s.masked]
        if len(candidates) < task.gallery_per_identity:
            raise ProtocolError(f"Identity {ident} has too few unmasked images for the gallery.")
        gallery.extend(sorted(rng.choice(candidates, task.gallery_per_identity, replace=False)))
    in_gallery = set(gallery)
    probes = [
        i for i, s in enumerate(dataset.samples)
        if s.masked == task.probes_masked and i not in in_gallery
    ]
    keys = [s.key for s in dataset.samples]
    lines = [f"G\t{keys[i]}" for i in gallery] + [f"P\t{keys[i]}" for i in probes]
    return Gallery(np.asarray(gallery, np.int64), np.asarray(probes, np.int64), _list_hash(lines))
