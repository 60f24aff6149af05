"""Model cards: the built-in ones validate and register; bad cards name the file and the field."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meerbench.errors import ConfigError, ModelError
from meerbench.models import cards, load_model
from meerbench.models.card_schema import cards_dir, read_card
from meerbench.models.cards import describe, describe_models
from meerbench.models.contract import FaceModelCfg
from meerbench.models.weights import weights_dir
from meerbench.registry import MODELS

BUILTIN = ("arcface-r50", "arcface-r100", "mobilefacenet", "dlib-resnet", "pixels", "eigenfaces",
           "fisherfaces")


def test_builtin_cards_validate_and_register():
    files = sorted(p.stem for p in cards_dir().glob("*.yaml"))
    assert set(BUILTIN) <= set(files)
    for name in files:
        card = read_card(cards_dir() / f"{name}.yaml")
        assert card.name == name and name in MODELS
        card.cfg()  # the contract builds a FaceModelCfg
        assert all(r.source.startswith("https://") for r in card.reported)


def test_arcface_card_contract_and_reported_numbers():
    card = read_card(cards_dir() / "arcface-r50.yaml")
    cfg = card.cfg()
    assert (cfg.input_size, cfg.channels, cfg.mean, cfg.flip_fusion) == (
        (112, 112), "RGB", (0.5, 0.5, 0.5), "sum")
    lfw = [r for r in card.reported if r.benchmark == "LFW"]
    assert [r.value for r in lfw] == [99.83]
    assert "cfa54d80c7954264beadf86f402b10822f6f0411" in lfw[0].source


@pytest.mark.parametrize("name", ["pixels", "eigenfaces", "fisherfaces"])
def test_classical_cards_build_the_existing_models(name):
    model = load_model(name)
    assert model.name == name and model.cfg.input_size == (56, 56)


def test_listing_shows_weights_status():
    rows = dict(describe_models())
    assert rows["pixels"].endswith("[no weights needed]")
    assert rows["arcface-r50"].endswith("[weights: missing — meerbench weights fetch arcface-r50]")
    placed = weights_dir() / "arcface-r50-ms1mv3.pth"
    placed.parent.mkdir(parents=True, exist_ok=True)
    placed.write_bytes(b"x")
    try:
        assert describe("arcface-r50").endswith("[weights: present]")
    finally:
        placed.unlink()


def test_missing_weights_error_says_what_to_do():
    with pytest.raises(ModelError) as info:
        load_model("arcface-r50")
    assert "by hand" in str(info.value) and "--weights" in str(info.value)


def test_contract_values_are_checked_once_as_config_errors():
    with pytest.raises(ConfigError, match=r"'contract.channels'.*'RGBA'"):
        FaceModelCfg(channels="RGBA")
    with pytest.raises(ConfigError, match=r"'contract.embedding_dim'.*-1"):
        FaceModelCfg(embedding_dim=-1)


def test_version_1_cards_still_read(tmp_path):
    data = good_card()
    data["schema"] = 1
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    current = read_card(cards_dir() / "arcface-r50.yaml")
    assert dataclasses.replace(read_card(path), source=current.source) == current


def test_trained_folder_cards_read_as_schema_2():
    card = read_card(cards_dir() / "meer-s" / "card.yaml")
    assert card.architecture == "meer" and card.options["decoupling"] == "meer"
    assert card.weights.path == cards_dir() / "meer-s" / "model.safetensors"
    assert card.contract.weights is None and card.training["selected_step"] == 1440


def test_importing_models_does_not_import_torch():
    code = "import sys, meerbench.models; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def good_card() -> dict:
    return yaml.safe_load((cards_dir() / "arcface-r50.yaml").read_text())


@pytest.mark.parametrize("edit, field, expected", [
    (lambda c: c.update(architecure="iresnet50"), "architecure", "did you mean 'architecture'"),
    (lambda c: c.update(architecture="resnet9000"), "architecture", "one of iresnet18"),
    (lambda c: c["contract"].update(channels="RGBA"), "contract.channels", "one of RGB"),
    (lambda c: c["contract"].update(mean=[0.5]), "contract.mean", "3 number(s)"),
    (lambda c: c["contract"].update(input_size=[112]), "contract.input_size", "two positive"),
    (lambda c: c["weights"].update(sha256="abc"), "weights.sha256", "64 lower-case hex"),
    (lambda c: c["weights"].pop("licence"), "weights.licence", "the field is missing"),
    (lambda c: c.pop("weights"), "weights", "a mapping with 'file_name'"),
    (lambda c: c.update(weights={"bundled": "x", "licence": "y"}), "weights", "'file_name'"),
    (lambda c: c["reported"][0].update(source="README"), "reported[0].source", "URL"),
    (lambda c: c["reported"][1].pop("value"), "reported[1].value", "missing"),
    (lambda c: c.update(factory="a:b"), "factory", "only architecture classical"),
])
def test_invalid_cards_name_file_and_field(tmp_path, edit, field, expected):
    data = good_card()
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ModelError) as info:
        read_card(path)
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert str(path) in message and f"'{field}'" in message and expected in message


def test_broken_builtin_card_registers_as_broken(tmp_path, monkeypatch):
    (tmp_path / "renamed.yaml").write_text(yaml.safe_dump(good_card(), allow_unicode=True))
    monkeypatch.setattr(cards, "cards_dir", lambda: Path(tmp_path))
    monkeypatch.setattr(MODELS, "_entries", {})
    cards.register_builtins(MODELS)
    assert "INVALID card" in describe("renamed")
    with pytest.raises(ModelError, match="expected 'renamed'"):
        load_model("renamed")


def test_classical_contract_drift_is_caught(tmp_path):
    data = yaml.safe_load((cards_dir() / "pixels.yaml").read_text())
    data["contract"]["input_size"] = [64, 64]
    path = tmp_path / "pixels.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelError, match=r"disagrees .* input_size"):
        cards.model_from_card(path)
