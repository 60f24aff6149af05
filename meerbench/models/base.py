"""The face-model contract (``FaceModelCfg``) and the interface every model implements.

Most "cannot reproduce" reports in face recognition are preprocessing mismatches, so the contract
is data: it is applied by ``FaceModelCfg.preprocess``, recorded in every Result and part of the
embedding-cache key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

CHANNELS = ("RGB", "BGR", "GRAY")
FLIP_FUSION = ("none", "sum", "concat")


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from: a URL with its sha256, or a local path."""

    url: str | None = None
    sha256: str | None = None
    path: str | None = None
    licence: str = ""
    citation: str = ""


@dataclass(frozen=True)
class FaceModelCfg:
    """Preprocessing contract: what the network expects to see."""

    input_size: tuple[int, int] = (112, 112)
    channels: str = "RGB"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    alignment: str = "arcface-112"
    embedding_dim: int = 512
    flip_fusion: str = "none"
    weights: WeightsSource | None = field(default=None)

    def __post_init__(self) -> None:
        if self.channels not in CHANNELS:
            raise ValueError(f"channels must be one of {CHANNELS}, got {self.channels!r}")
        if self.flip_fusion not in FLIP_FUSION:
            raise ValueError(f"flip_fusion must be one of {FLIP_FUSION}, got {self.flip_fusion!r}")
        n = 1 if self.channels == "GRAY" else 3
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"mean and std need {n} values for channels={self.channels}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB -> float32 (N, C, h, w) resized, reordered and normalised."""
        x = images.permute(0, 3, 1, 2).float()
        if self.channels == "BGR":
            x = x.flip(1)
        elif self.channels == "GRAY":
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
            x = (x * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
        if tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", antialias=True,
                              align_corners=False)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x / 255.0 - mean) / std


class FaceModel:
    """A face recognizer: ``forward`` maps preprocessed images to embeddings.

    Subclasses set ``cfg`` and implement ``forward``. Models that are fitted on training data (the
    classical baselines) set ``needs_fit`` and implement ``fit`` / ``state`` / ``load_state``;
    models that can restore masked faces implement ``restore``.
    """

    needs_fit: ClassVar[bool] = False
    #: whether channels_last + bf16 autocast may be used on CPU (convolutional networks).
    accelerate: ClassVar[bool] = False

    def __init__(self, name: str, cfg: FaceModelCfg) -> None:
        self.name = name
        self.cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device: torch.device) -> FaceModel:
        return self

    def weights_hash(self) -> str:
        """sha256 identifying the weights (or fitted state) behind the embeddings."""
        return hashlib.sha256(self.name.encode()).hexdigest()

    def fit(self, x: torch.Tensor, identities: np.ndarray) -> None:
        raise NotImplementedError(f"{self.name} is not fitted on data")

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def can_restore(self) -> bool:
        return False

    def restore(self, images: np.ndarray, mask_maps: np.ndarray | None) -> np.ndarray:
        """uint8 (N, H, W, 3) masked faces -> uint8 (N, H, W, 3) restored faces."""
        raise NotImplementedError(f"{self.name} does not restore faces")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "contract": self.cfg.to_dict(),
                "weights_sha256": self.weights_hash()}


class TorchFaceModel(FaceModel):
    """A recognizer backed by an ``nn.Module`` whose weights hash is computed from its tensors."""

    accelerate = True

    def __init__(self, name: str, cfg: FaceModelCfg, net: torch.nn.Module) -> None:
        super().__init__(name, cfg)
        self.net = net.eval()
        self._hash: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def to(self, device: torch.device) -> TorchFaceModel:
        self.net.to(device)
        return self

    def weights_hash(self) -> str:
        if self._hash is None:
            digest = hashlib.sha256()
            for key, tensor in sorted(self.net.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._hash = digest.hexdigest()
        return self._hash
