"""Model cards: YAML files that name an architecture, its preprocessing contract, where its weights
come from and what its authors reported.

Fields (``baselines/arcface-r50.yaml`` is a complete example):

- ``schema: 1``, ``name`` (equal to the file name for built-in cards), ``description``;
- ``architecture``: ``iresnet18/34/50/100/200`` or ``mobilefacenet`` (weights: a ``torch.save``
  state dict or a ``.safetensors`` file), ``torchscript``, ``onnx``, ``dlib``, or ``classical``
  with ``factory: package.module:callable``;
- ``options``: keyword arguments for the network or the factory (e.g. IResNet ``width``);
- ``contract``: the ``FaceModelCfg`` fields (input_size, channels, mean, std, alignment,
  embedding_dim, flip_fusion);
- ``weights``: ``file_name`` (looked for in ``<meerbench home>/weights``) or ``path`` (relative to
  the card), ``url`` + ``sha256`` for ``meerbench weights fetch``, ``page`` for a manual download,
  ``licence``, ``citation``; or ``bundled: <package>`` for files a package installs; no
  ``weights`` for classical models;
- ``reported``: numbers published by the model's authors (benchmark, metric, value, source URL,
  note), never numbers measured here;
- ``notes``.

The built-in cards live in the repository's ``baselines/`` folder (shipped as the package
``meerbench.baselines``). Each registers into ``MODELS`` under its name when ``meerbench.models``
is imported; reading a card needs only PyYAML, the network and torch load when the model is built.
A card file elsewhere loads with ``model_from_card(path)`` or registers with
``register_card_file(path)``. Invalid cards fail with the file and the field at fault.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from meerbench.errors import ModelError, ProtocolError
from meerbench.models.weights import bundled_dlib_files, local_weights, resolve_weights
from meerbench.registry import MODELS
from meerbench.schema import Fields

if TYPE_CHECKING:
    from torch import nn

    from meerbench.models.base import FaceModel, FaceModelCfg

SCHEMA = 1
IRESNETS = {f"iresnet{d}": d for d in (18, 34, 50, 100, 200)}
ARCHITECTURES = (*IRESNETS, "mobilefacenet", "torchscript", "onnx", "dlib", "classical")
# The same values as meerbench.models.base.CHANNELS / FLIP_FUSION (base imports torch).
CHANNELS = ("RGB", "BGR", "GRAY")
FLIP_FUSION = ("none", "sum", "concat")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class WeightsSpec:
    """A card's ``weights``: a file (URL or manual download page) or files bundled by a package."""

    file_name: str = ""
    url: str | None = None
    page: str | None = None
    sha256: str | None = None
    path: Path | None = None
    bundled: str | None = None
    licence: str = ""
    citation: str = ""


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
    contract: dict[str, Any]
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    factory: str | None = None
    weights: WeightsSpec | None = None
    reported: tuple[Reported, ...] = ()
    notes: str = ""

    def cfg(self) -> FaceModelCfg:
        """The preprocessing contract, with the weights' provenance."""
        from meerbench.models.base import FaceModelCfg, WeightsSource

        source = None
        if self.weights is not None:
            source = WeightsSource(url=self.weights.url or self.weights.page,
                                   sha256=self.weights.sha256, licence=self.weights.licence,
                                   citation=self.weights.citation)
        try:
            return FaceModelCfg(**self.contract, weights=source)
        except ValueError as exc:
            raise ModelError(f"{self.source}: field 'contract': {exc}.") from None


