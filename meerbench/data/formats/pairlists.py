"""Text helpers of the pair-list readers: LFW and the datasets derived from it (MFR2, MLFW,
CALFW/CPLFW, RMFRD) and the insightface bins, whose pair files follow LFW's habits: numbered token
rows, errors naming file and line, and LFW's ten folds."""

from __future__ import annotations

from pathlib import Path

from meerbench.data.dataset import Pair, Sample
from meerbench.data.formats.inputs import read_text
from meerbench.data.images import IMAGE_SUFFIXES
from meerbench.errors import DatasetError

#: Official verification folds of LFW-style pair lists (also how lists without folds are cut).
FOLDS = 10

Row = tuple[int, list[str]]  # (1-based line number, whitespace-separated tokens)


def line_error(path: Path, line: int, message: str) -> DatasetError:
    return DatasetError(f"{path}, line {line}: {message}")


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Stripped lines of a text file with 1-based numbers. CRLF, a BOM and trailing blank lines
    are tolerated; a blank line before the end is an error (it would shift every later pair)."""
    lines = [line.strip() for line in read_text(path, what).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DatasetError(f"{what} is empty: {path}")
    for number, line in enumerate(lines, start=1):
        if not line:
            raise line_error(path, number, "unexpected blank line")
    return list(enumerate(lines, start=1))


def read_rows(path: Path, what: str) -> list[Row]:
    """``read_lines`` split into tokens at spaces or tabs."""
    return [(number, line.split()) for number, line in read_lines(path, what)]


def image_number(token: str, path: Path, line: int) -> int:
    """An LFW-style image number (``4`` in ``name 1 4``): a positive integer."""
    if not token.isdigit() or int(token) < 1:
        raise line_error(path, line, f"expected a positive image number, got {token!r}")
    return int(token)


def contiguous_fold(i: int, n: int, folds: int = FOLDS) -> int:
    """Fold of the i-th of n ordered pairs when they are cut into ``folds`` contiguous blocks."""
    return i * folds // n


def image_files(folder: Path) -> list[Path]:
    """Image files in ``folder`` (not recursive), sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class PairKeys:
    """Turns LFW-style ``name, number`` references into sample keys, checking they exist."""

    def __init__(
        self, root: Path, images: Path, samples: list[Sample], pattern: str, source: str
    ) -> None:
        self.root, self.images, self.pattern, self.source = root, images, pattern, source
        self.keys = {s.key for s in samples}
        self.identities = {s.identity for s in samples}

    def key(self, name: str, number: int, path: Path, line: int) -> str:
        if name not in self.identities:
            raise line_error(path, line, f"unknown identity {name!r} (not in {self.source})")
        image = self.images / name / self.pattern.format(name=name, n=number)
        key = image.relative_to(self.root).as_posix()
        if key not in self.keys:
            state = "not a sample of the dataset" if image.is_file() else "missing"
            raise line_error(path, line, f"image {number} of {name!r} is {state}: {image}")
        return key

    def pair(self, tokens: list[str], path: Path, line: int, fold: int) -> Pair:
        """``name n1 n2`` (genuine) or ``name1 n1 name2 n2`` (impostor) as a ``Pair``."""
        if len(tokens) == 3:
            name, a, b = tokens
            return Pair(self.key(name, image_number(a, path, line), path, line),
                        self.key(name, image_number(b, path, line), path, line), 1, fold)
        if len(tokens) == 4:
            name1, a, name2, b = tokens
            if name1 == name2:
                raise line_error(path, line, f"mismatched pair names one identity twice: {name1!r}")
            return Pair(self.key(name1, image_number(a, path, line), path, line),
                        self.key(name2, image_number(b, path, line), path, line), 0, fold)
        raise line_error(
            path, line, f"expected 'name n1 n2' or 'name1 n1 name2 n2', got {' '.join(tokens)!r}"
        )
