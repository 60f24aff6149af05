"""Dataset formats: readers that turn a folder (or the embedded generator) into a ``Dataset``.

Each reader is registered by name in ``DATASETS``; a protocol's ``dataset.format`` picks one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from meerbench.data.dataset import Dataset, DatasetSpec
from meerbench.errors import DatasetError
from meerbench.registry import DATASETS
from meerbench.settings import data_root


class DatasetFormat(Protocol):
    """What a reader provides. ``needs_root`` is False for embedded (generated) datasets."""

    needs_root: bool
    about: str  # where the data is officially obtained and the layout expected

    def read(self, root: Path | None, options: dict[str, Any], name: str) -> Dataset: ...


DATASETS.add_lazy(
    "synthface", "meerbench.data.formats.synthface:SynthFaceFormat",
    "SynthFace: procedural faces generated on first use (embedded, nothing to download)",
)
DATASETS.add_lazy(
    "manifest", "meerbench.data.formats.manifest:ManifestFormat",
    "Generic CSV manifest: path,identity[,masked,mask_type,split,twin,mask_map]",
)
DATASETS.add_lazy(
    "folder", "meerbench.data.formats.folder:FolderFormat",
    "Folder of identities: <root>/<identity>/*.jpg|png",
)


def open_dataset(spec: DatasetSpec, data: str | Path | None = None) -> Dataset:
    """Read the dataset a protocol names, from ``data`` or ``$MEERBENCH_DATA/<name>``."""
    reader: DatasetFormat = DATASETS.get(spec.format)()
    if not reader.needs_root:
        return reader.read(None, spec.options, spec.name)
    root = data_root(spec.name, data)
    if root is None or not root.exists():
        where = f"{root}" if root is not None else f"--data or $MEERBENCH_DATA/{spec.name}"
        raise DatasetError(
            f"Dataset '{spec.name}' not found at {where}. {reader.about} "
            f"Pass its folder with --data DIR or set MEERBENCH_DATA to the folder that holds "
            f"'{spec.name}/'."
        )
    return reader.read(root, spec.options, spec.name)
