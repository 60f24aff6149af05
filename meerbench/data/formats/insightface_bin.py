"""insightface verification ``.bin`` files: a pickle of ``(jpeg_bytes_list, issame)``.

Pair i is images 2i and 2i+1; ``issame[i]`` is its label; folds are 10 contiguous blocks. A
pickle can run code when loaded, so the file goes through an unpickler that resolves only the
few globals a genuine bin needs and refuses everything else before it is called. The JPEG bytes
are written unchanged, once, to ``<cache>/bins/<sha256[:16]>/`` (built in a temporary folder and
renamed into place) and the samples point there.

A bin stores no identities. Each image gets a placeholder: both images of genuine pair i are
``pair<i>``, the images of impostor pair i are ``pair<i>a`` and ``pair<i>b``. The same person in
two pairs has two placeholders, so only the official pairs are meaningful: identification and
protocol-generated pairs are impossible on a bin.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from meerbench.data.dataset import Dataset, Pair, Sample
from meerbench.data.formats.inputs import option_path
from meerbench.data.formats.pairlists import FOLDS, contiguous_fold
from meerbench.errors import DatasetError
from meerbench.schema import Fields
from meerbench.store import Artefact

JPEG_START = b"\xff\xd8"


def _latin1(text: str, encoding: str) -> bytes:
    """Stands in for ``_codecs.encode``, which Python 3 pickles bytes with at protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed as bytes(text, 'latin1')")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What a genuine bin may reference: bytes/list/tuple/bool and a numpy bool array's pieces
    (Python 2 and 3 module names, numpy 1 and 2 paths, pickle protocols 2 to 5)."""
    probe = np.zeros(1, dtype=bool)
    reconstruct = probe.__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it
    frombuffer = probe.__reduce_ex__(5)[0]  # numpy's _frombuffer (protocol 5 arrays)
    allowed: dict[tuple[str, str], Any] = {("_codecs", "encode"): _latin1,
                                           ("numpy", "ndarray"): np.ndarray,
                                           ("numpy", "dtype"): np.dtype}
    for builtins in ("builtins", "__builtin__"):
        allowed.update({(builtins, t.__name__): t for t in (bytes, list, tuple, bool)})
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of ``_allowed_globals``; any other is refused, never imported."""

    def __init__(self, data: bytes, source: Path) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")  # Python 2 str -> bytes
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise DatasetError(f"refused to unpickle {module}.{name} from {self.source}: a "
                               "genuine insightface .bin holds only JPEG bytes and booleans")
        return self.allowed[(module, name)]


