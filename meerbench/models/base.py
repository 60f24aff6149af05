"""The interface every face model implements (``FaceModel``) and its torch-module form.

A model carries its preprocessing contract, ``FaceModelCfg`` (``meerbench.models.contract``).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np
import torch

from meerbench.models.contract import FaceModelCfg


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
