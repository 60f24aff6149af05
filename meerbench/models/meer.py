"""MEER and its same-encoder baselines: one configurable network, one inference wrapper.

MEER (arXiv 2311.11512) is known here only from its abstract: a mask-decoupling module that
separates mask from identity information, a generator trained jointly with recognition that
restores the unmasked face, and an id-preserving loss that feeds the restored face back into the
recognizer. Everything below that the abstract does not fix is this project's choice and is
documented in ``docs/meer.md``.

``MeerNet`` covers the four trained models with one IResNet encoder:

- ``decoupling="none"``: the plain IResNet (``arcface-s``, ``arcface-s-maskaug``);
- ``decoupling="from"``: a FROM-style feature mask (sigmoid, same shape as the last feature map)
  multiplied onto the features, plus an occluder-family head (``from-s``);
- ``decoupling="meer"``: identity and mask branches split from the last feature map; the mask
  branch predicts the occluder map (through a small FPN over layer4/3/2) and the occluder family;
  the identity branch is gated by the predicted visibility ``1 - mask``; with ``generator`` a
  U-Net-style decoder restores the unmasked face from the gated identity features and from
  encoder skips gated the same way (only visible regions pass);
- ``decoupling="none"`` with ``generator``: MEER without its decoupling module (an ablation). The
  recognizer is the plain IResNet; the generator brings its own occluder-map head (the mask
  branch's FPN over the raw encoder features, without the mask-feature split and the family head)
  and restores from the ungated features, so the model still restores blind and can be refined
  with the restored face.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from meerbench.data.render.occluders import SEEN_FAMILIES
from meerbench.errors import ConfigError, ModelError
from meerbench.models.base import TorchFaceModel
from meerbench.models.card_schema import Card, cards_dir, read_card
from meerbench.models.contract import ARCFACE_112, CardError, FaceModelCfg
from meerbench.models.iresnet import iresnet
from meerbench.models.weights import load_checkpoint, resolve_weights

DECOUPLING = ("none", "from", "meer")
#: occluder-family classes of the mask branch: the seen families, then "none" (unmasked).
FAMILY_CLASSES: tuple[str, ...] = (*SEEN_FAMILIES, "none")


@dataclass(frozen=True)
class MeerArch:
    """Architecture of a ``MeerNet``; stored in every card so checkpoints rebuild themselves."""

    depth: int = 18
    width: float = 0.5
    input_size: int = 64
    embedding_dim: int = 512
    decoupling: str = "meer"
    generator: bool = True
    generator_width: int = 16
    mask_width: int = 32
    families: tuple[str, ...] = FAMILY_CLASSES

    def __post_init__(self) -> None:
        if self.decoupling not in DECOUPLING:
            raise ConfigError(f"field 'decoupling': expected one of {', '.join(DECOUPLING)}, got "
                              f"{self.decoupling!r}.")
        if self.generator and self.decoupling == "from":
            raise ConfigError("field 'generator': expected false with decoupling 'from' (its "
                              "feature gate gives no occluder map to composite the restored face "
                              "with); use decoupling 'meer', or 'none' for MEER without "
                              "decoupling.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeerArch:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"field '{unknown[0]}': unknown; the architecture's fields are "
                              f"{', '.join(sorted(known))}.")
        values = dict(data)
        if "families" in values:
            values["families"] = tuple(values["families"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["families"] = list(self.families)
        return out


@dataclass
class Encoded:
    """Everything the training losses need from one encoder pass."""

    embedding: torch.Tensor  # (N, D) before normalisation
    skips: list[torch.Tensor] = field(default_factory=list)  # stem, layer1, layer2, layer3
    identity: torch.Tensor | None = None  # gated identity feature map
    pooled_identity: torch.Tensor | None = None  # (N, C)
    pooled_mask: torch.Tensor | None = None  # (N, C)
    mask_logits: torch.Tensor | None = None  # (N, 1, h2, w2), layer2 resolution
    family_logits: torch.Tensor | None = None  # (N, families)


def _conv_bn(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.PReLU(cout))


class MaskBranch(nn.Module):
    """Occluder-map logits at layer2 resolution from a small FPN over layer4/3/2.

    ``decoupled`` (MEER): the FPN starts from mask features F_m split off layer4 by a 1x1 conv,
    whose pooled vector also classifies the occluder family. Without it (MEER without
    decoupling) the FPN reads layer4 itself and there are no mask features and no family head:
    only the map the generator needs.
    """

    def __init__(self, c4: int, c3: int, c2: int, width: int, families: int,
                 decoupled: bool = True) -> None:
        super().__init__()
        # mask features F_m, decoupled from F_id (created first: meer-s' initialisation order)
        self.split = _conv_bn(c4, c4, 1) if decoupled else None
        self.top = nn.Conv2d(c4, width, 1)
        self.lateral3 = nn.Conv2d(c3, width, 1)
        self.lateral2 = nn.Conv2d(c2, width, 1)
        self.head = nn.Sequential(_conv_bn(width, width), nn.Conv2d(width, 1, 1))
        self.family = nn.Linear(c4, families) if decoupled else None

    def forward(self, f4: torch.Tensor, f3: torch.Tensor, f2: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(map logits, pooled F_m, family logits); the last two are None when not decoupled."""
        fm = self.split(f4) if self.split is not None else f4
        p = self.top(fm)
        p = F.interpolate(p, size=f3.shape[-2:], mode="nearest") + self.lateral3(f3)
        p = F.interpolate(p, size=f2.shape[-2:], mode="nearest") + self.lateral2(f2)
        if self.family is None:
            return self.head(p), None, None
        pooled = fm.mean(dim=(2, 3))
        return self.head(p), pooled, self.family(pooled)


