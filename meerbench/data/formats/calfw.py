"""CALFW and CPLFW: a flat folder ``aligned images/`` and ``pairs_CALFW.txt`` / ``pairs_CPLFW.txt``.

Pair-file format (not in the research notes; taken from FaceX-Zoo's parsers and a checksum-pinned
audit of the official CALFW file): no header; each pair is two consecutive ``file token`` lines
with the same token on both; token 0 marks a negative pair, any other a positive one (in CALFW
the positive tokens are the fold numbers 1..10). All positive pairs come first, then all
negatives: 3,000 + 3,000. Fold k is the k-th block of 300 positives plus the k-th block of 300
negatives (FaceX-Zoo's rule). Identities come from file names (``Name_0001.jpg`` in CALFW,
``Name_1.jpg`` in CPLFW) through the ``identity_regex`` option. The flat-folder helpers here are
shared with MLFW, a masked renovation of CALFW.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from meerbench.data.dataset import Dataset, Pair, Sample
from meerbench.data.formats.inputs import option_path
from meerbench.data.formats.pairlists import FOLDS, image_files, line_error, read_rows
from meerbench.errors import DatasetError
from meerbench.schema import Fields

CALFW_IDENTITY = r"(?P<identity>.+)_\d+\.jpg"
IMAGE_FOLDERS = ("aligned images", "aligned_images")


def identity_regex(fields: Fields, default: str) -> re.Pattern[str]:
    """The ``identity_regex`` option: a regex with an ``identity`` group, matched in full."""
    text = fields.get("identity_regex", str, default)
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise fields.error("identity_regex", f"a valid regular expression ({exc})") from None
    if "identity" not in pattern.groupindex:
        raise fields.error("identity_regex", "a regular expression with a group (?P<identity>...)")
    return pattern


class FlatFolder:
    """Images in one folder whose identities are derived from their file names."""

    def __init__(self, root: Path, images: Path, pattern: re.Pattern[str], masked: bool) -> None:
        if not images.is_dir():
            raise DatasetError(f"Image folder not found: {images}")
        self.root, self.images, self.pattern = root, images, pattern
        self.samples: list[Sample] = []
        for path in image_files(images):
            identity = self._identity(path.name)
            if identity is None:
                raise DatasetError(f"{path}: cannot derive an identity from the file name with "
                                   f"identity_regex {pattern.pattern!r}")
            self.samples.append(Sample(key=path.relative_to(root).as_posix(), path=path,
                                       identity=identity, masked=masked))
        if not self.samples:
            raise DatasetError(f"No images found in {images}")
        self.keys = {s.key for s in self.samples}
        self.identities = {s.identity for s in self.samples}

    def _identity(self, file: str) -> str | None:
        match = self.pattern.fullmatch(file)
        return match["identity"] if match else None

    def key(self, file: str, path: Path, line: int) -> tuple[str, str]:
        """Sample key and identity of an image named on ``line`` of the pairs file ``path``."""
        identity = self._identity(file)
        if identity is None:
            raise line_error(path, line, f"cannot derive an identity from {file!r} with "
                                         f"identity_regex {self.pattern.pattern!r}")
        if identity not in self.identities:
            raise line_error(path, line, f"unknown identity {identity!r} (of {file!r}): no image "
                                         f"of it in {self.images}")
        image = self.images / file
        key = image.relative_to(self.root).as_posix()
        if key not in self.keys:
            raise line_error(path, line, f"image is missing: {image}")
        return key, identity

    def pair(self, first: tuple[str, int], second: tuple[str, int], label: int, fold: int,
             path: Path) -> Pair:
        """A pair of (file, line) references whose label agrees with the images' identities."""
        ref, id1 = self.key(first[0], path, first[1])
        probe, id2 = self.key(second[0], path, second[1])
        if (id1 == id2) != bool(label):
            said = "same identity" if label else "different identities"
            raise line_error(path, first[1], f"the pair is labelled {said} but its images belong "
                                             f"to {id1!r} and {id2!r}")
        return Pair(ref, probe, label, fold)


