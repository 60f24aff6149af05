"""Dataset formats: readers that turn a folder (or the embedded generator) into a ``Dataset``.

Each reader is registered by name in ``DATASETS``; a protocol's ``dataset.format`` picks one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from meerbench.data.dataset import Dataset, DatasetSpec
from meerbench.data.formats.inputs import check_dataset
from meerbench.errors import DatasetError
from meerbench.registry import DATASETS
from meerbench.settings import data_root


class DatasetFormat(Protocol):
    """What a reader provides. ``needs_root`` is False for embedded datasets, which are generated
    on first use: their ``read`` also takes ``progress`` (show a progress bar while generating)."""

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
DATASETS.add_lazy(
    "lfw", "meerbench.data.formats.lfw:LFWFormat",
    "LFW: lfw/<name>/<name>_0001.jpg + View 2 pairs.txt (http://vis-www.cs.umass.edu/lfw/)",
)
DATASETS.add_lazy(
    "mfr2", "meerbench.data.formats.mfr2:MFR2Format",
    "MFR2: mfr2/<Name>/<Name>_0001.png, mfr2_labels.txt, pairs.txt (MaskTheFace repository)",
)
DATASETS.add_lazy(
    "mlfw", "meerbench.data.formats.mlfw:MLFWFormat",
    "MLFW masked CALFW: aligned/ + pairs.txt 'img1 img2 label' (http://whdeng.cn/mlfw)",
)
DATASETS.add_lazy(
    "calfw", "meerbench.data.formats.calfw:CALFWFormat",
    "CALFW: 'aligned images/' + pairs_CALFW.txt (http://www.whdeng.cn/CALFW/)",
)
DATASETS.add_lazy(
    "cplfw", "meerbench.data.formats.calfw:CPLFWFormat",
    "CPLFW: 'aligned images/' + pairs_CPLFW.txt (http://www.whdeng.cn/CPLFW/)",
)
DATASETS.add_lazy(
    "rmfrd", "meerbench.data.formats.rmfrd:RMFRDFormat",
    "RMFRD: AFDB_face_dataset/ + AFDB_masked_face_dataset/ (X-zhangyang/Real-World-Masked-Face-"
    "Dataset on GitHub)",
)
DATASETS.add_lazy(
    "smfrd", "meerbench.data.formats.smfrd:SMFRDFormat",
    "SMFRD simulated masks on WebFace/LFW: <part>/<identity>/<image> (X-zhangyang/Real-World-"
    "Masked-Face-Dataset on GitHub)",
)
DATASETS.add_lazy(
    "insightface-bin", "meerbench.data.formats.insightface_bin:InsightfaceBinFormat",
    "insightface verification .bin (lfw.bin, calfw.bin, ...; from the insightface training-set "
    "archives), loaded without running pickled code",
)
DATASETS.add_lazy("insightface-rec", "meerbench.data.formats.recordio:InsightfaceRecFormat",
                  "insightface RecordIO training set: train.rec, train.idx, property (training)")


def open_dataset(spec: DatasetSpec, data: str | Path | None = None, *,
                 progress: bool = True) -> Dataset:
    """Read the dataset a protocol names, from ``data`` or ``$MEERBENCH_DATA/<name>``.

    Whatever the reader, every file of the result lies inside its root and every name is text
    (``inputs.check_dataset``)."""
    reader: DatasetFormat = DATASETS.get(spec.format)()
    if not reader.needs_root:
        return check_dataset(reader.read(None, spec.options, spec.name,  # type: ignore[call-arg]
                                         progress=progress))
    root = data_root(spec.name, data)
    if root is None or not root.exists():
        where = f"{root}" if root is not None else f"--data or $MEERBENCH_DATA/{spec.name}"
        raise DatasetError(
            f"Dataset '{spec.name}' not found at {where}. {reader.about} "
            f"Pass its folder with --data DIR or set MEERBENCH_DATA to the folder that holds "
            f"'{spec.name}/'; `meerbench prepare <protocol> --data DIR` then checks the layout, "
            "prepares the faces and writes the protocol's lists."
        )
    return check_dataset(reader.read(root, spec.options, spec.name))