def read_card(path: str | Path) -> Card:
    """Load and validate one card file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"Model card not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML: {exc}") from None
    try:
        return _parse_card(data, path)
    except ProtocolError as exc:  # Fields reports with ProtocolError; here it is a model's card
        raise ModelError(str(exc)) from None


def _parse_card(data: Any, path: Path) -> Card:
    f = Fields(data, str(path))
    if f.get("schema", int) != SCHEMA:
        raise f.error("schema", f"{SCHEMA}")
    name = f.get("name", str)
    if not NAME.match(name):
        raise f.error("name", "lower-case letters, digits, '.', '_' or '-'")
    architecture = f.choice("architecture", ARCHITECTURES)
    card = Card(
        name=name,
        description=f.get("description", str),
        architecture=architecture,
        contract=_contract(f.sub("contract")),
        source=str(path),
        options=f.get("options", dict, {}),
        factory=f.get("factory", str, None),
        weights=_weights(f.sub("weights", None), path.parent),
        reported=tuple(_reported(f)),
        notes=f.get("notes", str, ""),
    )
    f.finish()
    _check_architecture(card, f)
    return card


def _contract(c: Fields | None) -> dict[str, Any]:
    assert c is not None
    size = c.get("input_size", list)
    if len(size) != 2 or not all(type(v) is int and v > 0 for v in size):
        raise c.error("input_size", f"two positive integers [height, width], got {size!r}")
    channels = c.choice("channels", CHANNELS)
    n = 1 if channels == "GRAY" else 3
    mean, std = _numbers(c, "mean", n), _numbers(c, "std", n)
    if any(s <= 0 for s in std):
        raise c.error("std", f"positive numbers, got {std!r}")
    out = dict(input_size=tuple(size), channels=channels, mean=mean, std=std,
               alignment=c.get("alignment", str), embedding_dim=c.positive_int("embedding_dim"),
               flip_fusion=c.choice("flip_fusion", FLIP_FUSION, "none"))
    c.finish()
    return out


def _numbers(c: Fields, name: str, n: int) -> tuple[float, ...]:
    values = c.get(name, list)
    if len(values) != n or not all(type(v) in (int, float) for v in values):
        raise c.error(name, f"{n} number(s) for channels {c.data.get('channels')}, got {values!r}")
    return tuple(float(v) for v in values)


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
    )
    w.finish()
    if spec.sha256 is not None and not SHA256.match(spec.sha256):
        raise w.error("sha256", "64 lower-case hex digits (or null when unknown)")
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
            raise r.error("source", "the URL where the number was published")
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


def build_model(card: Card, weights: str | Path | None = None, **options: Any) -> FaceModel:
    """The card's model; ``weights`` overrides where its weight file is read from."""
    arch, opts = card.architecture, {**card.options, **options}
    if arch in ("classical", "dlib") and weights is not None:
        raise ModelError(f"Model {card.name} takes no weights file ({arch}).")
    if arch == "classical":
        return _classical(card, opts)
    if opts and arch in ("torchscript", "onnx", "dlib"):
        raise ModelError(f"{card.source}: field 'options': architecture {arch} takes none, got "
                         f"{', '.join(sorted(opts))}.")
    if arch == "dlib":
        from meerbench.models.adapters import DlibFaceModel

        return DlibFaceModel(card.name, card.cfg())
    cfg = card.cfg()
    path = resolve_weights(card, weights)
    from meerbench.models import adapters

    if arch == "torchscript":
        return adapters.torchscript_model(card.name, cfg, path)
    if arch == "onnx":
        return adapters.OnnxFaceModel(card.name, cfg, path)
    return adapters.checkpoint_model(card.name, cfg, _network(card, cfg, opts), path)


def _network(card: Card, cfg: FaceModelCfg, opts: dict[str, Any]) -> nn.Module:
    h, w = cfg.input_size
    try:
        if card.architecture in IRESNETS:
            from meerbench.models.iresnet import iresnet

            if h != w:
                raise ModelError(f"{card.source}: field 'contract.input_size': IResNet needs a "
                                 f"square input, got {h}x{w}.")
            return iresnet(IRESNETS[card.architecture], input_size=h,
                           embedding_dim=cfg.embedding_dim, **opts)
        from meerbench.models.mobilefacenet import mobilefacenet

        if (h, w) != (112, 112):
            raise ModelError(f"{card.source}: field 'contract.input_size': MobileFaceNet's 7x7 "
                             f"head needs 112x112 input, got {h}x{w}.")
        return mobilefacenet(cfg.embedding_dim, **opts)
    except TypeError as exc:
        raise ModelError(f"{card.source}: field 'options': {exc}.") from None


