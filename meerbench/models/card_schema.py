"""Model cards, schema 2: one YAML file per model naming its architecture, its preprocessing
contract, where its weights come from and what its authors reported (torch-free).

Fields (``baselines/arcface-r50.yaml`` and ``baselines/meer-s/card.yaml`` are complete examples):

- ``schema: 2``, ``name`` (equal to the file or folder name for built-in cards), ``description``;
- ``architecture``: ``iresnet18/34/50/100/200`` or ``mobilefacenet`` (weights: a ``torch.save``
  state dict or a ``.safetensors`` file), ``meer`` (a network trained here, see docs/meer.md),
  ``torchscript``, ``onnx``, ``dlib``, or ``classical`` with ``factory: package.module:callable``;
- ``options``: keyword arguments for the network or the factory (IResNet ``width``; for ``meer``
  the ``MeerArch`` fields);
- ``contract``: the ``FaceModelCfg`` fields (input_size, channels, mean, std, alignment,
  embedding_dim, flip_fusion);
- ``weights``: ``file_name`` (looked for in ``<meerbench home>/weights``) or ``path`` (relative to
  the card), ``url`` + ``sha256`` for ``meerbench weights fetch``, ``page`` for a manual download,
  ``licence``, ``citation``; or ``bundled: <package>`` for files a package installs; ``dtype``,
  ``bytes``, ``parameters`` describe a file trained here; no ``weights`` for classical models.
  A recorded ``sha256`` is checked before the card's own file is loaded;
- ``reported``: numbers published by the model's authors (benchmark, metric, value, source URL,
  note), never numbers measured here;
- ``training`` and ``validation``: how a model trained here was made and selected (written by
  ``meerbench train``); ``notes``.

Version 1 still reads: ``schema: 1`` cards had the same fields, and the ``card.yaml`` that
``meerbench train`` wrote before it wrote schema 2 (no ``schema``; ``architecture`` the
``MeerArch`` mapping; ``weights`` with ``file``) is read as the schema-2 card it means. Every
invalid card is a ``CardError`` naming the file, the field and the value.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meerbench.errors import ConfigError, ProtocolError
from meerbench.models.contract import CardError, FaceModelCfg, WeightsSpec
from meerbench.registry import MODELS
from meerbench.schema import Fields

SCHEMA = 2
IRESNETS = {f"iresnet{d}": d for d in (18, 34, 50, 100, 200)}
ARCHITECTURES = (*IRESNETS, "mobilefacenet", "meer", "torchscript", "onnx", "dlib", "classical")
#: architectures whose model is built from a weights file the card names.
WEIGHT_FILE_ARCHITECTURES = (*IRESNETS, "mobilefacenet", "meer", "torchscript", "onnx")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reported:
    """A number published by the model's authors, with where it was published."""

    benchmark: str
    metric: str
    value: float
    source: str
    note: str = ""


@dataclass(frozen=True)
class Card:
    """One validated card; ``source`` is the file it came from (for error messages)."""

    name: str
    description: str
    architecture: str
    contract: FaceModelCfg
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    factory: str | None = None
    weights: WeightsSpec | None = None
    reported: tuple[Reported, ...] = ()
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def cfg(self) -> FaceModelCfg:
        """The preprocessing contract, with the weights' provenance."""
        return self.contract


