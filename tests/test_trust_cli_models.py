"""Issue 12 items 8 and 11 for model files: an ONNX graph whose embedding width differs from its
card is refused at load, and an unreadable ``.pth`` never gets advice to load it unsafely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from meerbench.cli import main
from meerbench.errors import ModelError
from meerbench.models.adapters import load_checkpoint
from meerbench.models.cards import model_from_card

CONTRACT = {"input_size": [32, 32], "channels": "RGB", "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5], "alignment": "arcface-112"}
UNSAFE = ("weights_only=False", "weights_only` set to `False", "weights_only=false")


def write_card(folder: Path, architecture: str, weights: Path, dim: int) -> Path:
    card = {"schema": 1, "name": f"test-{dim}", "description": "test", "architecture":
            architecture, "contract": {**CONTRACT, "embedding_dim": dim},
            "weights": {"path": str(weights), "licence": "test"}}
    path = folder / f"card-{dim}.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


@pytest.mark.parametrize("seed", range(400))
def test_random_bytes_pth_says_what_it_is_not_and_what_is_accepted(tmp_path, seed):
    path = tmp_path / "backbone.pth"
    path.write_bytes(np.random.default_rng(seed).bytes(4096))
    with pytest.raises(ModelError) as info:
        load_checkpoint(nn.Linear(2, 2), path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "not a PyTorch checkpoint" in message or "not a readable torch.save" in message
    assert "Accepted: a state dict of tensors" in message and ".safetensors" in message
    assert not any(text in message for text in UNSAFE)


def test_pickled_objects_are_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(ModelError) as info:
        load_checkpoint(nn.Linear(2, 2), path)
    message = str(info.value)
    assert "Python objects (torch.nn.modules.linear.Linear)" in message
    assert not any(text in message for text in UNSAFE)


def test_random_bytes_weights_through_the_cli(tmp_path, capsys):
    path = tmp_path / "r50.pth"
    path.write_bytes(np.random.default_rng(17).bytes(2048))  # unpickler: IndexError
    code = main(["run", "--model", "arcface-r50", "--weights", str(path), "--out",
                 str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(path) in err
    assert not any(text in err for text in UNSAFE)
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_onnx_width_must_match_the_card(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 128)).eval()
    onnx = tmp_path / "net128.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(onnx), input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "batch"},
                                                                "embedding": {0: "batch"}},
                      dynamo=False)
    with pytest.raises(ModelError, match=r"net128.onnx outputs 128-d embeddings .*embedding_dim "
                                         r"512"):
        model_from_card(write_card(tmp_path, "onnx", onnx, 512))
    assert model_from_card(write_card(tmp_path, "onnx", onnx, 128)).cfg.embedding_dim == 128


def test_unwritable_weights_folder_is_not_called_a_network_error(tmp_path, monkeypatch, capsys):
    import hashlib

    from meerbench.models.cards import register_card_file
    from meerbench.registry import MODELS

    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # the card stays local
    source = tmp_path / "w.pth"
    source.write_bytes(b"weights")
    card = tmp_path / "fetch-test.yaml"
    card.write_text(yaml.safe_dump({
        "schema": 1, "name": "trust-fetch-test", "description": "test", "architecture":
        "iresnet18", "contract": {**CONTRACT, "embedding_dim": 512},
        "weights": {"licence": "test", "file_name": "w.pth", "url": source.as_uri(),
                    "sha256": hashlib.sha256(b"weights").hexdigest()}}))
    register_card_file(card)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEERBENCH_HOME", str(blocker / "home"))
    assert main(["weights", "fetch", "trust-fetch-test"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"Cannot write {blocker / 'home'}" in err
    assert "Not a directory" in err and "download" not in err.lower()
