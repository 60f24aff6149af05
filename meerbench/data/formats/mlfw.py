"""MLFW (masked CALFW): a flat ``aligned/`` folder and ``pairs.txt`` lines ``img1 img2 label``.

File names are ``<Name>_<4-digit image>_<4-digit mask variant>.jpg``; the identity is what the
``identity_regex`` option captures. Label 1 = same identity, 0 = different. Folds are 10
contiguous blocks of the pair lines (600 each for the official 6,000): the loaders seen do this,
but the split is not stated by the authors, so ``info['folds_with_one_label']`` counts folds that
hold a single label (non-zero would mean the file is ordered some other way). Whether every MLFW
image carries a mask is not confirmed: all are marked masked unless ``masked: false``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meerbench.data.dataset import Dataset
from meerbench.data.formats.calfw import FlatFolder, identity_regex
from meerbench.data.formats.inputs import option_path
from meerbench.data.formats.pairlists import FOLDS, contiguous_fold, line_error, read_rows
from meerbench.schema import Fields

MLFW_IDENTITY = r"(?P<identity>.+)_\d{4}_\d{4}\.jpg"


class MLFWFormat:
    """Options: ``images`` (default ``aligned``), ``pairs`` (default ``pairs.txt``),
    ``identity_regex`` (default ``(?P<identity>.+)_\\d{4}_\\d{4}\\.jpg``) and ``masked`` (default
    true). The root may hold these or an ``MLFW`` folder that does."""

    needs_root = True
    about = (
        "MLFW is obtained from http://whdeng.cn/mlfw (BUPT). Expected layout: "
        "<root>/aligned/<Name>_0001_0000.jpg (flat) and <root>/pairs.txt with 'img1 img2 label' "
        "lines (6,000 pairs)."
    )

    def read(self, root: Path | None, options: dict[str, Any], name: str) -> Dataset:
        fields = Fields(options, f"dataset '{name}'", "dataset.options")
        images_name = fields.get("images", str, "aligned")
        pairs_name = fields.get("pairs", str, "pairs.txt")
        pattern = identity_regex(fields, MLFW_IDENTITY)
        masked = fields.get("masked", bool, True)
        fields.finish()
        assert root is not None
        base = root / "MLFW" if (root / "MLFW" / images_name).is_dir() else root
        pairs_path = option_path(base, pairs_name, name, "pairs")
        folder = FlatFolder(root, option_path(base, images_name, name, "images"), pattern, masked)
        rows = read_rows(pairs_path, "MLFW pairs file")
        pairs = []
        for i, (line, tokens) in enumerate(rows):
            if len(tokens) != 3 or tokens[2] not in ("0", "1"):
                raise line_error(pairs_path, line, f"expected 'img1 img2 label' with label 1 "
                                                   f"(same) or 0 (different), got "
                                                   f"{' '.join(tokens)!r}")
            fold = contiguous_fold(i, len(rows), FOLDS)
            pairs.append(folder.pair((tokens[0], line), (tokens[1], line), int(tokens[2]), fold,
                                     pairs_path))
        labels_per_fold = [{p.label for p in pairs if p.fold == k} for k in range(FOLDS)]
        return Dataset(name, root, folder.samples, pairs, info={
            "format": "mlfw", "pairs_file": str(pairs_path), "identity_regex": pattern.pattern,
            "masked": masked,
            "fold_rule": f"pair line i of n gets fold i*{FOLDS}//n (contiguous blocks)",
            "folds_with_one_label": sum(len(labels) == 1 for labels in labels_per_fold),
        })
