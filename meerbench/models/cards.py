"""Models from cards: build the model a card describes, register cards into ``MODELS`` and list
them with their weights status.

The card schema (fields, validation, version 1) is ``meerbench.models.card_schema``. The built-in
cards live in the repository's ``baselines/`` folder (shipped as the package
``meerbench.baselines``): ``NAME.yaml`` for published models, ``NAME/card.yaml`` beside the
weights of a model trained here. ``register_builtins`` registers them all when ``MODELS`` is
first used; reading a card needs only PyYAML, and torch loads when a model is built. A card file
elsewhere loads with ``model_from_card(path)`` or registers with ``register_card_file(path)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meerbench.errors import ModelError
from meerbench.models.card_schema import IRESNETS, BrokenCard, Card, cards_dir, read_card
from meerbench.models.contract import CardError, FaceModelCfg
from meerbench.models.weights import bundled_dlib_files, local_weights, resolve_weights
from meerbench.registry import MODELS, Registry

if TYPE_CHECKING:
    from torch import nn

    from meerbench.models.base import FaceModel

#: the ``meer`` alias: the best MEER checkpoint present (see ``meerbench.models.meer.meer``).
MEER_ALIAS = ("meer", "meerbench.models.meer:meer",
              "The best available MEER checkpoint (meer-r100, meer-r50, else meer-s)")


def build_model(card: Card, weights: str | Path | None = None, **options: Any) -> FaceModel:
    """The card's model; ``weights`` overrides where its weight file is read from."""
    arch, opts = card.architecture, {**card.options, **options}
    if arch in ("classical", "dlib") and weights is not None:
        raise ModelError(f"Model {card.name} takes no weights file ({arch}).")
    if arch == "classical":
        return _classical(card, opts)
    if options and arch == "meer" or opts and arch in ("torchscript", "onnx", "dlib"):
        raise ModelError(f"{card.source}: field 'options': architecture {arch} takes none here, "
                         f"got {', '.join(sorted(options or opts))}.")
    if arch == "meer":
        from meerbench.models.meer import from_card

        return from_card(card, weights)
    if arch == "dlib":
        from meerbench.models.adapters import DlibFaceModel

        return DlibFaceModel(card.name, card.contract)
    cfg = card.contract
    path = resolve_weights(card, weights)
    from meerbench.models.adapters import OnnxFaceModel, checkpoint_model, torchscript_model

    if arch == "torchscript":
        return torchscript_model(card.name, cfg, path)
    if arch == "onnx":
        return OnnxFaceModel(card.name, cfg, path)
    return checkpoint_model(card.name, cfg, network(arch, cfg, opts, card.source), path)


def network(architecture: str, cfg: FaceModelCfg, opts: dict[str, Any], source: str
            ) -> nn.Module:
    """The untrained network of a state-dict ``architecture`` (IResNet or MobileFaceNet) for the
    contract ``cfg``; ``source`` (a card or weights file) names where a bad value came from."""
    h, w = cfg.input_size
    try:
        if architecture in IRESNETS:
            from meerbench.models.iresnet import iresnet

            if h != w:
                raise ModelError(f"{source}: field 'contract.input_size': IResNet needs a "
                                 f"square input, got {h}x{w}.")
            return iresnet(IRESNETS[architecture], input_size=h,
                           embedding_dim=cfg.embedding_dim, **opts)
        from meerbench.models.mobilefacenet import mobilefacenet

        if (h, w) != (112, 112):
            raise ModelError(f"{source}: field 'contract.input_size': MobileFaceNet's 7x7 "
                             f"head needs 112x112 input, got {h}x{w}.")
        return mobilefacenet(cfg.embedding_dim, **opts)
    except TypeError as exc:
        raise ModelError(f"{source}: field 'options': {exc}.") from None


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
    got, want = model.cfg.to_dict(), card.contract.to_dict()
    diff = ", ".join(f"{k}: card {want[k]!r}, model {got[k]!r}" for k in want
                     if k not in ("weights", "embedding_dim") and got[k] != want[k])
    if diff:
        raise ModelError(f"{card.source}: field 'contract' disagrees with {card.factory}: {diff}.")
    return model


@dataclass(frozen=True)
class TrainedCheckpoint:
    """The registry's factory of a model trained here: ``baselines_dir()/folder`` is read when the
    model is built, so ``MEERBENCH_BASELINES`` can point at your own checkpoints."""

    folder: str

    def __call__(self) -> FaceModel:
        from meerbench.models.meer import baselines_dir, load_trained

        return load_trained(baselines_dir() / self.folder)


def model_from_card(path: str | Path, weights: str | Path | None = None,
                    **options: Any) -> FaceModel:
    """Build the model described by the card file at ``path``."""
    return build_model(read_card(path), weights, **options)


def register_card_file(path: str | Path, origin: str | None = None) -> str:
    """Register a card file into ``MODELS``; returns the model name."""
    card = read_card(path)
    MODELS.add(card.name, card, card.description, origin=origin or str(path))
    return card.name


def register_model(model: str | Path | Callable[..., FaceModel], name: str | None = None,
                   description: str = "") -> Any:
    """Make a model known to ``load_model``: a card file (returns its name), or a factory, also
    as a decorator (``@register_model`` registers it as its ``__name__``; returns it)."""
    if isinstance(model, str | Path):
        return register_card_file(model)
    text = description or ((model.__doc__ or "").strip().splitlines() or [""])[0]
    MODELS.add(name or model.__name__, model, text, origin=model.__module__)
    return model


def register_builtins(registry: Registry) -> None:
    """Register every built-in card of ``cards_dir()`` (an invalid one registers as broken),
    every checkpoint trained here (``NAME/card.yaml``) and the ``meer`` alias."""
    folder = cards_dir()
    for path in sorted(folder.glob("*.yaml")):
        try:
            card = read_card(path)
            if card.name != path.stem:
                raise CardError(f"{path}: field 'name': expected '{path.stem}' (the file name), "
                                f"got '{card.name}'.")
        except CardError as exc:
            registry.add(path.stem, BrokenCard(exc), f"INVALID card: {exc}", origin=str(path))
        else:
            registry.add(card.name, card, card.description, origin=str(path))
    for path in sorted(folder.glob("*/card.yaml")):
        name = path.parent.name
        try:
            description = read_card(path).description
        except CardError as exc:
            registry.add(name, BrokenCard(exc), f"INVALID card: {exc}", origin=str(path))
        else:
            registry.add(name, TrainedCheckpoint(name), description, origin=str(path))
    registry.add_lazy(*MEER_ALIAS)


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
    entry = MODELS.entry(name)
    if isinstance(entry.obj, Card):
        return f"{entry.description} {weights_status(entry.obj)}"
    return entry.description


def describe_models() -> list[tuple[str, str]]:
    """(name, description) for ``meerbench list models``, with weights presence checked now."""
    return [(entry.name, describe(entry.name)) for entry in MODELS.entries()]
