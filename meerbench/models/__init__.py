"""Models: the face-model contract, the registry's model factories and ``load_model``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meerbench.registry import MODELS

if TYPE_CHECKING:
    from meerbench.models.base import FaceModel

MODELS.add_lazy("pixels", "meerbench.models.classical:PixelsModel",
                "Normalised 56x56 grey pixels (no training); the floor of every table")
MODELS.add_lazy("eigenfaces", "meerbench.models.classical:EigenfacesModel",
                "Eigenfaces: PCA on 56x56 grey faces, fitted on the protocol's training split")
MODELS.add_lazy("fisherfaces", "meerbench.models.classical:FisherfacesModel",
                "Fisherfaces: PCA + LDA on 56x56 grey faces, fitted on the training split")


def load_model(name: str, **kwargs: Any) -> FaceModel:
    """Build a registered model by name."""
    factory = MODELS.get(name)
    return factory(**kwargs)