def _classical(card: Card, opts: dict[str, Any]) -> FaceModel:
    module_name, _, attr = (card.factory or "").partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"{card.source}: field 'factory': cannot import {card.factory}: "
                         f"{exc}.") from None
    try:
        model = factory(name=card.name, **opts)
    except TypeError as exc:
        raise ModelError(f"{card.source}: field 'options': {exc}.") from None
    # embedding_dim may follow options or fitting (Fisherfaces); the rest must match the card.
    got, want = model.cfg.to_dict(), card.cfg().to_dict()
    diff = ", ".join(f"{k}: card {want[k]!r}, model {got[k]!r}" for k in want
                     if k not in ("weights", "embedding_dim") and got[k] != want[k])
    if diff:
        raise ModelError(f"{card.source}: field 'contract' disagrees with {card.factory}: {diff}.")
    return model


@dataclass(frozen=True)
class CardFactory:
    """The registry's factory for a card: ``load_model(name, weights=PATH, **options)``."""

    card: Card

    def __call__(self, weights: str | Path | None = None, **options: Any) -> FaceModel:
        return build_model(self.card, weights, **options)


@dataclass(frozen=True)
class BrokenCard:
    """Registered in place of a card that does not validate: using it raises the error."""

    error: ModelError

    def __call__(self, *args: Any, **kwargs: Any) -> FaceModel:
        raise self.error


def model_from_card(path: str | Path, weights: str | Path | None = None,
                    **options: Any) -> FaceModel:
    """Build the model described by the card file at ``path``."""
    return build_model(read_card(path), weights, **options)


def register_card_file(path: str | Path, origin: str | None = None) -> str:
    """Register a card file into ``MODELS``; returns the model name."""
    card = read_card(path)
    MODELS.add(card.name, CardFactory(card), card.description, origin=origin or str(path))
    return card.name


def cards_dir() -> Path:
    """The built-in cards: package ``meerbench.baselines``, or ``baselines/`` of a source tree."""
    spec = importlib.util.find_spec("meerbench.baselines")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "baselines"


def register_builtin_cards() -> None:
    """Register every ``*.yaml`` card of ``cards_dir()``; an invalid one registers as broken."""
    for path in sorted(cards_dir().glob("*.yaml")):
        try:
            card = read_card(path)
            if card.name != path.stem:
                raise ModelError(f"{path}: field 'name': expected '{path.stem}' (the file name), "
                                 f"got '{card.name}'.")
        except ModelError as exc:
            MODELS.add(path.stem, BrokenCard(exc), f"INVALID card: {exc}")
        else:
            MODELS.add(card.name, CardFactory(card), card.description)


def get_card(name: str) -> Card:
    """The card registered as ``name`` (unknown names fail with the known ones)."""
    import meerbench.models  # noqa: F401 - registers the built-in cards

    obj = MODELS.entry(name).load()
    if isinstance(obj, BrokenCard):
        raise obj.error
    if not isinstance(obj, CardFactory):
        raise ModelError(f"Model {name} is not defined by a model card; it has no weights to "
                         "manage here.")
    return obj.card


def weights_status(card: Card) -> str:
    """``[weights: present]``, ``[weights: missing — ...]`` or ``[no weights needed]``, now."""
    spec = card.weights
    if spec is None:
        return "[no weights needed]"
    if spec.bundled:
        if bundled_dlib_files() is not None:
            return "[weights: present]"
        return "[weights: missing — pip install 'meerbench[dlib]']"
    if local_weights(card) is not None:
        return "[weights: present]"
    return f"[weights: missing — meerbench weights fetch {card.name}]"


def describe(name: str) -> str:
    """One model's listing text: the description, then its weights status for a card."""
    import meerbench.models  # noqa: F401 - registers the built-in cards

    entry = MODELS.entry(name)
    if isinstance(entry.obj, CardFactory):
        return f"{entry.description} {weights_status(entry.obj.card)}"
    return entry.description


def describe_models() -> list[tuple[str, str]]:
    """(name, description) for ``meerbench list models``, with weights presence checked now."""
    import meerbench.models  # noqa: F401 - registers the built-in cards

    return [(entry.name, describe(entry.name)) for entry in MODELS.entries()]

