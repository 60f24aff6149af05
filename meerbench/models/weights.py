"""Weight files: download with a sha256 check, find them on disk, or say how to place them by hand.

Downloads stream into a temp file in the destination folder and are renamed into place only after
the hash matches, so an interrupted or corrupted download never leaves a file that looks valid.
A card without a known sha256 is never downloaded blindly: ``fetch_model_weights`` needs the hash
(``--sha256``) and otherwise explains where to put the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING

from meerbench.errors import ModelError
from meerbench.io import atomic_open, sha256_file
from meerbench.settings import home

if TYPE_CHECKING:
    from meerbench.models.cards import Card

CHUNK = 1 << 20
TIMEOUT_S = 60


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
    """The weight file to load: ``override_path`` if given, else the card's file, else an error
    that says how to get it."""
    if override_path is not None:
        path = Path(override_path).expanduser()
        if not path.is_file():
            raise ModelError(f"Weights file not found: {path} (given for model {card.name}).")
        return path
    if card.weights is None or card.weights.bundled:
        raise ModelError(f"Model {card.name} takes no weights file.")
    found = local_weights(card)
    if found is not None:
        return found
    raise ModelError(missing_message(card))


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


def fetch_model_weights(name: str, sha256: str | None = None, progress: bool = True) -> Path:
    """``meerbench weights fetch NAME``: download a card's weights (``sha256`` overrides the
    card's hash, needed when the card has none)."""
    from meerbench.models.cards import get_card

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
