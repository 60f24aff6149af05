"""Weight files: download with a sha256 check, find them on disk (or say how to place them by
hand), verify them, and read their tensors. Every weights file meerbench loads goes through here.

Downloads stream into a temp file in the destination folder and are renamed into place only after
the hash matches, so an interrupted or corrupted download never leaves a file that looks valid.
A card without a known sha256 is never downloaded blindly: ``fetch_model_weights`` needs the hash
(``--sha256``) and otherwise explains where to put the file. A card's own file is checked against
the card's sha256 before it is loaded. Tensors are read from ``.safetensors`` files or with
``torch.load(weights_only=True)``: a file that needs full unpickling (it can run arbitrary code)
is refused, not loaded. Torch is imported only when tensors are read.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import pickle
import re
import textwrap
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from meerbench.errors import ModelError
from meerbench.io import atomic_open, sha256_file
from meerbench.models.card_schema import Card, get_card
from meerbench.settings import home

if TYPE_CHECKING:
    import torch
    from torch import nn

CHUNK = 1 << 20
TIMEOUT_S = 60
#: prefixes that training wrappers add to parameter names (DataParallel, arcface_torch's
#: ``backbone`` attribute, ``torch.compile``).
PREFIXES = ("module.", "backbone.", "_orig_mod.")
#: where training checkpoints nest the network's state dict.
NESTED_KEYS = ("state_dict", "state_dict_backbone", "model", "backbone", "net")
SHOWN = 5
#: what a weights file may be (said when one cannot be read).
CHECKPOINT_FORMATS = (
    "Accepted: a state dict of tensors saved with torch.save(model.state_dict(), path), "
    "possibly nested under state_dict/model/backbone; a .safetensors file; or, with the card's "
    "architecture set accordingly, a TorchScript or ONNX file.")


def weights_dir() -> Path:
    """Where fetched weights live: ``<meerbench home>/weights``."""
    return home() / "weights"


def fetch(url: str, sha256: str, file_name: str, dest_dir: Path | None = None,
          progress: bool = False) -> Path:
    """Download ``url`` to ``dest_dir/file_name`` unless a file with that sha256 is already there.

    http(s):// and file:// URLs work. On a hash mismatch nothing is left behind; on a network error
    the message names the URL, the file and the folder to place it in by hand.
    """
    dest_dir = weights_dir() if dest_dir is None else Path(dest_dir)
    target = dest_dir / file_name
    expected = sha256.lower()
    if target.is_file() and sha256_file(target) == expected:
        return target
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with atomic_open(target, "wb") as out:
                got = _copy_hashed(response, out, total, progress, file_name)
                if got != expected:
                    raise ModelError(
                        f"Downloaded {file_name} from {url} has sha256 {got}, expected {expected}; "
                        "the file was discarded. The download was corrupted or the file changed "
                        "upstream."
                    )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None:  # the folder, not the network
            raise ModelError(f"Cannot write {target}: {exc.strerror} at {exc.filename}; set "
                             "MEERBENCH_HOME to a writable folder.") from None
        reason = getattr(exc, "reason", None) or exc
        raise ModelError(
            f"Could not download {file_name} from {url} ({reason}). If this machine is offline, "
            f"download it elsewhere and place it at {target} (folder {dest_dir}), or pass its path "
            "with --weights."
        ) from None
    return target


def _copy_hashed(source: IO[bytes], out: IO[bytes], total: int | None, progress: bool,
                 label: str) -> str:
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress,
              leave=False) as bar:
        while block := source.read(CHUNK):
            digest.update(block)
            out.write(block)
            bar.update(len(block))
    return digest.hexdigest()


def local_weights(card: Card) -> Path | None:
    """The card's weight file if it is on disk (its ``path``, else the weights folder)."""
    spec = card.weights
    if spec is None or spec.bundled:
        return None
    path = spec.path if spec.path is not None else weights_dir() / spec.file_name
    return path if path.is_file() else None


