"""Models given as a path (``meerbench run --model PATH``, ``load_model(PATH)``): a model card
(``.yaml``, or a folder holding ``card.yaml``), an ONNX graph, a TorchScript file, or a plain
checkpoint (state dict or ``.safetensors``) whose architecture is named (``arch``).

A card gives its model everything. A bare file takes its preprocessing contract from keyword
arguments (the CLI's ``--input-size``, ``--channels``, ``--mean``, ``--std``, ``--embedding-dim``,
``--flip-fusion``) whose defaults are ArcFace's: 112x112 RGB, ``(x/255 - 0.5)/0.5``, faces
aligned to the ArcFace five-point template, no flip fusion. Without ``embedding_dim`` the width
is measured: the output layer of a checkpoint, one blank forward pass of ONNX and TorchScript.
The model is named after the file's stem (a card's model after the card), unless ``name``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from meerbench.errors import ConfigError, ModelError
from meerbench.models.card_schema import IRESNETS, read_card
from meerbench.models.contract import FaceModelCfg
from meerbench.schema import is_plain_name

if TYPE_CHECKING:
    from meerbench.models.base import FaceModel

#: architectures a plain checkpoint can be loaded into (``--arch``).
STATE_DICT_ARCHITECTURES = (*IRESNETS, "mobilefacenet")
#: the parameter whose first dimension is the embedding width, per architecture family.
OUTPUT_LAYER = {"mobilefacenet": "features.layers.2.weight", "iresnet": "fc.weight"}
CARD_SUFFIXES = (".yaml", ".yml")
TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".bin", ".ckpt", ".safetensors")
MODEL_SUFFIXES = (*CARD_SUFFIXES, ".onnx", *TORCH_SUFFIXES)
ACCEPTED = (
    "Accepted: a model card (.yaml, or a folder holding card.yaml), an ONNX file (.onnx), a "
    "TorchScript file (.pt, .pth, .ts; torch.jit.save), or a plain checkpoint (a state dict or "
    f".safetensors) with --arch {'|'.join(STATE_DICT_ARCHITECTURES)}.")


def is_model_path(name: str) -> bool:
    """Whether ``load_model(name)`` reads a file: ``name`` is no registered model and is an
    existing path or looks like one (a folder separator, or a model file's suffix outside a
    ``<restorer>+<recognizer>`` composition)."""
    from meerbench.registry import MODELS

    if name in MODELS:
        return False
    path = Path(name).expanduser()
    if path.exists():
        return True
    return "+" not in name and ("/" in name or os.sep in name
                                or path.suffix.lower() in MODEL_SUFFIXES)


def model_from_file(path: str | Path, *, weights: str | Path | None = None,
                    arch: str | None = None, name: str | None = None,
                    input_size: tuple[int, int] | None = None, channels: str | None = None,
                    mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                    embedding_dim: int | None = None, flip_fusion: str | None = None,
                    ) -> FaceModel:
    """The model in the file (or card folder) ``path``; see the module docstring."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"Model file not found: {path} (and no registered model has that name; "
                         "see `meerbench list models`).")
    kind = file_kind(path, arch)
    contract = {"input_size": input_size, "channels": channels, "mean": mean, "std": std,
                "embedding_dim": embedding_dim, "flip_fusion": flip_fusion}
    given = [f"--{k.replace('_', '-')}" for k, v in contract.items() if v is not None]
    if kind == "card":
        if arch is not None or given:
            raise ModelError(f"{path} is a model card: it gives the architecture and contract, "
                             f"so drop {', '.join((['--arch'] if arch else []) + given)}.")
        card = read_card(path / "card.yaml" if path.is_dir() else path)
        from meerbench.models.cards import build_model

        return build_model(card if name is None else replace(card, name=_name(name, path)),
                           weights)
    if weights is not None:
        raise ModelError(f"--weights {weights}: {path} is a {kind} file that holds its own "
                         "weights; --weights replaces the weights of a card.")
    cfg = _contract(path, contract)
    model_name = _name(name if name is not None else path.stem, path)
    if kind == "checkpoint":
        assert arch is not None
        return _checkpoint(model_name, cfg, arch, path, embedding_dim is not None)
    from meerbench.models.adapters import OnnxFaceModel, probe_width, torchscript_model

    model = (OnnxFaceModel(model_name, cfg, path, check_width=embedding_dim is not None)
             if kind == "onnx" else torchscript_model(model_name, cfg, path))
    if embedding_dim is None:
        model.cfg = replace(cfg, embedding_dim=probe_width(model, path))
    return model


