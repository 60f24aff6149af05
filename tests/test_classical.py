"""The pixels baseline: illumination-normalised grey pixels."""

import torch

from meerbench.models.classical import PixelsModel


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b).item())


def test_pixels_ignore_a_constant_offset_and_most_of_a_shading_gradient() -> None:
    torch.manual_seed(0)
    face = torch.rand(1, 1, 56, 56) * 2 - 1
    model = PixelsModel()
    brighter = model.forward(face + 0.4)
    torch.testing.assert_close(brighter, model.forward(face), atol=1e-5, rtol=0)
    ramp = torch.linspace(-0.5, 0.5, 56).view(1, 1, 1, 56).expand(1, 1, 56, 56)
    shaded = model.forward(face + ramp)
    raw = face.flatten(1) - face.flatten(1).mean()
    raw_shaded = (face + ramp).flatten(1) - (face + ramp).flatten(1).mean()
    assert _cos(model.forward(face), shaded) > 0.99
    assert _cos(model.forward(face), shaded) > _cos(raw, raw_shaded)


def test_pixels_filter_keys_the_cache() -> None:
    assert PixelsModel().weights_hash() != PixelsModel(sigma=6.0).weights_hash()
    face = torch.rand(1, 1, 56, 56)
    assert not torch.allclose(PixelsModel().forward(face), PixelsModel(sigma=6.0).forward(face))