def resolve_weights(card: Card, override_path: str | Path | None = None) -> Path:
    """The weight file to load: ``override_path`` if given, else the card's file (checked against
    the card's sha256 when it records one), else an error that says how to get it."""
    if override_path is not None:
        path = Path(override_path).expanduser()
        if not path.is_file():
            raise ModelError(f"Weights file not found: {path} (given for model {card.name}).")
        return path
    if card.weights is None or card.weights.bundled:
        raise ModelError(f"Model {card.name} takes no weights file.")
    found = local_weights(card)
    if found is None:
        raise ModelError(missing_message(card))
    expected = card.weights.sha256
    if expected is not None and (actual := sha256_file(found)) != expected:
        raise ModelError(f"{found}: sha256 {actual} does not match its card ({expected}, "
                         f"{card.source}); the file is corrupt or was replaced.")
    return found


def missing_message(card: Card) -> str:
    """How to obtain the card's weights: fetch command, or manual download and placement."""
    spec = card.weights
    assert spec is not None
    if spec.path is not None:
        return (f"Weights for {card.name} not found at {spec.path} (the card's weights.path, "
                f"{card.source}). Place the file there or pass --weights PATH.")
    target = weights_dir() / spec.file_name
    where = f"Place {spec.file_name} at {target} or pass --weights PATH."
    if spec.url:
        return (f"Weights for {card.name} are not downloaded yet. Run `meerbench weights fetch "
                f"{card.name}` (needs internet access to {spec.url}). Offline: {where}")
    page = f" from {spec.page}" if spec.page else ""
    return (f"Weights for {card.name} have no direct download URL; download them by hand{page} "
            f"(licence: {spec.licence or 'see the publisher'}). {where}")


def manual_download(card: Card) -> str | None:
    """For a card without a download URL, how to place its weights by hand: the source, which
    file to take (the card's notes), where it goes, and the commands that then use it. None for a
    card with a URL or without a weights file."""
    spec = card.weights
    if spec is None or spec.bundled or spec.url:
        return None
    target = spec.path if spec.path is not None else weights_dir() / spec.file_name
    found = local_weights(card)
    lines = [f"{card.name}: weights present at {found} (placed by hand)." if found else
             f"{card.name}: no direct download URL; place the weights file by hand."]
    lines.append(f"  source:   {spec.page or 'see the publisher (the card names no page)'}")
    if card.notes:
        lines.append(f"  which file, from the card's notes ({card.source}):")
        lines += textwrap.wrap(card.notes, 96, initial_indent="    ", subsequent_indent="    ")
    sha256 = spec.sha256 or "none published (every Result records the sha256 of the tensors)"
    lines += [f"  save as:  {target}",
              f"  licence:  {spec.licence or 'see the publisher'}",
              f"  sha256:   {sha256}",
              f"  then:     meerbench run --model {card.name}",
              f"  or keep it elsewhere: meerbench run --model {card.name} --weights PATH"]
    return "\n".join(lines)


def fetch_model_weights(name: str, sha256: str | None = None, progress: bool = True) -> Path:
    """``meerbench weights fetch NAME``: download a card's weights (``sha256`` overrides the
    card's hash, needed when the card has none)."""
    card = get_card(name)
    spec = card.weights
    if spec is None or spec.bundled:
        how = ("its files come with the Python package (pip install 'meerbench[dlib]')"
               if spec is not None else "it needs no weights")
        raise ModelError(f"Model {name} has nothing to fetch: {how}.")
    if not spec.url:
        raise ModelError(missing_message(card))
    expected = sha256 or spec.sha256
    if not expected:
        raise ModelError(
            f"The card for {name} ({card.source}) records no sha256 for {spec.url}, so the "
            "download cannot be verified. Check the publisher's hash and pass it with --sha256, "
            f"or place the file at {weights_dir() / spec.file_name} yourself."
        )
    return fetch(spec.url, expected, spec.file_name, progress=progress)


def bundled_dlib_files() -> dict[str, Path] | None:
    """dlib's ResNet descriptor and 5-point shape predictor from ``face_recognition_models``.

    Found with ``importlib.util.find_spec`` without importing the package (its ``__init__`` needs
    ``pkg_resources``, which recent setuptools no longer ships). ``None`` if not installed.
    """
    if importlib.util.find_spec("dlib") is None:
        return None
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = {"recognition": models / "dlib_face_recognition_resnet_model_v1.dat",
             "shape_5pt": models / "shape_predictor_5_face_landmarks.dat"}
    return files if all(p.is_file() for p in files.values()) else None