def file_kind(path: Path, arch: str | None) -> str:
    """``card``, ``onnx``, ``torchscript`` or ``checkpoint`` (``arch`` given), from the path's
    suffix and, for torch files, its content; anything else is a ``ModelError``."""
    if arch is not None and arch not in STATE_DICT_ARCHITECTURES:
        raise ModelError(f"--arch {arch}: unknown; plain checkpoints load into "
                         f"{', '.join(STATE_DICT_ARCHITECTURES)}.")
    if path.is_dir():
        if (path / "card.yaml").is_file():
            kind = "card"
        else:
            raise ModelError(f"{path} is a folder without card.yaml. {ACCEPTED}")
    elif path.suffix.lower() in CARD_SUFFIXES:
        kind = "card"
    elif path.suffix.lower() == ".onnx":
        kind = "onnx"
    elif arch is not None:
        return "checkpoint"
    elif is_torchscript(path):
        return "torchscript"
    elif path.suffix.lower() in TORCH_SUFFIXES:
        raise ModelError(f"{path} is not a TorchScript file; a plain checkpoint (state dict or "
                         f".safetensors) needs its architecture: --arch "
                         f"{'|'.join(STATE_DICT_ARCHITECTURES)}.")
    else:
        raise ModelError(f"{path}: not a model file meerbench knows. {ACCEPTED}")
    if arch is not None:
        what = "an ONNX file" if kind == "onnx" else "a model card, which names its architecture"
        raise ModelError(f"--arch {arch} applies to a plain checkpoint; {path} is {what}.")
    return kind


def is_torchscript(path: Path) -> bool:
    """A ``torch.jit.save`` archive: a zip holding ``code/`` and ``constants.pkl`` (a
    ``torch.save`` state dict holds neither)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _contract(path: Path, given: dict[str, object]) -> FaceModelCfg:
    """The flags' contract on ArcFace's defaults; one mean or std value serves every channel."""
    fields = {k: v for k, v in given.items() if v is not None}
    n = 1 if fields.get("channels") == "GRAY" else 3
    for key in ("mean", "std"):
        value = tuple(fields.get(key, (0.5,)))  # type: ignore[arg-type]
        fields[key] = value * n if len(value) == 1 else value
    try:
        return FaceModelCfg(**fields)  # type: ignore[arg-type]
    except ConfigError as exc:  # names the field: contract.mean is --mean
        raise ModelError(f"{path}: the contract given by the flags: {exc}") from None


def _name(name: str, path: Path) -> str:
    if not is_plain_name(name):
        raise ModelError(f"Model name {name!r} (from {path}) cannot name a Result file: use "
                         "letters, digits, '.', '_', '+' and '-'; pass --name.")
    return name


def _checkpoint(name: str, cfg: FaceModelCfg, arch: str, path: Path, dim_given: bool
                ) -> FaceModel:
    """A state dict or safetensors file in ``arch``'s network (width read from its output layer
    unless given)."""
    from meerbench.models.base import TorchFaceModel
    from meerbench.models.cards import network
    from meerbench.models.weights import load_state, read_state_dict, strip_prefixes

    state = strip_prefixes(read_state_dict(path))
    output = state.get(OUTPUT_LAYER["mobilefacenet" if arch == "mobilefacenet" else "iresnet"])
    if not dim_given and output is not None and output.ndim == 2:
        cfg = replace(cfg, embedding_dim=int(output.shape[0]))
    net = network(arch, cfg, {}, str(path))
    return TorchFaceModel(name, cfg, load_state(net, state, path))
