"""MEER network and inference wrapper: shapes, losses, checkpoint loading, embed and restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from test_train import write_tiny_run

from meerbench.engine.embed import ArrayImages, embed
from meerbench.errors import ModelError
from meerbench.models.meer import MeerArch, MeerNet, load_trained
from meerbench.train import losses as L
from meerbench.train import train


@pytest.mark.parametrize("side", [32, 48, 56, 64])
@pytest.mark.parametrize("decoupling", ["none", "from", "meer"])
def test_network_shapes(side, decoupling):
    arch = MeerArch(width=0.125, input_size=side, embedding_dim=32, decoupling=decoupling,
                    generator=decoupling == "meer", generator_width=4, mask_width=8)
    net = MeerNet(arch).eval()
    x = torch.rand(2, 3, side, side) * 2 - 1
    enc = net.encode(x)
    assert enc.embedding.shape == (2, 32) and torch.equal(net(x), enc.embedding)
    if decoupling == "meer":
        assert enc.mask_logits.shape == (2, 1, -(-side // 4), -(-side // 4))
        assert enc.family_logits.shape == (2, len(arch.families))
        restored = net.generate(enc)
        assert restored.shape == x.shape and restored.abs().max() <= 1
    elif decoupling == "from":
        assert enc.family_logits.shape == (2, len(arch.families))
        with pytest.raises(ModelError):
            net.generate(enc)


def test_plain_network_is_iresnet_key_compatible():
    arch = MeerArch(width=0.25, input_size=48, decoupling="none", generator=False)
    keys = set(MeerNet(arch).state_dict())
    assert keys == {f"encoder.{k}" for k in MeerNet(arch).encoder.state_dict()}


def test_arch_rejects_a_generator_with_the_from_gate():
    """FROM's feature gate gives no occluder map; 'none' + generator is MEER minus decoupling
    (tests/test_ablations.py)."""
    with pytest.raises(ValueError, match="generator.*decoupling 'from'"):
        MeerArch(decoupling="from", generator=True)


def test_margin_heads():
    torch.manual_seed(0)
    emb, labels = torch.randn(6, 8), torch.arange(6) % 3
    plain = L.MarginHead(8, 3, "cosface", 10.0, 0.0)
    arc = L.MarginHead(8, 3, "arcface", 10.0, 0.0)
    arc.weight.data = plain.weight.data.clone()
    logits = 10 * torch.nn.functional.linear(torch.nn.functional.normalize(emb),
                                             torch.nn.functional.normalize(plain.weight))
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(plain(emb, labels), expected, atol=1e-5)
    assert torch.allclose(arc(emb, labels), expected, atol=1e-5)
    assert L.MarginHead(8, 3, "arcface", 10.0, 0.5).forward(emb, labels) > expected


def test_image_and_decoupling_losses():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert L.ssim_loss(x, x).abs() < 1e-5 and L.ssim_loss(x, -x) > 0.5
    # nearly flat bright images: in bf16 the variances cancel to <= 0 and SSIM blew up to inf
    flat = 0.9 + 0.004 * x
    fp32 = L.ssim_loss(flat, flat.flip(-1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert L.ssim_loss(flat, flat.flip(-1)) == fp32
    cov = torch.zeros(2, 1, 16, 16)
    cov[..., 8:, :] = 1
    y = x.clone()
    y[..., 8:, :] += 0.5
    assert torch.isclose(L.weighted_l1(y, x, cov, 5.0), torch.tensor(0.25 + 5 * 0.5))
    a = torch.randn(256, 4)
    assert L.decorrelation(a, a) > 0.2 and L.decorrelation(a, torch.randn(256, 4)) < 0.05
    logits = torch.full((2, 1, 4, 4), -10.0)
    logits[..., 2:, :] = 10.0
    assert L.mask_loss(logits, cov) < 0.01 < L.mask_loss(-logits, cov)


def test_perceptual_loss_reads_local_vgg_weights(tmp_path):
    from torchvision.models import vgg16

    state = {f"features.{k}": v for k, v in vgg16(weights=None).features[:16].state_dict().items()}
    torch.save(state, tmp_path / "vgg.pth")
    loss = L.Perceptual(tmp_path / "vgg.pth")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(x, x) == 0 and loss(x, -x) > 0
    with pytest.raises(ModelError, match="not found"):
        L.Perceptual(tmp_path / "missing.pth")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meer")
    stages = [{"name": "all", "steps": 2,
               "losses": {"margin": 1.0, "map": 1.0, "l1": 1.0, "id_preserving": 1.0}}]
    config = write_tiny_run(folder, stages=stages, validation__select_from_stage="all")
    return train(config, folder / "out", progress=False)


def test_trained_checkpoint_loads_embeds_and_restores(trained):
    model = load_trained(trained)
    card = yaml.safe_load((trained / "card.yaml").read_text())
    assert model.name == "meer-tiny" and model.cfg.input_size == (32, 32)
    assert card["contract"]["input_size"] == [32, 32] and model.can_restore()
    images = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    out = embed(model, ArrayImages(torch.from_numpy(images)), batch_size=2, progress=False)
    assert out.embeddings.shape == (5, 64)
    np.testing.assert_allclose(np.linalg.norm(out.embeddings, axis=1), 1, atol=1e-5)
    restored, masks = model.restore_with_masks(images)
    assert restored.shape == images.shape and restored.dtype == np.uint8
    assert masks.shape == (5, 112, 112) and masks.dtype == bool
    # blind: given occluder maps (here: everything occluded) change nothing
    assert np.array_equal(model.restore(images, np.ones((5, 112, 112), bool)), restored)


def test_checkpoint_integrity_is_checked(trained, tmp_path):
    with pytest.raises(ModelError, match="meerbench train --config"):
        load_trained(tmp_path / "nothing-here")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("card.yaml", "model.safetensors"):
        (copy / name).write_bytes((trained / name).read_bytes())
    with open(copy / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match="sha256"):
        load_trained(copy)


def test_factories_explain_a_missing_reference_checkpoint(tmp_path, monkeypatch):
    from meerbench.models import load_model

    monkeypatch.setenv("MEERBENCH_BASELINES", str(tmp_path))
    with pytest.raises(ModelError, match="configs/train/meer-s.yaml"):
        load_model("meer-s")
    with pytest.raises(ModelError, match="meer-s"):
        load_model("meer")
