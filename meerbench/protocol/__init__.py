"""Protocols: versioned YAML definitions of a benchmark, validated on load.

A protocol names its dataset (a registered format plus options), its preprocessing, an optional
training split for baselines that fit, its tasks and their metric settings. This module reads the
schema; each section under ``tasks:`` (and its ``metrics:`` settings) is read by the task type of
that name (:mod:`meerbench.tasks`), found in :data:`meerbench.registry.TASKS`. The lists the
tasks draw (pairs, galleries) are built in :mod:`meerbench.protocol.sampling`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from meerbench.data.dataset import DatasetSpec
from meerbench.data.formats.inputs import read_yaml
from meerbench.errors import ProtocolError
from meerbench.protocol.sampling import (
    CONDITIONS,
    DenseVerificationTask,
    Gallery,
    IdentificationTask,
    PairList,
    VerificationTask,
    build_dense_pairs,
    build_gallery,
    build_pairs,
)
from meerbench.registry import PROTOCOLS, TASKS, Registry
from meerbench.schema import Fields

__all__ = ["CONDITIONS", "DenseVerificationTask", "Gallery", "IdentificationTask", "PairList",
           "Protocol", "SyntheticMasking", "VerificationTask", "build_dense_pairs",
           "build_gallery", "build_pairs", "load_protocol", "parse_protocol", "task_type",
           "task_types"]

SCHEMA_VERSION = 1

def register_builtin_tasks(registry: Registry) -> None:
    """The built-in task types, in report order, as lazy ``"module:attr"`` entries of
    :data:`~meerbench.registry.TASKS` (the task modules sit above this one and import it)."""
    for name, what in (("verification", "1:1 pairs: accuracy, AUC, EER, TAR@FAR"),
                       ("verification_dense", "1:1, every genuine pair and millions of "
                                              "impostors: TAR@FAR to 1e-5, EER, AUC"),
                       ("identification", "1:N: CMC, mAP, open-set DIR@FPIR"),
                       ("restoration", "restored faces: PSNR, SSIM, LPIPS, FID, identity"),
                       ("operational", "FNMR at a threshold set on UMR-UMP impostors at FMR "
                                       "targets; mask penalty")):
        registry.add_lazy(name, f"meerbench.tasks.{name}:{name.upper()}", what)


def task_type(name: str) -> Any:
    """The task type registered as ``name`` (a protocol section of that name)."""
    return TASKS.get(name)


def task_types() -> list[Any]:
    """Every registered task type, in report order: built-ins, then plugins and
    :func:`meerbench.tasks.register_task` additions."""
    return TASKS.loaded()


@dataclass(frozen=True)
class SyntheticMasking:
    """Occluders rendered onto a real dataset's unmasked faces (reproducible from seed and key)."""

    seed: int
    families: tuple[str, ...]
    landmarks: str = "auto"


@dataclass(frozen=True)
class Protocol:
    """A validated protocol. ``sha256`` hashes the file's canonical content; ``raw`` is the
    mapping as given (it goes into every Result); ``tasks`` maps each task section, in the
    protocol's order, to the config its task type read from it; ``metrics`` holds the raw metric
    settings per task (checked on load by the task type)."""

    id: str
    version: int
    description: str
    citation: str
    dataset: DatasetSpec
    aligned: bool
    aligner: str
    masking: SyntheticMasking | None
    train: DatasetSpec | None
    tasks: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    published: dict[str, Any]
    source: str
    sha256: str
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "sha256": self.sha256,
                "source": self.source}


