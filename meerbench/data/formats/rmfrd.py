"""RMFRD: ``AFDB_face_dataset/<id>/`` (unmasked) and ``AFDB_masked_face_dataset/<id>/`` (masked).

Both trees may sit under ``self-built-masked-face-recognition-dataset/`` and each may be nested
twice (the Kaggle copy: ``AFDB_face_dataset/AFDB_face_dataset/<id>/``). Not every identity has
images in both trees; all are kept and ``info`` counts them. RMFRD has no official pairs: the
protocol layer builds its own lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meerbench.data.dataset import Dataset, Sample
from meerbench.data.formats.pairlists import image_files
from meerbench.errors import DatasetError
from meerbench.schema import Fields

UNMASKED_TREE = "AFDB_face_dataset"
MASKED_TREE = "AFDB_masked_face_dataset"
PARENT = "self-built-masked-face-recognition-dataset"


def find_tree(root: Path, tree: str) -> Path | None:
    """The folder whose sub-folders are the identities of ``tree``, in any known layout."""
    for base in (root, root / PARENT):
        folder = base / tree
        if folder.is_dir():
            return folder / tree if (folder / tree).is_dir() else folder
    return None


class RMFRDFormat:
    """No options. Identity = folder name; masked = which tree the image is in."""

    needs_root = True
    about = (
        "RMFRD is obtained from https://github.com/X-zhangyang/Real-World-Masked-Face-Dataset "
        "(Baidu https://pan.baidu.com/s/1XvGepj84SCA9rlVb9rGhEQ password j3aq, or Google Drive "
        "1UlOk6EtiaXTHylRUx2mySgvJX9ycoeBp). Expected layout: <root>/AFDB_face_dataset/<id>/*.jpg "
        "and <root>/AFDB_masked_face_dataset/<id>/*.jpg (also accepted under "
        "self-built-masked-face-recognition-dataset/ or nested twice as in the Kaggle copy)."
    )

    def read(self, root: Path | None, options: dict[str, Any], name: str) -> Dataset:
        Fields(options, f"dataset '{name}'", "dataset.options").finish()
        assert root is not None
        trees = {masked: find_tree(root, tree)
                 for masked, tree in ((False, UNMASKED_TREE), (True, MASKED_TREE))}
        if trees[False] is None and trees[True] is None:
            raise DatasetError(f"Neither {UNMASKED_TREE} nor {MASKED_TREE} found under {root}. "
                               f"{self.about}")
        samples: list[Sample] = []
        identities: dict[bool, set[str]] = {False: set(), True: set()}
        for masked, tree in trees.items():
            if tree is None:
                continue
            for folder in sorted(p for p in tree.iterdir() if p.is_dir()):
                for image in image_files(folder):
                    samples.append(Sample(key=image.relative_to(root).as_posix(), path=image,
                                          identity=folder.name, masked=masked))
                    identities[masked].add(folder.name)
        if not samples:
            raise DatasetError(f"No images found in the identity folders under {root}. "
                               f"{self.about}")
        masked_images = sum(s.masked for s in samples)
        return Dataset(name, root, samples, info={
            "format": "rmfrd",
            "unmasked_tree": str(trees[False]) if trees[False] else None,
            "masked_tree": str(trees[True]) if trees[True] else None,
            "identities_unmasked": len(identities[False]),
            "identities_masked": len(identities[True]),
            "identities_both": len(identities[False] & identities[True]),
            "images_unmasked": len(samples) - masked_images,
            "images_masked": masked_images,
        })
