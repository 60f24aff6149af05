import numpy as np
import pytest
import torch

from meerbench.engine.cache import EmbeddingCache
from meerbench.engine.embed import ArrayImages, embed
from meerbench.models.base import FaceModel, FaceModelCfg


class MeanColour(FaceModel):
    """A tiny deterministic model: per-channel means of the preprocessed image."""

    def __init__(self, flip_fusion="none"):
        super().__init__("mean-colour", FaceModelCfg(input_size=(8, 8), embedding_dim=3,
                                                     flip_fusion=flip_fusion))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.mean(dim=(2, 3)) + x[:, :, :, :4].mean(dim=(2, 3))


def images(n=50):
    return torch.from_numpy(np.random.default_rng(0).integers(0, 255, (n, 16, 16, 3), np.uint8))


def test_contract_preprocess_resizes_reorders_and_normalises():
    x = torch.full((1, 4, 4, 3), 255, dtype=torch.uint8)
    x[..., 0] = 0
    rgb = FaceModelCfg(input_size=(2, 2), mean=(0.5,) * 3, std=(0.5,) * 3).preprocess(x)
    assert rgb.shape == (1, 3, 2, 2) and rgb[0, 0].max() == -1 and rgb[0, 1].min() == 1
    bgr = FaceModelCfg(input_size=(4, 4), channels="BGR").preprocess(x)
    assert bgr[0, 2].max() == -1
    grey = FaceModelCfg(input_size=(4, 4), channels="GRAY", mean=(0.0,), std=(1.0,)).preprocess(x)
    assert grey.shape == (1, 1, 4, 4) and torch.allclose(grey, torch.tensor(0.701))


def test_embed_is_normalised_and_batch_size_independent():
    a = embed(MeanColour(), ArrayImages(images()), batch_size=7, progress=False)
    b = embed(MeanColour(), ArrayImages(images()), batch_size=50, progress=False)
    assert a.embeddings.shape == (50, 3)
    assert np.allclose(np.linalg.norm(a.embeddings, axis=1), 1, atol=1e-6)
    assert np.allclose(a.embeddings, b.embeddings, atol=1e-6)


def test_flip_fusion_follows_the_contract():
    x = images(4)
    m = MeanColour()
    pre = m.cfg.preprocess(x)
    a, b = m.forward(pre), m.forward(pre.flip(3))
    assert not torch.allclose(a, b)
    norm = torch.nn.functional.normalize
    summed = embed(MeanColour("sum"), ArrayImages(x), progress=False).embeddings
    concat = embed(MeanColour("concat"), ArrayImages(x), progress=False).embeddings
    assert np.allclose(summed, norm(a + b, dim=1).numpy(), atol=1e-6)
    assert np.allclose(concat, norm(torch.cat([a, b], 1), dim=1).numpy(), atol=1e-6)


def test_cache_hit_and_resume_after_interruption():
    key = {"model": "mean-colour", "n": 50}
    model = MeanColour()
    full = embed(model, ArrayImages(images()), progress=False).embeddings

    class Boom(ArrayImages):
        def __getitem__(self, i):
            if i == 30:
                raise KeyboardInterrupt
            return super().__getitem__(i)

    cache = EmbeddingCache(key)
    with pytest.raises(KeyboardInterrupt):
        embed(model, Boom(images()), cache=cache, batch_size=5, chunk_size=10, progress=False)
    assert cache.load() is None and len(list(cache.artefact.pieces_dir.glob("rows-*"))) == 3
    resumed_model = MeanColour()
    out = embed(resumed_model, ArrayImages(images()), cache=cache, batch_size=5, chunk_size=10,
                progress=False)
    assert resumed_model.calls == 4 and not out.cache_hit  # 2 chunks x 2 batches left
    assert np.allclose(out.embeddings, full, atol=1e-6)
    again = embed(MeanColour(), ArrayImages(images()), cache=cache, progress=False)
    assert again.cache_hit and np.array_equal(again.embeddings, out.embeddings)
    assert not list(cache.artefact.dir.parent.glob("*partial*"))
    assert not cache.artefact.pieces_dir.exists()
