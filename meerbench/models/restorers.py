"""Restoration baselines and the restore-then-recognize composition.

A restorer maps masked faces and their occluder maps to unmasked faces. Any restorer followed by
any recognizer is a model named ``"<restorer>+<recognizer>"`` (e.g. ``inpaint-telea+fisherfaces``):
masked images are restored before they are embedded, and the restoration task scores the
restorer, so the composition appears in both recognition and restoration tables.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from meerbench.models.base import FaceModel

#: ArcFace 112x112 template: nose tip at y=71.7, eyes at y=51.6. Masks sit below the eyes.
TEMPLATE_MASK_TOP = 0.55


class InpaintRestorer:
    """OpenCV inpainting (Telea 2004, or Navier-Stokes: Bertalmio et al. 2001) of the occluder."""

    def __init__(self, method: str = "telea", radius: int = 5) -> None:
        import cv2

        self.name = f"inpaint-{method}"
        self.flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
        self.radius = radius

    def restore(self, images: np.ndarray, mask_maps: np.ndarray) -> np.ndarray:
        import cv2

        out = np.empty_like(images)
        for i, (image, mask) in enumerate(zip(images, mask_maps, strict=True)):
            out[i] = cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8) * 255,
                                 self.radius, self.flag)
        return out


def template_lower_face(shape: tuple[int, int]) -> np.ndarray:
    """Segmenter for real masked faces without a map: everything below the eyes of an aligned
    face (from 55% of the height down). Crude and documented; used only when no map is known."""
    mask = np.zeros(shape, dtype=bool)
    mask[int(round(TEMPLATE_MASK_TOP * shape[0])):] = True
    return mask


RESTORERS = {
    "inpaint-telea": lambda: InpaintRestorer("telea"),
    "inpaint-ns": lambda: InpaintRestorer("ns"),
}


class RestoreThenRecognize(FaceModel):
    """``restorer`` fills occluded regions of masked inputs, then ``recognizer`` embeds them."""

    #: what it restores from (``meerbench.results.RESTORER_GIVEN``): the true occluder map when
    #: the data have one, else the lower-face template (:func:`template_lower_face`).
    restoration_given = "true-map"

    def __init__(self, restorer: InpaintRestorer, recognizer: FaceModel) -> None:
        super().__init__(f"{restorer.name}+{recognizer.name}", recognizer.cfg)
        self.restorer = restorer
        self.recognizer = recognizer
        self.needs_fit = recognizer.needs_fit  # type: ignore[misc]
        self.accelerate = recognizer.accelerate  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.recognizer.forward(x)

    def to(self, device: torch.device) -> RestoreThenRecognize:
        self.recognizer.to(device)
        return self

    def fit(self, x: torch.Tensor, identities: np.ndarray) -> None:
        self.recognizer.fit(x, identities)
        self.cfg = self.recognizer.cfg

    def state(self) -> dict[str, np.ndarray]:
        return self.recognizer.state()

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.recognizer.load_state(state)
        self.cfg = self.recognizer.cfg

    def weights_hash(self) -> str:
        return hashlib.sha256(f"{self.name}|{self.recognizer.weights_hash()}".encode()).hexdigest()

    def can_restore(self) -> bool:
        return True

    def restore(self, images: np.ndarray, mask_maps: np.ndarray | None) -> np.ndarray:
        if mask_maps is None:
            mask_maps = np.broadcast_to(template_lower_face(images.shape[1:3]), images.shape[:3])
        return self.restorer.restore(images, mask_maps)
