"""The face-model contract: what a network expects to see, as data (importing this does not
import torch).

Most "cannot reproduce" reports in face recognition are preprocessing mismatches, so the contract
is data: ``FaceModelCfg.preprocess`` applies it, every Result records it and it is part of the
embedding-cache key. This module owns the contract's vocabulary (``CHANNELS``, ``FLIP_FUSION``,
the ArcFace template behind the alignment ``arcface-112``) and its one validation: a bad value is
a ``ConfigError`` naming the field and the value. Model cards, the engine and training all read
it from here; torch is imported only when pixels are processed.
"""

from __future__ import annotations

import hashlib
import json
import operator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meerbench.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch

CHANNELS = ("RGB", "BGR", "GRAY")
FLIP_FUSION = ("none", "sum", "concat")
#: The alignment every protocol prepares: faces whose five landmarks lie on ``ARCFACE_112_TEMPLATE``
#: (aligned datasets come so; ``preprocessing.aligned: false`` warps them so).
ARCFACE_112 = "arcface-112"
#: ArcFace's 112x112 five-point template, (x, y) pixel indices: image-left eye centre, image-right
#: eye centre, nose tip, image-left mouth corner, image-right mouth corner.
ARCFACE_112_TEMPLATE = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


class CardError(ModelError, ConfigError):
    """A model card or contract value is invalid: names the file, the field and the value."""


@dataclass(frozen=True)
class WeightsSpec:
    """Where a model's weights come from: a file (by name in the weights folder, by ``path``
    relative to its card, or by ``url`` + ``sha256``; ``page`` for a manual download), or files a
    package ships (``bundled``). ``dtype``, ``bytes`` and ``parameters`` describe a file trained
    here."""

    file_name: str = ""
    url: str | None = None
    page: str | None = None
    sha256: str | None = None
    path: Path | None = None
    bundled: str | None = None
    licence: str = ""
    citation: str = ""
    dtype: str | None = None
    bytes: int | None = None
    parameters: int | None = None

    def provenance(self) -> dict[str, Any]:
        """What a Result records about the weights (the tensors are identified by their own
        sha256, ``weights_sha256``; a local path is never recorded)."""
        return {"url": self.url or self.page, "sha256": self.sha256, "path": None,
                "licence": self.licence, "citation": self.citation}


@dataclass(frozen=True)
class FaceModelCfg:
    """Preprocessing contract: what the network expects to see."""

    input_size: tuple[int, int] = (112, 112)
    channels: str = "RGB"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    alignment: str = ARCFACE_112
    embedding_dim: int = 512
    flip_fusion: str = "none"
    weights: WeightsSpec | None = None

    def __post_init__(self) -> None:
        for name in ("input_size", "mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple):
                raise _invalid(name, "a list", value)
            object.__setattr__(self, name, tuple(value))
        size = self.input_size
        if len(size) != 2 or not all(_is_int(v) and v > 0 for v in size):
            raise _invalid("input_size", "two positive integers [height, width]", list(size))
        if self.channels not in CHANNELS:
            raise _invalid("channels", f"one of {', '.join(CHANNELS)}", self.channels)
        n = 1 if self.channels == "GRAY" else 3
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != n or not all(_is_number(v) for v in values):
                raise _invalid(name, f"{n} number(s) for channels {self.channels}", list(values))
        if not all(s > 0 for s in self.std):
            raise _invalid("std", "positive numbers", list(self.std))
        if not isinstance(self.alignment, str) or not self.alignment:
            raise _invalid("alignment", f"the name of an alignment (e.g. {ARCFACE_112})",
                           self.alignment)
        if not (_is_int(self.embedding_dim) and self.embedding_dim > 0):
            raise _invalid("embedding_dim", "a positive integer", self.embedding_dim)
        if self.flip_fusion not in FLIP_FUSION:
            raise _invalid("flip_fusion", f"one of {', '.join(FLIP_FUSION)}", self.flip_fusion)

    @classmethod
    def from_dict(cls, data: dict[str, Any], weights: WeightsSpec | None = None) -> FaceModelCfg:
        """The contract of a card's ``contract`` mapping (unknown or missing fields fail)."""
        known = [f.name for f in fields(cls) if f.name != "weights"]
        unknown = sorted(set(data) - set(known), key=str)
        if unknown:
            raise ConfigError(f"field 'contract.{unknown[0]}': unknown; the contract's fields are "
                              f"{', '.join(known)}.")
        missing = [name for name in known if name not in data and name != "flip_fusion"]
        if missing:
            raise ConfigError(f"field 'contract.{missing[0]}': missing (a contract states "
                              f"{', '.join(known)}).")
        return cls(**data, weights=weights)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "weights"}
        out["weights"] = None if self.weights is None else self.weights.provenance()
        return out

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def preprocess(self, images: torch.Tensor, resize: bool = True) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB -> float32 (N, C, h, w): channels reordered (or grey), resized
        to ``input_size`` (unless ``resize`` is False) and normalised ``(x / 255 - mean) / std``.

        Training applies the same function to its cached images, so train and test see the same
        pixels."""
        import torch

        x = images.permute(0, 3, 1, 2).float()
        if self.channels == "BGR":
            x = x.flip(1)
        elif self.channels == "GRAY":
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
            x = (x * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
        if resize:
            x = resize_to(x, self.input_size)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x / 255.0 - mean) / std


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The contract's resize: float (N, C, H, W) -> (N, C, *size), antialiased bilinear (a no-op
    at the right size)."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)


def check_alignment(cfg: FaceModelCfg, preparation: str) -> None:
    """Refuse a model whose contract expects faces aligned otherwise than the protocol prepares
    them (``preparation``, e.g. ``arcface-112``): its embeddings would measure the misalignment."""
    if cfg.alignment != preparation:
        raise ModelError(f"The model's contract expects faces aligned as '{cfg.alignment}', but "
                         f"the protocol prepares '{preparation}'; evaluate it on a protocol "
                         f"prepared as '{cfg.alignment}' or fix the contract's alignment.")


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _invalid(field: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"field 'contract.{field}': expected {expected}, got {value!r}.")
