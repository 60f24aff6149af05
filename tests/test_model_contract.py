"""The face-model contract: torch-free to read, one owner of its vocabulary, one preprocessing for
evaluation and training, and the alignment check the engine applies."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from meerbench.errors import ModelError
from meerbench.models.contract import ARCFACE_112, FaceModelCfg, check_alignment


def test_reading_cards_and_listing_models_do_not_import_torch():
    code = ("import sys; from meerbench.models.card_schema import cards_dir, read_card; "
            "[read_card(p) for p in cards_dir().glob('*.yaml')]; "
            "[read_card(p) for p in cards_dir().glob('*/card.yaml')]; "
            "from meerbench.models.cards import describe_models; describe_models(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_alignment_mismatch_names_both_values():
    check_alignment(FaceModelCfg(), ARCFACE_112)
    with pytest.raises(ModelError, match=r"'mtcnn-96'.*'arcface-112'"):
        check_alignment(FaceModelCfg(alignment="mtcnn-96"), ARCFACE_112)


def test_meer_contract_maps_every_pixel_value_to_signed_range():
    from meerbench.models.meer import MeerArch, contract

    images = torch.arange(256).to(torch.uint8).view(1, 16, 16, 1).expand(1, 16, 16, 3)
    cfg = contract(MeerArch(input_size=16))  # every uint8 value, at the input size
    assert torch.equal(cfg.preprocess(images), images.permute(0, 3, 1, 2).float() / 127.5 - 1)


def test_the_contract_has_one_owner():
    from meerbench.models import base, contract

    assert base.FaceModelCfg is contract.FaceModelCfg


def test_register_model_takes_a_card_or_a_factory(tmp_path, monkeypatch):
    from meerbench.models import load_model
    from meerbench.models.card_schema import cards_dir
    from meerbench.models.cards import register_model
    from meerbench.models.classical import PixelsModel
    from meerbench.registry import MODELS

    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    card = (cards_dir() / "pixels.yaml").read_text().replace("name: pixels", "name: my-pixels")
    (tmp_path / "my-pixels.yaml").write_text(card)
    assert register_model(tmp_path / "my-pixels.yaml") == "my-pixels"

    @register_model
    def blurred_pixels(**options):
        """Pixels, under another name."""
        return PixelsModel("blurred_pixels", **options)

    assert load_model("my-pixels").name == "my-pixels"
    assert load_model("blurred_pixels", sigma=3.0).sigma == 3.0
    assert MODELS.entry("blurred_pixels").description == "Pixels, under another name."
