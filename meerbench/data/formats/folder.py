"""Folder of identities: ``<root>/<identity>/<image>`` with jpg/jpeg/png/bmp files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meerbench.data.dataset import Dataset, Sample
from meerbench.data.images import IMAGE_SUFFIXES
from meerbench.errors import DatasetError
from meerbench.schema import Fields


class FolderFormat:
    """Every sub-folder is an identity; option ``masked: true`` marks all images as masked."""

    needs_root = True
    about = "Expected layout: <root>/<identity>/<image>.jpg|png (one folder per identity)."

    def read(self, root: Path | None, options: dict[str, Any], name: str) -> Dataset:
        fields = Fields(options, f"dataset '{name}'", "dataset.options")
        masked = fields.get("masked", bool, False)
        fields.finish()
        assert root is not None
        samples = [
            Sample(key=str(p.relative_to(root)), path=p, identity=p.parent.name, masked=masked)
            for p in sorted(root.glob("*/*"))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        ]
        if not samples:
            raise DatasetError(f"No images found under {root}. {self.about}")
        return Dataset(name=name, root=root, samples=samples)