def parse_protocol(data: Any, source: str) -> Protocol:
    """Validate a protocol mapping; ``source`` (a file name) appears in every error."""
    top = Fields(data, source)
    schema = top.get("schema", int, SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise top.error("schema", f"{SCHEMA_VERSION} (the schema this meerbench reads)")
    pid = top.name("id")
    version = top.positive_int("version")
    description = top.get("description", str)
    citation = top.get("citation", str, "")
    published = top.get("published", dict, {})

    dataset = _dataset_spec(top.sub("dataset"), pid)

    pre = top.sub("preprocessing", {})
    aligned = pre.get("aligned", bool, True)
    aligner = pre.get("aligner", str, "dlib")
    pre.finish()
    masking_fields = top.sub("masking", None)
    masking = _masking(masking_fields) if masking_fields else None

    train_fields = top.sub("train", None)
    train = _dataset_spec(train_fields, f"{pid}-train") if train_fields else None

    types = task_types()
    sections = top.sub("tasks")
    parsed = {}
    for kind in types:
        if (fields := sections.sub(kind.name, None)) is not None:
            parsed[kind.name] = kind.parse(fields)
            fields.finish()
    sections.finish()
    if not parsed:
        raise sections.error("", f"at least one of {', '.join(t.name for t in types)}")
    tasks = {name: parsed[name] for name in sections.data if name in parsed}  # protocol's order

    metrics_fields = top.sub("metrics", {})
    metrics = {t.name: metrics_fields.get(t.name, dict, {}) for t in types if t.settings}
    metrics_fields.finish()
    for kind in types:
        if kind.settings:
            _check_settings(kind, metrics[kind.name], source)
    top.finish()

    canonical = yaml.safe_dump(data, sort_keys=True).encode()
    return Protocol(
        id=pid, version=version, description=description, citation=citation, dataset=dataset,
        aligned=aligned, aligner=aligner, masking=masking, train=train, tasks=tasks,
        metrics=metrics, published=published, source=source,
        sha256=hashlib.sha256(canonical).hexdigest(), raw=dict(data),
    )


def _check_settings(kind: Any, settings: Mapping[str, Any], source: str) -> None:
    try:
        kind.settings.from_dict(settings)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"{source}: field 'metrics.{kind.name}': {exc}") from None


def _masking(fields: Fields) -> SyntheticMasking:
    from meerbench.data.render.occluders import SEEN_FAMILIES, UNSEEN_FAMILIES

    named = {"seen": tuple(SEEN_FAMILIES), "unseen": tuple(UNSEEN_FAMILIES)}
    raw = fields.get("families", (str, list), "seen")
    known = named["seen"] + named["unseen"]
    if isinstance(raw, list):
        families = fields.unique_list("families", known)
    elif raw in named:
        families = named[raw]
    else:
        raise fields.error("families", f"'seen', 'unseen' or a list drawn from {', '.join(known)}")
    spec = SyntheticMasking(fields.seed("seed"), families,
                            fields.choice("landmarks", ("auto", "template", "dlib68"), "auto"))
    fields.finish()
    return spec


def _dataset_spec(fields: Fields, default_name: str) -> DatasetSpec:
    spec = DatasetSpec(fields.get("format", str), fields.name("name", default_name),
                       fields.get("options", dict, {}))
    fields.finish()
    return spec


def read_protocol_file(path: Path) -> Protocol:
    """Load and validate one protocol YAML file."""
    data = read_yaml(path, "protocol file", ProtocolError)
    return parse_protocol(data, str(path))


def _register_builtin_protocols() -> None:
    for item in sorted(resources.files("meerbench.protocols").iterdir(), key=lambda p: p.name):
        if item.name.endswith(".yaml"):
            path = Path(str(item))
            PROTOCOLS.add(path.stem, path)


_register_builtin_protocols()


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A protocol by registered name, or a YAML file by path (anything ending in .yaml/.yml).

    ``name@N`` asks for version N: the registered ``name@N`` (a kept earlier version, e.g.
    ``synthmask@1``) or ``name`` itself when that is version N; anything else is an error naming
    the versions there are. A bare name is its newest version."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return read_protocol_file(Path(text))
    base, at, version = text.rpartition("@")
    if at and version.isdigit() and base:
        proto = _load_registered(text) if text in PROTOCOLS else load_protocol(base)
        if (proto.id, proto.version) != (base, int(version)):
            if text in PROTOCOLS:
                raise ProtocolError(f"{proto.source}: registered as {text} but holds {proto.id} "
                                    f"version {proto.version}")
            kept = [n for n in PROTOCOLS.names() if n.startswith(f"{base}@")]
            raise ProtocolError(f"Protocol {base} has no version {version}: {base} is version "
                                f"{proto.version}" + (f"; kept: {', '.join(kept)}" if kept else ""))
        return proto
    return _load_registered(text)


def _load_registered(text: str) -> Protocol:
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
