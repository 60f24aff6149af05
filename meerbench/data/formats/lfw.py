"""LFW: ``lfw/<name>/<name>_%04d.jpg`` images and the View 2 ``pairs.txt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meerbench.data.dataset import Dataset, Pair, Sample
from meerbench.data.formats.inputs import option_path
from meerbench.data.formats.pairlists import PairKeys, line_error, read_rows
from meerbench.errors import DatasetError
from meerbench.schema import Fields


class LFWFormat:
    """Options: ``images`` (image folder, default ``lfw``) and ``pairs`` (default ``pairs.txt``).

    The root may hold ``lfw/`` and ``pairs.txt``, or be the ``lfw`` folder itself (``pairs.txt``
    then inside it or beside it: the one file a reader may take from outside its root, and only
    from the root's parent folder). Fold k is the k-th set of the pairs file.
    """

    needs_root = True
    about = (
        "LFW is obtained from http://vis-www.cs.umass.edu/lfw/ (lfw.tgz and pairs.txt). "
        "Expected layout: <root>/lfw/<name>/<name>_0001.jpg and <root>/pairs.txt "
        "(header '10 300', then per set 300 matched and 300 mismatched lines)."
    )

    def read(self, root: Path | None, options: dict[str, Any], name: str) -> Dataset:
        fields = Fields(options, f"dataset '{name}'", "dataset.options")
        images_name = fields.get("images", str, "lfw")
        pairs_name = fields.get("pairs", str, "pairs.txt")
        fields.finish()
        assert root is not None
        images = option_path(root, images_name, name, "images")
        images = images if images.is_dir() else root
        candidates = [option_path(root, pairs_name, name, "pairs")]
        if images == root:  # the root is the lfw folder: pairs.txt may sit beside it
            candidates.append(option_path(root.parent, pairs_name, name, "pairs"))
        pairs_path = next((p for p in candidates if p.is_file()), candidates[0])
        samples = [Sample(key=p.relative_to(root).as_posix(), path=p, identity=p.parent.name)
                   for p in sorted(images.glob("*/*.jpg")) if p.is_file()]
        if not samples:
            raise DatasetError(f"No LFW images found under {images}. {self.about}")
        keys = PairKeys(root, images, samples, "{name}_{n:04d}.jpg", f"the folders of {images}")
        pairs, sets, per_set = _view2_pairs(pairs_path, keys)
        return Dataset(name, root, samples, pairs, info={
            "format": "lfw", "pairs_file": str(pairs_path), "sets": sets,
            "pairs_per_set": 2 * per_set, "fold_rule": "fold k = set k of the pairs file",
        })


def _view2_pairs(path: Path, keys: PairKeys) -> tuple[list[Pair], int, int]:
    """Pairs of a View-2 file, checked against its ``sets per_set`` header."""
    rows = read_rows(path, "LFW pairs file")
    line, header = rows[0]
    if len(header) != 2 or not all(t.isdigit() and int(t) > 0 for t in header):
        raise line_error(path, line, f"expected the header 'sets pairs_per_set' (e.g. '10 300'), "
                                     f"got {' '.join(header)!r}")
    sets, per_set = int(header[0]), int(header[1])
    expected = 2 * sets * per_set
    body = rows[1:]
    if len(body) < expected:
        raise DatasetError(
            f"{path}: the header promises {sets} sets of {per_set} matched and {per_set} "
            f"mismatched pairs ({expected} lines) but the file ends after {len(body)} pair lines"
        )
    if len(body) > expected:
        raise line_error(path, body[expected][0], f"more pair lines than the {expected} "
                                                  f"the header ({sets} x 2 x {per_set}) promises")
    pairs = []
    for i, (line, tokens) in enumerate(body):
        fold, j = divmod(i, 2 * per_set)
        want = 3 if j < per_set else 4
        if len(tokens) != want:
            kind = "matched pair 'name n1 n2'" if want == 3 else "mismatched 'name1 n1 name2 n2'"
            where = f"set {fold + 1}, pair {j % per_set + 1} of {per_set}"
            raise line_error(path, line, f"expected a {kind} ({where}), got {' '.join(tokens)!r}")
        pairs.append(keys.pair(tokens, path, line, fold))
    return pairs, sets, per_set