class FromBranch(nn.Module):
    """FROM-style mask decoder: conv-PReLU-BN x2 + sigmoid over layer4 and pooled layer3."""

    def __init__(self, c4: int, c3: int, families: int) -> None:
        super().__init__()
        self.decoder = nn.Sequential(
            nn.Conv2d(c4 + c3, c4, 3, padding=1), nn.PReLU(c4), nn.BatchNorm2d(c4),
            nn.Conv2d(c4, c4, 3, padding=1), nn.PReLU(c4), nn.BatchNorm2d(c4),
        )
        self.family = nn.Linear(c4, families)

    def forward(self, f4: torch.Tensor, f3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                   torch.Tensor]:
        hidden = self.decoder(torch.cat([f4, F.adaptive_avg_pool2d(f3, f4.shape[-2:])], 1))
        pooled = hidden.mean(dim=(2, 3))
        return torch.sigmoid(hidden), pooled, self.family(pooled)


class Generator(nn.Module):
    """Decoder from gated identity features to the unmasked face, with visibility-gated skips.

    Each stage upsamples to the next skip's size, concatenates that skip times the visibility
    map and the map itself, and applies two conv-BN-PReLU layers; a 1x1 conv and tanh give the
    image in the normalised [-1, 1] range.
    """

    def __init__(self, c4: int, skip_channels: list[int], width: int) -> None:
        super().__init__()
        outs = [width * 2 ** i for i in reversed(range(len(skip_channels)))]  # e.g. 8g 4g 2g g
        stages, cin = [], c4
        for skip, cout in zip(reversed(skip_channels), outs, strict=True):
            stages.append(nn.Sequential(_conv_bn(cin + skip + 1, cout), _conv_bn(cout, cout)))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.to_rgb = nn.Conv2d(cin, 3, 1)

    def forward(self, identity: torch.Tensor, skips: list[torch.Tensor],
                visibility: torch.Tensor) -> torch.Tensor:
        x = identity
        for stage, skip in zip(self.stages, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            v = F.interpolate(visibility, size=skip.shape[-2:], mode="bilinear",
                              align_corners=False)
            x = stage(torch.cat([x, skip * v, v], 1))
        return torch.tanh(self.to_rgb(x))


class MeerNet(nn.Module):
    """IResNet encoder with optional decoupling and generator; ``forward`` gives embeddings."""

    def __init__(self, arch: MeerArch) -> None:
        super().__init__()
        self.arch = arch
        self.encoder = iresnet(arch.depth, arch.width, arch.input_size, arch.embedding_dim)
        enc = self.encoder
        c0, c1, c2, c3 = (enc.conv1.out_channels, *(_out(s) for s in (enc.layer1, enc.layer2,
                                                                      enc.layer3)))
        c4 = _out(enc.layer4)
        n_fam = len(arch.families)
        self.mask: MaskBranch | None = None
        self.from_mask: FromBranch | None = None
        self.identity: nn.Module | None = None
        self.generator: Generator | None = None
        if arch.decoupling == "meer":
            self.mask = MaskBranch(c4, c3, c2, arch.mask_width, n_fam)
            self.identity = nn.Sequential(nn.Conv2d(c4, c4, 1, bias=False), nn.BatchNorm2d(c4))
        elif arch.decoupling == "from":
            self.from_mask = FromBranch(c4, c3, n_fam)
        elif arch.generator:  # MEER without decoupling: a map head for the generator only
            self.mask = MaskBranch(c4, c3, c2, arch.mask_width, n_fam, decoupled=False)
        if arch.generator:
            self.generator = Generator(c4, [c0, c1, c2, c3], arch.generator_width)

    def encode(self, x: torch.Tensor) -> Encoded:
        """One pass through encoder and decoupling (normalised NCHW input)."""
        enc = self.encoder
        f0 = enc.prelu(enc.bn1(enc.conv1(x)))
        f1 = enc.layer1(f0)
        f2 = enc.layer2(f1)
        f3 = enc.layer3(f2)
        f4 = enc.layer4(f3)
        out = Encoded(embedding=torch.empty(0), skips=[f0, f1, f2, f3])
        if self.mask is not None:
            logits, out.pooled_mask, out.family_logits = self.mask(f4, f3, f2)
            out.mask_logits = logits
            if self.identity is not None:  # decoupling: recognition sees gated F_id only
                visible = 1 - F.adaptive_avg_pool2d(torch.sigmoid(logits), f4.shape[-2:])
                f4 = self.identity(f4) * visible
        elif self.from_mask is not None:
            gate, out.pooled_mask, out.family_logits = self.from_mask(f4, f3)
            f4 = f4 * gate
        out.identity = f4
        out.pooled_identity = f4.mean(dim=(2, 3))
        out.embedding = enc.features(enc.fc(enc.dropout(torch.flatten(enc.bn2(f4), 1))))
        return out

    def visibility(self, encoded: Encoded) -> torch.Tensor:
        """Predicted visibility ``1 - sigmoid(mask logits)`` at layer2 resolution."""
        if encoded.mask_logits is None:
            raise ModelError("this network has no mask branch")
        return 1 - torch.sigmoid(encoded.mask_logits)

    def generate(self, encoded: Encoded) -> torch.Tensor:
        """The restored (unmasked) face in the normalised range, at the input size."""
        if self.generator is None or encoded.identity is None:
            raise ModelError("this network has no generator")
        return self.generator(encoded.identity, encoded.skips, self.visibility(encoded))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).embedding