@dataclass(frozen=True)
class BrokenCard:
    """Registered in place of a card that does not validate: using it raises the error."""

    error: CardError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def read_card(path: str | Path) -> Card:
    """Load and validate one card file (schema 2, or version 1 read as schema 2)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardError(f"Model card not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CardError(f"Cannot read model card {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        return parse_card(upgrade(data), path)
    except (ProtocolError, ConfigError) as exc:  # Fields and FaceModelCfg name the field
        if isinstance(exc, CardError):
            raise
        text = str(exc)
        raise CardError(text if text.startswith(str(path)) else f"{path}: {text}") from None


def upgrade(data: Any) -> Any:
    """A version-1 card as the schema-2 mapping it means (other data unchanged)."""
    if not isinstance(data, dict):
        return data
    if data.get("schema") == 1:
        return {**data, "schema": SCHEMA}
    if "schema" not in data and isinstance(data.get("architecture"), dict):  # meerbench train
        contract = {k: v for k, v in (data.get("contract") or {}).items() if k != "weights"}
        weights = dict(data.get("weights") or {})
        if "file" in weights:
            weights["path"] = weights.pop("file")
        weights.setdefault("licence", "")
        rest = {k: v for k, v in data.items() if k not in ("architecture", "contract", "weights")}
        return {"schema": SCHEMA, **rest, "architecture": "meer",
                "options": data["architecture"], "contract": contract, "weights": weights}
    return data


def parse_card(data: Any, path: Path) -> Card:
    """Validate a schema-2 card mapping read from ``path``."""
    f = Fields(data, str(path))
    if f.get("schema", int) != SCHEMA:
        raise f.error("schema", f"{SCHEMA} (or 1, read as {SCHEMA})")
    name = f.get("name", str)
    if not NAME.match(name):
        raise f.error("name", f"lower-case letters, digits, '.', '_' or '-', got {name!r}")
    architecture = f.choice("architecture", ARCHITECTURES)
    weights = _weights(f.sub("weights", None), path.parent)
    card = Card(
        name=name,
        description=f.get("description", str),
        architecture=architecture,
        contract=_contract(f.get("contract", dict), weights, architecture),
        source=str(path),
        options=f.get("options", dict, {}),
        factory=f.get("factory", str, None),
        weights=weights,
        reported=tuple(_reported(f)),
        training=f.get("training", dict, {}),
        validation=f.get("validation", dict, {}),
        notes=f.get("notes", str, ""),
    )
    f.finish()
    _check_architecture(card, f)
    return card


def _contract(data: dict[str, Any], weights: WeightsSpec | None, architecture: str
              ) -> FaceModelCfg:
    # Weights trained here are described by the card's training section; a Result records the
    # provenance (licence, citation, URL) of published weights only.
    return FaceModelCfg.from_dict(data, None if architecture == "meer" else weights)


def _weights(w: Fields | None, folder: Path) -> WeightsSpec | None:
    if w is None:
        return None
    bundled = w.get("bundled", str, None)
    local = w.get("path", str, None)
    file_name = w.get("file_name", str, Path(local).name if local else "")
    if not (bundled or file_name):
        raise w.error("file_name", "the weight file's name (or 'path', or 'bundled')")
    spec = WeightsSpec(
        file_name=file_name,
        url=w.get("url", str, None),
        page=w.get("page", str, None),
        sha256=w.get("sha256", str, None),
        path=(folder / Path(local).expanduser()).resolve() if local else None,
        bundled=bundled,
        licence=w.get("licence", str),
        citation=w.get("citation", str, ""),
        dtype=w.get("dtype", str, None),
        bytes=w.positive_int("bytes", None, maximum=2**40),
        parameters=w.positive_int("parameters", None, maximum=2**40),
    )
    w.finish()
    if spec.sha256 is not None and not SHA256.match(spec.sha256):
        raise w.error("sha256", f"64 lower-case hex digits (or null when unknown), got "
                                f"{spec.sha256!r}")
    if spec.file_name and Path(spec.file_name).name != spec.file_name:
        raise w.error("file_name", "a bare file name (use 'path' for a file elsewhere)")
    if bundled and (spec.url or local or file_name):
        raise w.error("bundled", "no url, path or file_name alongside it")
    return spec


def _reported(f: Fields) -> list[Reported]:
    items = f.get("reported", list, [])
    out = []
    for i, item in enumerate(items):
        r = Fields(item, f.source, f"reported[{i}]")
        entry = Reported(r.get("benchmark", str), r.get("metric", str), r.get("value", float),
                         r.get("source", str), r.get("note", str, ""))
        r.finish()
        if not entry.source.startswith(("http://", "https://")):
            raise r.error("source", f"the URL where the number was published, got "
                                    f"{entry.source!r}")
        out.append(entry)
    return out


def _check_architecture(card: Card, f: Fields) -> None:
    arch, weights = card.architecture, card.weights
    if arch == "classical":
        if card.factory is None or ":" not in card.factory:
            raise f.error("factory", "'package.module:callable' for architecture classical")
        if weights is not None:
            raise f.error("weights", "nothing (classical models have no weights file)")
        return
    if card.factory is not None:
        raise f.error("factory", "nothing (only architecture classical takes a factory)")
    if arch == "dlib":
        if weights is None or not weights.bundled:
            raise f.error("weights", "a mapping with 'bundled' (the package shipping dlib's files)")
    elif weights is None or weights.bundled:
        raise f.error("weights", f"a mapping with 'file_name' for architecture {arch}")


def cards_dir() -> Path:
    """The built-in cards: package ``meerbench.baselines``, or ``baselines/`` of a source tree."""
    spec = importlib.util.find_spec("meerbench.baselines")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "baselines"


def get_card(name: str) -> Card:
    """The card registered as ``name`` (unknown names fail with the known ones)."""
    obj = MODELS.get(name)
    if isinstance(obj, BrokenCard):
        raise obj.error
    if not isinstance(obj, Card):
        raise CardError(f"Model {name} is not defined by a model card; it has no weights to "
                        "manage here.")
    return obj
