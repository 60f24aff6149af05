"""Adapters that turn weight files into ``FaceModel``s: PyTorch checkpoints (and safetensors),
TorchScript, ONNX Runtime and dlib's ResNet descriptor.

Every adapter takes the contract (``FaceModelCfg``) from the model card; the engine applies it with
``cfg.preprocess`` before ``forward``. Weight files are found, verified and read by
``meerbench.models.weights``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from meerbench.errors import ModelError
from meerbench.io import sha256_file
from meerbench.models.base import FaceModel, FaceModelCfg, TorchFaceModel
from meerbench.models.weights import bundled_dlib_files, load_checkpoint


def checkpoint_model(name: str, cfg: FaceModelCfg, net: nn.Module, path: Path) -> TorchFaceModel:
    """A network built from its card with the weights of ``path``."""
    return TorchFaceModel(name, cfg, load_checkpoint(net, path))


def torchscript_model(name: str, cfg: FaceModelCfg, path: Path) -> TorchFaceModel:
    """A TorchScript file (``torch.jit.save`` of a traced or scripted network)."""
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"{path} is not a readable TorchScript file: {exc}") from None
    return TorchFaceModel(name, cfg, module)


class OnnxFaceModel(FaceModel):
    """An ONNX network run by ONNX Runtime (insightface model-zoo style: NCHW float input).

    The first input takes the preprocessed batch; the first output is the embedding. A model
    exported with a fixed batch size of 1 is run one image at a time. ``check_width=False`` skips
    comparing the graph's output width with ``cfg.embedding_dim`` (a file without a card, whose
    width is then measured with ``probe_width``).
    """

    def __init__(self, name: str, cfg: FaceModelCfg, path: Path, *,
                 check_width: bool = True) -> None:
        super().__init__(name, cfg)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError("ONNX models need onnxruntime: "
                             "pip install 'meerbench[onnx]'.") from None
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path} is not a loadable ONNX model: {exc}") from None
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        self.fixed_batch = spec.shape[0] if isinstance(spec.shape[0], int) else None
        channels = 1 if cfg.channels == "GRAY" else 3
        want = [channels, *cfg.input_size]
        got = list(spec.shape[1:])
        if len(got) != 3 or any(isinstance(g, int) and g != w for g, w in zip(got, want,
                                                                              strict=True)):
            raise ModelError(f"{self.path} takes input {spec.shape}, but the card's contract "
                             f"gives (N, {channels}, {cfg.input_size[0]}, {cfg.input_size[1]}).")
        out = self.session.get_outputs()[0].shape
        if check_width and out and isinstance(out[-1], int) and out[-1] != cfg.embedding_dim:
            raise ModelError(f"{self.path} outputs {out[-1]}-d embeddings (shape {out}), but the "
                             f"card's contract gives embedding_dim {cfg.embedding_dim}.")
        self._hash: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().float().cpu().contiguous().numpy()
        if self.fixed_batch == 1:
            outs = [self.session.run(None, {self.input_name: batch[i:i + 1]})[0]
                    for i in range(len(batch))]
            out = np.concatenate(outs)
        else:
            out = self.session.run(None, {self.input_name: batch})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    def weights_hash(self) -> str:
        if self._hash is None:
            self._hash = sha256_file(self.path)
        return self._hash


def probe_width(model: FaceModel, source: Path) -> int:
    """The embedding width ``model``'s network outputs: one forward pass of a blank batch of two
    images of its contract's size (for a model file ``source`` that comes without a card)."""
    h, w = model.cfg.input_size
    blank = torch.zeros(2, 1 if model.cfg.channels == "GRAY" else 3, h, w)
    try:
        with torch.no_grad():
            out = model.forward(blank)
    except Exception as exc:  # a foreign network fails in its own ways; its last line says why
        why = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
        raise ModelError(f"{source} fails on a blank (2, {blank.shape[1]}, {h}, {w}) batch "
                         f"({type(exc).__name__}: {why[-1]}); check --input-size and "
                         "--channels.") from None
    if out.ndim != 2 or out.shape[0] != 2:
        raise ModelError(f"{source} outputs shape {tuple(out.shape)} for a batch of two, not "
                         "(2, D) embeddings.")
    return int(out.shape[1])


#: where dlib's HOG detector puts its box around a frontal face, in the ArcFace 112x112 template
#: (measured on scikit-image's astronaut; moving it by 5 px changes descriptors by < 0.02).
DLIB_BOX_112 = (11, 34, 93, 108)


class DlibFaceModel(FaceModel):
    """dlib's ResNet 128-D face descriptor on aligned face crops.

    dlib wants its own 150x150 chip. From an ArcFace-aligned crop, the 5-point shape predictor
    finds eye corners and nose inside ``DLIB_BOX_112`` (the box dlib's detector would give), and
    ``dlib.get_face_chip`` (size 150, padding 0.25) makes the chip exactly as dlib's own pipeline
    does. On the astronaut this lands 0.15 from the descriptor of dlib's full detect-and-align
    pipeline on the original photo; the whole crop resized to 150 lands 0.74 (dlib's same-person
    threshold is 0.6). The contract must hand over raw 0..255 RGB values: mean 0, std 1/255.
    """

    def __init__(self, name: str, cfg: FaceModelCfg) -> None:
        super().__init__(name, cfg)
        try:
            import dlib
        except ImportError:
            raise ModelError("The dlib model needs dlib: pip install 'meerbench[dlib]'.") from None
        files = bundled_dlib_files()
        if files is None:
            raise ModelError("dlib's model files were not found: pip install 'meerbench[dlib]' "
                             "(face-recognition-models ships them).")
        probe = cfg.preprocess(torch.full((1, *cfg.input_size, 3), 255, dtype=torch.uint8))
        if cfg.channels != "RGB" or not torch.allclose(probe, torch.tensor(255.0), atol=0.01):
            raise ModelError(f"{name}: the dlib model needs RGB input in 0..255 (contract "
                             "channels RGB, mean 0, std 1/255).")
        self.files = files
        self.dlib = dlib
        self.shape_predictor = dlib.shape_predictor(str(files["shape_5pt"]))
        self.net = dlib.face_recognition_model_v1(str(files["recognition"]))
        h, w = cfg.input_size
        left, top, right, bottom = DLIB_BOX_112
        self.box = dlib.rectangle(round(left * w / 112), round(top * h / 112),
                                  round(right * w / 112), round(bottom * h / 112))
        self._hash: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.detach().float().clamp(0, 255).round().to(torch.uint8)
        images = np.ascontiguousarray(images.permute(0, 2, 3, 1).cpu().numpy())
        chips = [
            self.dlib.get_face_chip(img, self.shape_predictor(img, self.box), size=150,
                                    padding=0.25)
            for img in images
        ]
        out = np.array(self.net.compute_face_descriptor(chips), dtype=np.float32)
        return torch.from_numpy(out.reshape(len(chips), -1)).to(x.device)

    def weights_hash(self) -> str:
        if self._hash is None:
            digest = hashlib.sha256()
            for key in sorted(self.files):
                digest.update(sha256_file(self.files[key]).encode())
            digest.update(repr(DLIB_BOX_112).encode())
            self._hash = digest.hexdigest()
        return self._hash