def _out(stage: nn.Sequential) -> int:
    return stage[-1].conv2.out_channels


# ----------------------------------------------------------------------------- inference


class MeerModel(TorchFaceModel):
    """A trained ``MeerNet`` behind the FaceModel contract; restores when it has a generator."""

    #: blind restoration (``meerbench.results.RESTORER_GIVEN``): the masked image only; its own
    #: predicted mask decides what is replaced.
    restoration_given = "masked-image"

    def __init__(self, name: str, cfg: FaceModelCfg, net: MeerNet, batch_size: int = 64) -> None:
        super().__init__(name, cfg, net)
        self.batch_size = batch_size

    def can_restore(self) -> bool:
        return self.net.generator is not None

    def restore(self, images: np.ndarray, mask_maps: np.ndarray | None) -> np.ndarray:
        """Blind restoration: the predicted mask, not ``mask_maps``, decides what is replaced."""
        return self.restore_with_masks(images)[0]

    def restore_with_masks(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, H, W, 3) -> (restored uint8 (N, H, W, 3), predicted mask bool (N, H, W)).

        The generator works at the contract's input size; its output is upsampled to the image
        size and replaces the input only where the predicted (soft) mask says so.
        """
        if not self.can_restore():
            raise NotImplementedError(f"{self.name} does not restore faces")
        device = next(self.net.parameters()).device
        restored, masks = [], []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                raw = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
                raw = raw.to(device)
                full = self.cfg.preprocess(raw, resize=False)
                encoded = self.net.encode(self.cfg.preprocess(raw))
                size = full.shape[-2:]
                generated = F.interpolate(self.net.generate(encoded), size=size, mode="bilinear",
                                          align_corners=False)
                mask = torch.sigmoid(F.interpolate(encoded.mask_logits, size=size,
                                                   mode="bilinear", align_corners=False))
                out = mask * generated + (1 - mask) * full
                pixels = ((out + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
                restored.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
                masks.append((mask[:, 0] > 0.5).cpu().numpy())
        return np.concatenate(restored), np.concatenate(masks)


def contract(arch: MeerArch, flip_fusion: str = "none") -> FaceModelCfg:
    """The preprocessing contract of a trained network: RGB in [-1, 1] at ``input_size``."""
    side = arch.input_size
    return FaceModelCfg(input_size=(side, side), channels="RGB", mean=(0.5,) * 3, std=(0.5,) * 3,
                        alignment=ARCFACE_112, embedding_dim=arch.embedding_dim,
                        flip_fusion=flip_fusion)


def baselines_dir() -> Path:
    """``$MEERBENCH_BASELINES`` (your own trained checkpoints), else the shipped ``baselines``."""
    if env := os.environ.get("MEERBENCH_BASELINES"):
        return Path(env).expanduser()
    return cards_dir()


def load_trained(folder: str | Path, name: str | None = None) -> MeerModel:
    """Load ``folder/card.yaml`` + ``folder/model.safetensors`` (sha256-checked) as a model."""
    folder = Path(folder)
    if not (folder / "card.yaml").is_file() or not (folder / "model.safetensors").is_file():
        raise ModelError(
            f"No trained checkpoint in {folder} (card.yaml and model.safetensors are needed). "
            f"Train it with `meerbench train --config configs/train/{folder.name}.yaml --out "
            f"{folder}`, or set MEERBENCH_BASELINES to a folder that holds it."
        )
    return from_card(read_card(folder / "card.yaml"), name=name)


def from_card(card: Card, weights: str | Path | None = None, name: str | None = None
              ) -> MeerModel:
    """The network of an ``architecture: meer`` card, with its weights."""
    try:
        arch = MeerArch.from_dict(card.options)
    except ConfigError as exc:
        where = str(exc).replace("field '", "field 'options.", 1)
        raise CardError(f"{card.source}: {where}") from None
    cfg = contract(arch, card.contract.flip_fusion)
    if cfg != card.contract:
        raise CardError(f"{card.source}: field 'contract': expected the contract of its options "
                        f"({cfg.to_dict()}), got {card.contract.to_dict()}.")
    net = load_checkpoint(MeerNet(arch), resolve_weights(card, weights))
    return MeerModel(name or card.name, cfg, net.eval())


#: MEER checkpoints from best to least good; ``meer`` resolves to the first one present.
MEER_PREFERENCE = ("meer-r100", "meer-r50", "meer-s")


def meer() -> MeerModel:
    """The best available MEER checkpoint under ``baselines_dir()`` (the reference meer-s), named
    as that checkpoint: a Result says which MEER it measured, never just "meer"."""
    folder = next((f for f in MEER_PREFERENCE if (baselines_dir() / f / "card.yaml").is_file()),
                  MEER_PREFERENCE[-1])
    return load_trained(baselines_dir() / folder)
