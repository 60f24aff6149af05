"""MFR2: ``mfr2/<Name>/<Name>_%04d.png``, ``mfr2_labels.txt`` and a header-less ``pairs.txt``.

The labels file (``Name, n, masktype``) says which images are masked (``no-mask`` = unmasked) and
defines the samples. MFR2 ships no folds, so pair line i of n gets fold ``i * 10 // n``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meerbench.data.dataset import Dataset, Sample
from meerbench.data.formats.inputs import option_path
from meerbench.data.formats.pairlists import (
    FOLDS,
    PairKeys,
    contiguous_fold,
    image_number,
    line_error,
    read_lines,
    read_rows,
)
from meerbench.schema import Fields

UNMASKED = "no-mask"


class MFR2Format:
    """Options: ``labels`` (default ``mfr2_labels.txt``) and ``pairs`` (default ``pairs.txt``).

    The root may hold the ``mfr2`` folder or be it. Images not in the labels file are left out
    and counted in ``info['unlabelled_images']``.
    """

    needs_root = True
    about = (
        "MFR2 is obtained from the MaskTheFace repository (https://github.com/aqeelanwar/MaskTheFace:"
        " 'python utils/fetch_dataset.py --dataset mfr2', or Google Drive file "
        "1ukk0n_srRqcsotK2MjlFPj7L0sXcR2fH). Expected layout: <root>/mfr2/<Name>/<Name>_0001.png "
        "with mfr2_labels.txt ('Name, n, masktype') and pairs.txt in <root>/mfr2/."
    )

    def read(self, root: Path | None, options: dict[str, Any], name: str) -> Dataset:
        fields = Fields(options, f"dataset '{name}'", "dataset.options")
        labels_name = fields.get("labels", str, "mfr2_labels.txt")
        pairs_name = fields.get("pairs", str, "pairs.txt")
        fields.finish()
        assert root is not None
        base = root / "mfr2" if (root / "mfr2").is_dir() else root
        labels_path = _beside(base, root, labels_name, name, "labels")
        pairs_path = _beside(base, root, pairs_name, name, "pairs")
        samples = _labelled_samples(labels_path, root, base)
        on_disk = {p for p in base.glob("*/*.png") if p.is_file()}
        unlabelled = len(on_disk - {s.path for s in samples})
        keys = PairKeys(root, base, samples, "{name}_{n:04d}.png", str(labels_path))
        rows = read_rows(pairs_path, "MFR2 pairs file")
        pairs = [keys.pair(tokens, pairs_path, line, contiguous_fold(i, len(rows), FOLDS))
                 for i, (line, tokens) in enumerate(rows)]
        masked = sum(s.masked for s in samples)
        return Dataset(name, root, samples, pairs, info={
            "format": "mfr2", "labels_file": str(labels_path), "pairs_file": str(pairs_path),
            "fold_rule": f"MFR2 has no official folds: pair line i of n gets fold i*{FOLDS}//n",
            "images_masked": masked, "images_unmasked": len(samples) - masked,
            "unlabelled_images": unlabelled,
        })


def _beside(base: Path, root: Path, file: str, dataset: str, option: str) -> Path:
    """``file`` inside the mfr2 folder, else beside it; the first is named when neither exists."""
    candidates = [option_path(folder, file, dataset, option) for folder in (base, root)]
    return next((p for p in candidates if p.is_file()), candidates[0])


def _labelled_samples(path: Path, root: Path, base: Path) -> list[Sample]:
    """One sample per ``Name, n, masktype`` line; the image and its identity folder must exist."""
    samples: list[Sample] = []
    first_line: dict[Path, int] = {}
    for line, text in read_lines(path, "MFR2 labels file"):
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise line_error(path, line, f"expected 'Name, n, masktype', got {text!r}")
        identity, number, mask_type = parts[0], image_number(parts[1], path, line), parts[2]
        if not (base / identity).is_dir():
            raise line_error(path, line, f"unknown identity {identity!r}: no folder "
                                         f"{base / identity}")
        image = base / identity / f"{identity}_{number:04d}.png"
        if not image.is_file():
            raise line_error(path, line, f"image is missing: {image}")
        if image in first_line:
            raise line_error(path, line, f"{image.name} is already labelled on line "
                                         f"{first_line[image]}")
        first_line[image] = line
        masked = mask_type != UNMASKED
        samples.append(Sample(
            key=image.relative_to(root).as_posix(), path=image, identity=identity,
            masked=masked, mask_type=mask_type if masked else None,
        ))
    return samples