def load_bin(path: Path) -> tuple[list[bytes], list[bool], str]:
    """Safely unpickle and validate a bin: (JPEG bytes per image, label per pair, file sha256)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"insightface .bin not found: {path}") from None
    try:
        loaded = RestrictedUnpickler(data, path).load()
    except DatasetError:
        raise
    except Exception as exc:  # any failure inside a foreign pickle means a malformed file
        raise DatasetError(f"{path}: not a readable insightface .bin ({exc!r})") from None
    return (*_validate(loaded, path), hashlib.sha256(data).hexdigest())


def _validate(loaded: object, path: Path) -> tuple[list[bytes], list[bool]]:
    def fail(what: str) -> DatasetError:
        return DatasetError(f"{path}: {what}; expected the pickle of (list of JPEG bytes, issame "
                            "list or numpy bool array with one entry per pair)")

    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2:
        raise fail(f"top level is {type(loaded).__name__}, not a pair (bins, issame)")
    bins, issame = loaded
    if not isinstance(bins, (list, tuple)):
        raise fail(f"bins is {type(bins).__name__}, not a list")
    for i, item in enumerate(bins):
        if not isinstance(item, bytes):
            raise fail(f"image {i} is {type(item).__name__}, not bytes")
        if not item.startswith(JPEG_START):
            raise fail(f"image {i} is not JPEG data (starts with {item[:4]!r})")
    if isinstance(issame, np.ndarray):
        if issame.dtype != np.bool_ or issame.ndim != 1:
            raise fail(f"issame is a {issame.dtype} array of shape {issame.shape}, not 1-d bool")
        labels = [bool(x) for x in issame]
    elif isinstance(issame, (list, tuple)):
        bad = next((x for x in issame if not isinstance(x, (bool, np.bool_))), None)
        if bad is not None:
            raise fail(f"issame holds {type(bad).__name__} {bad!r}, not only booleans")
        labels = [bool(x) for x in issame]
    else:
        raise fail(f"issame is {type(issame).__name__}")
    if not labels or len(bins) != 2 * len(labels):
        raise fail(f"{len(bins)} images for {len(labels)} pairs (need exactly 2 per pair)")
    return list(bins), labels


def _cache_images(bins: list[bytes], digest: str) -> Artefact:
    """The JPEG bytes written once as the store artefact ``<home>/bins/<digest[:32]>``."""
    def fill(folder: Path) -> None:
        for i, image in enumerate(bins):
            (folder / f"{i:06d}.jpg").write_bytes(image)

    artefact = Artefact("bins", {"bin_sha256": digest, "images": len(bins)})
    artefact.ensure(fill)
    return artefact


def _find_bin(root: Path, file: str | None, name: str) -> Path:
    """The bin to read: ``file``, the root itself, ``<name>.bin`` or the only bin; in the root."""
    if file is None and root.is_file():
        return root
    if file is None:
        named = f"{name}.bin"
        found = [named] if (root / named).is_file() else sorted(p.name for p in root.glob("*.bin"))
        if len(found) != 1:
            listed = ", ".join(found) or "none"
            raise DatasetError(f"Cannot tell which .bin to read in {root} (found: {listed}); set "
                               "dataset.options.file.")
        file = found[0]
    return option_path(root, file, name, "file")


class InsightfaceBinFormat:
    """Options: ``file`` (the .bin inside the root; default: the root itself if it is a file, else
    ``<name>.bin``, else the only .bin there) and ``masked`` (mark all images masked, default
    false: a bin does not say)."""

    needs_root = True
    about = (
        "insightface verification bins (lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, ...) ship "
        "inside the training-set archives listed at https://github.com/deepinsight/insightface/"
        "tree/master/recognition/_datasets_ (e.g. MS1M-ArcFace). Expected: the .bin file itself, "
        "or a folder holding it."
    )

    def read(self, root: Path | None, options: dict[str, Any], name: str) -> Dataset:
        fields = Fields(options, f"dataset '{name}'", "dataset.options")
        file = fields.get("file", str, None)
        masked = fields.get("masked", bool, False)
        fields.finish()
        assert root is not None
        path = _find_bin(root, file, name)
        bins, labels, digest = load_bin(path)
        images = _cache_images(bins, digest)
        folder = images.dir
        samples, pairs = [], []
        for i, same in enumerate(labels):
            keys = (f"{2 * i:06d}.jpg", f"{2 * i + 1:06d}.jpg")
            identities = (f"pair{i:06d}",) * 2 if same else (f"pair{i:06d}a", f"pair{i:06d}b")
            samples += [Sample(key=k, path=folder / k, identity=ident, masked=masked,
                               sha256=images.sha256(k))
                        for k, ident in zip(keys, identities, strict=True)]
            pairs.append(Pair(keys[0], keys[1], int(same), contiguous_fold(i, len(labels), FOLDS)))
        # a bin stores each image once per pair it is in: repeats are its layout, not a mistake
        return Dataset(name, folder, samples, pairs, unique_content=False, info={
            "format": "insightface-bin", "file": str(path), "sha256": digest,
            "cache": str(folder), "fold_rule": f"pair i of n gets fold i*{FOLDS}//n",
            "identities": "placeholders per pair (pair<i>, or pair<i>a/pair<i>b for impostors): "
                          "a bin stores no identities, so identification is impossible",
        })