class _CrossLFWFormat:
    """Options: ``images`` (default ``aligned images``, also found as ``aligned_images``),
    ``pairs``, ``identity_regex`` (default ``(?P<identity>.+)_\\d+\\.jpg``) and ``masked`` (default
    false: the official images are unmasked; set it for a copy with synthetic masks)."""

    needs_root = True
    dataset = ""
    pairs_file = ""
    about = ""

    def read(self, root: Path | None, options: dict[str, Any], name: str) -> Dataset:
        fields = Fields(options, f"dataset '{name}'", "dataset.options")
        images_name = fields.get("images", str, None)
        pairs_name = fields.get("pairs", str, self.pairs_file)
        pattern = identity_regex(fields, CALFW_IDENTITY)
        masked = fields.get("masked", bool, False)
        fields.finish()
        assert root is not None
        if images_name is None:
            images_name = next((f for f in IMAGE_FOLDERS if (root / f).is_dir()), IMAGE_FOLDERS[0])
        folder = FlatFolder(root, option_path(root, images_name, name, "images"), pattern, masked)
        pairs_path = option_path(root, pairs_name, name, "pairs")
        pairs = _two_line_pairs(pairs_path, folder)
        return Dataset(name, root, folder.samples, pairs, info={
            "format": self.dataset, "pairs_file": str(pairs_path),
            "identity_regex": pattern.pattern,
            "fold_rule": "fold k = k-th tenth of the positive pairs + k-th tenth of the negatives",
        })


def _two_line_pairs(path: Path, folder: FlatFolder) -> list[Pair]:
    """Pairs of a CALFW/CPLFW file: two ``file token`` lines each, positives first."""
    rows = read_rows(path, "Pairs file")
    if len(rows) % 2:
        raise line_error(path, rows[-1][0], "odd number of lines: this pair has no second line")
    for line, tokens in rows:
        if len(tokens) != 2 or not tokens[1].isdigit():
            raise line_error(path, line, f"expected 'file label' (label 0 for a negative pair), "
                                         f"got {' '.join(tokens)!r}")
    pairs = []  # (first (file, line), second (file, line), label)
    for (line1, (file1, token1)), (line2, (file2, token2)) in zip(
        rows[::2], rows[1::2], strict=True
    ):
        if int(token1) != int(token2):
            raise line_error(path, line2, f"label {token2} differs from label {token1} on line "
                                          f"{line1}: both lines of a pair carry the same label")
        pairs.append(((file1, line1), (file2, line2), int(int(token1) != 0)))
    positives = next((i for i, p in enumerate(pairs) if not p[2]), len(pairs))
    late = next((p for p in pairs[positives:] if p[2]), None)
    if late is not None:
        raise line_error(path, late[0][1], "positive pair after the negative ones began: expected "
                                           "all positive pairs first, then all negative pairs")
    negatives = len(pairs) - positives
    if positives != negatives or positives % FOLDS:
        raise DatasetError(f"{path}: expected as many negative as positive pairs, a multiple of "
                           f"{FOLDS} each (officially 3000 + 3000), got {positives} + {negatives}")
    block = positives // FOLDS
    return [folder.pair(first, second, label, (i if label else i - positives) // block, path)
            for i, (first, second, label) in enumerate(pairs)]


class CALFWFormat(_CrossLFWFormat):
    dataset = "calfw"
    pairs_file = "pairs_CALFW.txt"
    about = (
        "CALFW is obtained from http://www.whdeng.cn/CALFW/ (aligned images and pairs_CALFW.txt). "
        "Expected layout: <root>/aligned images/<Name>_0001.jpg and <root>/pairs_CALFW.txt."
    )


class CPLFWFormat(_CrossLFWFormat):
    dataset = "cplfw"
    pairs_file = "pairs_CPLFW.txt"
    about = (
        "CPLFW is obtained from http://www.whdeng.cn/CPLFW/ (aligned images and pairs_CPLFW.txt). "
        "Expected layout: <root>/aligned images/<Name>_1.jpg and <root>/pairs_CPLFW.txt."
    )