def safe_torch_load(path: Path, map_location: str | torch.device, advice: str) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain Python data, nothing else.

    A failure is a one-line ``ModelError`` that names the file, says what it is not, and ends
    with ``advice``; torch's own message (which suggests an unsafe load) is never passed on.
    """
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about the 'protocol' of arbitrary bytes
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        why = (f"it stores Python objects ({found.group(1)}) that only full unpickling could "
               "rebuild, which can run arbitrary code and is never done" if found else
               "it is not a PyTorch checkpoint (neither a torch.save archive nor a pickle of "
               "tensors)")
    except Exception as exc:  # arbitrary bytes make the unpickler fail in arbitrary ways
        detail = " ".join(str(exc).split(". ")[0].split()) or "no message"
        why = f"it is not a readable torch.save file ({type(exc).__name__}: {detail})"
    raise ModelError(f"{path} cannot be loaded as tensors: {why}. {advice}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save`` file, without unpickling objects."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelError(f"{path} is a safetensors file: pip install safetensors.") from None
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ModelError(f"{path} is not a readable safetensors file: {exc}") from None
    obj = safe_torch_load(path, "cpu", CHECKPOINT_FORMATS)
    return _find_state_dict(obj, path)


def _find_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                return _find_state_dict(inner, path)
        keys = ", ".join(map(str, list(obj)[:10]))
        raise ModelError(f"{path} holds no state dict of tensors (top-level keys: {keys}).")
    raise ModelError(f"{path} holds a {type(obj).__name__}, not a state dict.")


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (``module.``, ``backbone.``, ...) from every key."""
    out = {}
    for key, value in state.items():
        while key.startswith(PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def state_dict_diff(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> str:
    """A readable account of missing keys, unexpected keys and shape mismatches ('' if none).

    Missing ``num_batches_tracked`` buffers are ignored: old checkpoints lack them and they do not
    affect inference.
    """
    missing = [k for k in expected if k not in got and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in got if k not in expected]
    shapes = [k for k in expected if k in got and tuple(expected[k].shape) != tuple(got[k].shape)]
    parts = []
    if missing:
        shown = []
        for key in missing[:SHOWN]:
            close = difflib.get_close_matches(key, unexpected, n=1, cutoff=0.8)
            shown.append(f"{key} (file has {close[0]})" if close else key)
        parts.append(f"{len(missing)} missing: {_listing(shown, len(missing))}")
    if unexpected:
        shown = unexpected[:SHOWN]
        parts.append(f"{len(unexpected)} unexpected: {_listing(shown, len(unexpected))}")
    if shapes:
        shown = [f"{k} file {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in shapes[:SHOWN]]
        parts.append(f"{len(shapes)} with another shape: {_listing(shown, len(shapes))}")
    return "; ".join(parts)


def _listing(items: list[str], total: int) -> str:
    more = f", ... ({total - len(items)} more)" if total > len(items) else ""
    return ", ".join(items) + more


def load_checkpoint(net: nn.Module, path: Path) -> nn.Module:
    """Load ``path`` into ``net`` strictly (after stripping wrapper prefixes); return ``net``."""
    return load_state(net, strip_prefixes(read_state_dict(path)), path)


def load_state(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """Load the (prefix-stripped) tensors ``state`` read from ``path`` into ``net`` strictly;
    a mismatch names the file and lists missing, unexpected and reshaped keys."""
    expected = net.state_dict()
    diff = state_dict_diff(expected, state)
    if diff:
        raise ModelError(
            f"{path} does not match {type(net).__name__}: {diff}. Check the architecture (the "
            "card's, or --arch), its options and the input size against the checkpoint."
        )
    for key in expected:
        state.setdefault(key, expected[key])  # only num_batches_tracked can be absent here
    net.load_state_dict(state, strict=True)
    return net
