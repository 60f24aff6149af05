"""Classical baselines that need no downloaded weights: grey pixels, Eigenfaces, Fisherfaces.

They anchor the low end of every leaderboard. Eigenfaces and Fisherfaces are fitted on the
protocol's training split (``train`` in the protocol); their fitted state is hashed like weights.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from meerbench.models.base import FaceModel, FaceModelCfg

GREY_56 = dict(input_size=(56, 56), channels="GRAY", mean=(0.5,), std=(0.5,), flip_fusion="none")


class PixelsModel(FaceModel):
    """Illumination-normalised grey pixels at 56x56.

    Each image minus a Gaussian blur of itself (sigma 12 px: removes shading and colour-cast
    gradients, keeps the shapes), then minus its mean; cosine similarity does the rest. The sigma
    was chosen on held-out ``synthmask-train`` identities (unmasked accuracy), never on a test
    protocol; raw pixels sat near chance and barely registered the mask.
    """

    def __init__(self, name: str = "pixels", sigma: float = 12.0) -> None:
        super().__init__(name, FaceModelCfg(embedding_dim=56 * 56, **GREY_56))
        self.sigma = sigma
        radius = int(3 * sigma)
        taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(taps**2) / (2 * sigma**2))
        self.kernel = kernel / kernel.sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = len(self.kernel) // 2
        k = self.kernel.to(x)
        blur = F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), k.view(1, 1, 1, -1))
        blur = F.conv2d(blur, k.view(1, 1, -1, 1))
        flat = (x - blur).flatten(1)
        return flat - flat.mean(dim=1, keepdim=True)

    def weights_hash(self) -> str:
        # No weights, but the filter is part of what the embeddings mean: it keys the cache.
        return hashlib.sha256(f"{self.name}:highpass-sigma={self.sigma}".encode()).hexdigest()


class ProjectionModel(FaceModel):
    """A linear projection ``(x - mean) @ basis`` fitted on training images."""

    needs_fit = True

    def __init__(self, name: str, dim: int) -> None:
        super().__init__(name, FaceModelCfg(embedding_dim=dim, **GREY_56))
        self.mean: np.ndarray | None = None
        self.basis: np.ndarray | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None or self.basis is None:
            raise RuntimeError(f"{self.name} must be fitted before use")
        flat = x.flatten(1).double()
        return (flat - torch.from_numpy(self.mean)) @ torch.from_numpy(self.basis)

    def state(self) -> dict[str, np.ndarray]:
        assert self.mean is not None and self.basis is not None
        return {"mean": self.mean, "basis": self.basis}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean, self.basis = state["mean"], state["basis"]
        self.cfg = replace(self.cfg, embedding_dim=self.basis.shape[1])

    def weights_hash(self) -> str:
        digest = hashlib.sha256(self.name.encode())
        for value in self.state().values():
            digest.update(np.ascontiguousarray(value).tobytes())
        return digest.hexdigest()


def _pca(data: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, basis (D, k) and variances of the top-``components`` principal directions."""
    mean = data.mean(axis=0)
    _, s, vt = np.linalg.svd(data - mean, full_matrices=False)
    k = min(components, vt.shape[0])
    # Fix each direction's sign so the fit is deterministic across LAPACK builds.
    signs = np.sign(vt[:k, np.argmax(np.abs(vt[:k]), axis=1)].diagonal())
    basis = (vt[:k] * signs[:, None]).T
    return mean, basis, (s[:k] ** 2) / max(len(data) - 1, 1)


class EigenfacesModel(ProjectionModel):
    """Eigenfaces (Turk & Pentland 1991): PCA of 56x56 grey faces, top 150 components."""

    def __init__(self, name: str = "eigenfaces", components: int = 150) -> None:
        super().__init__(name, components)
        self.components = components

    def fit(self, x: torch.Tensor, identities: np.ndarray) -> None:
        mean, basis, _ = _pca(x.flatten(1).double().numpy(), self.components)
        self.load_state({"mean": mean, "basis": basis})


class FisherfacesModel(ProjectionModel):
    """Fisherfaces (Belhumeur et al. 1997): PCA to N-C dims (at most 400), then LDA."""

    def __init__(self, name: str = "fisherfaces", pca_max: int = 400, lda_max: int = 256) -> None:
        super().__init__(name, lda_max)
        self.pca_max, self.lda_max = pca_max, lda_max

    def fit(self, x: torch.Tensor, identities: np.ndarray) -> None:
        data = x.flatten(1).double().numpy()
        classes, labels = np.unique(identities, return_inverse=True)
        if len(classes) < 2:
            raise ValueError("Fisherfaces needs at least two identities to fit")
        import scipy.linalg  # fitting only: a cached fit loads without it (0.08 s of a start)

        mean, pca_basis, _ = _pca(data, min(self.pca_max, len(data) - len(classes)))
        z = (data - mean) @ pca_basis
        class_means = np.stack([z[labels == c].mean(axis=0) for c in range(len(classes))])
        within = z - class_means[labels]
        s_w = within.T @ within
        counts = np.bincount(labels).astype(float)
        s_b = (class_means * counts[:, None]).T @ class_means  # z is centred: global mean is 0
        s_w += 1e-6 * np.trace(s_w) / len(s_w) * np.eye(len(s_w))
        values, vectors = scipy.linalg.eigh(s_b, s_w)
        k = min(self.lda_max, len(classes) - 1)
        lda = vectors[:, np.argsort(values)[::-1][:k]]
        lda *= np.sign(lda[np.argmax(np.abs(lda), axis=0), np.arange(k)])
        self.load_state({"mean": mean, "basis": pca_basis @ lda})
