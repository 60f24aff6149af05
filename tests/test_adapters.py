"""Adapters: an insightface-style checkpoint, TorchScript and ONNX of one network agree through the
engine; bad checkpoints fail with a readable diff; dlib embeds a real face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from meerbench.engine.embed import ArrayImages, embed
from meerbench.errors import ModelError
from meerbench.models.adapters import load_checkpoint
from meerbench.models.base import TorchFaceModel
from meerbench.models.cards import model_from_card
from meerbench.models.iresnet import iresnet

CONTRACT = {"input_size": [112, 112], "channels": "RGB", "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5], "alignment": "arcface-112", "embedding_dim": 512}


def random_iresnet50() -> nn.Module:
    """IResNet-50 with random weights and BN statistics that keep activations finite."""
    torch.manual_seed(0)
    net = iresnet(50)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.running_var, 0.5, 1.5)
            nn.init.normal_(m.running_mean, 0, 0.1)
    nn.init.normal_(net.fc.weight, 0, net.fc.in_features ** -0.5)
    return net.eval()


def write_card(folder: Path, name: str, architecture: str, weights: Path) -> Path:
    card = {"schema": 1, "name": name, "description": f"test {architecture}",
            "architecture": architecture, "contract": CONTRACT,
            "weights": {"path": str(weights), "licence": "test"}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One random IResNet-50 saved as a ``module.``-prefixed checkpoint, TorchScript and ONNX."""
    folder = tmp_path_factory.mktemp("adapters")
    net = random_iresnet50()
    example = torch.randn(1, 3, 112, 112)
    files = {"iresnet50": folder / "backbone.pth", "torchscript": folder / "r50.torchscript.pt"}
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, files["iresnet50"])
    with torch.no_grad():
        torch.jit.trace(net, example).save(str(files["torchscript"]))
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return {arch: write_card(folder, arch, arch, path) for arch, path in files.items()}
    files["onnx"] = folder / "r50.onnx"
    torch.onnx.export(net, (example,), str(files["onnx"]), input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "batch"}},
                      dynamo=False)  # the dynamo exporter needs onnxscript
    return {arch: write_card(folder, arch, arch, path) for arch, path in files.items()}


# torch 2.14 deprecates torch.jit.load and the TorchScript-based ONNX exporter; both still work.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_checkpoint_torchscript_and_onnx_agree(exported):
    if "onnx" not in exported:
        pytest.skip("onnxruntime is not installed (pip install 'meerbench[onnx]')")
    images = torch.randint(0, 256, (3, 112, 112, 3), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    out = {}
    for arch, card in exported.items():
        model = model_from_card(card)
        assert model.cfg.embedding_dim == 512 and model.name == arch
        out[arch] = embed(model, ArrayImages(images), progress=False, precision="fp32").embeddings
    assert isinstance(model_from_card(exported["iresnet50"]), TorchFaceModel)
    ref = out["iresnet50"]
    assert ref.shape == (3, 512) and np.isfinite(ref).all()
    assert (ref @ ref.T)[~np.eye(3, dtype=bool)].max() < 0.99  # distinct images stay distinct
    for arch in ("torchscript", "onnx"):
        cosine = (out[arch] * ref).sum(axis=1)
        assert cosine.min() > 0.9999, (arch, cosine)


def test_weights_override_and_missing_file(exported, tmp_path):
    card = write_card(tmp_path, "gone", "iresnet50", tmp_path / "absent.pth")
    with pytest.raises(ModelError, match="absent.pth"):
        model_from_card(card)
    weights = yaml.safe_load(exported["iresnet50"].read_text())["weights"]["path"]
    assert isinstance(model_from_card(card, weights=weights), TorchFaceModel)


def small_net() -> nn.Module:
    return iresnet(18, width=0.25, input_size=32, embedding_dim=16)


def test_renamed_key_fails_with_a_diff(tmp_path):
    state = small_net().state_dict()
    state["layer1.0.bn_1.weight"] = state.pop("layer1.0.bn1.weight")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(ModelError) as info:
        load_checkpoint(small_net(), tmp_path / "renamed.pth")
    message = str(info.value)
    assert "1 missing: layer1.0.bn1.weight (file has layer1.0.bn_1.weight)" in message
    assert "1 unexpected: layer1.0.bn_1.weight" in message


def test_shape_mismatch_is_listed(tmp_path):
    torch.save(iresnet(18, width=0.25, input_size=64, embedding_dim=16).state_dict(),
               tmp_path / "other.pth")
    with pytest.raises(ModelError, match=r"fc.weight file \(16, 2048\) vs model \(16, 512\)"):
        load_checkpoint(small_net(), tmp_path / "other.pth")


def test_pickled_module_is_refused(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "whole.pth")
    with pytest.raises(ModelError, match="full unpickling"):
        load_checkpoint(nn.Linear(2, 2), tmp_path / "whole.pth")


def test_nested_and_safetensors_checkpoints_load(tmp_path):
    ref = small_net()
    torch.save({"state_dict_backbone": {f"backbone.{k}": v for k, v in ref.state_dict().items()},
                "epoch": 3}, tmp_path / "train.pt")
    loaded = load_checkpoint(small_net(), tmp_path / "train.pt")
    assert torch.equal(loaded.fc.weight, ref.fc.weight)
    safetensors = pytest.importorskip("safetensors.torch")
    state = {k: v.contiguous() for k, v in ref.state_dict().items() if "num_batches" not in k}
    safetensors.save_file(state, tmp_path / "net.safetensors")
    assert torch.equal(load_checkpoint(small_net(), tmp_path / "net.safetensors").fc.weight,
                       ref.fc.weight)


def astronaut_112() -> np.ndarray:
    """scikit-image's astronaut, aligned to the ArcFace 112x112 template from dlib's landmarks."""
    import dlib
    from skimage import data, transform

    from meerbench.models.weights import bundled_dlib_files

    files = bundled_dlib_files()
    assert files is not None, "face-recognition-models is not installed"
    predictor = dlib.shape_predictor(str(files["recognition"].parent
                                         / "shape_predictor_68_face_landmarks.dat"))
    photo = data.astronaut()
    boxes, scores, _ = dlib.get_frontal_face_detector().run(photo, 1)
    box = boxes[int(np.argmax(scores))]
    pts = np.array([[p.x, p.y] for p in predictor(photo, box).parts()], dtype=float)
    five = np.array([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
    template = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])
    tform = transform.SimilarityTransform.from_estimate(five, template)
    aligned = transform.warp(photo, tform.inverse, output_shape=(112, 112))
    return (aligned * 255).round().astype(np.uint8)


def test_dlib_embeds_the_astronaut():
    pytest.importorskip("dlib", reason="dlib is not installed (pip install 'meerbench[dlib]')")
    pytest.importorskip("skimage", reason="scikit-image is not installed")
    from meerbench.models import load_model

    face = astronaut_112()
    noise = np.random.default_rng(0).integers(0, 256, face.shape, dtype=np.uint8)
    images = torch.from_numpy(np.stack([face, face[:, ::-1], noise]))
    model = load_model("dlib-resnet")
    with torch.no_grad():
        raw = model.forward(model.cfg.preprocess(images)).numpy()
    assert raw.shape == (3, 128)
    assert np.linalg.norm(raw[0] - raw[1]) < 0.6 < np.linalg.norm(raw[0] - raw[2])
    out = embed(model, ArrayImages(images), progress=False)
    assert out.precision == "fp32" and out.embeddings.shape == (3, 128)
    assert out.embeddings[0] @ out.embeddings[1] > out.embeddings[0] @ out.embeddings[2]
