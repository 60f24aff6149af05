"""Example meerbench plugin: the ``blockmean`` model and the ``plugmask`` protocol.

``pyproject.toml`` registers both under the entry-point groups ``meerbench.models`` and
``meerbench.protocols``. A model entry point names a factory that ``load_model`` calls; a protocol
entry point names a path, a mapping, or a function returning either.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from meerbench.models.base import FaceModel, FaceModelCfg


class BlockMeanModel(FaceModel):
    """Grey 64x64 faces averaged over 8x8 blocks: a 64-d embedding, no weights, no training."""

    def __init__(self, name: str = "blockmean") -> None:
        super().__init__(name, FaceModelCfg(input_size=(64, 64), channels="GRAY", mean=(0.5,),
                                            std=(0.5,), embedding_dim=64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = F.avg_pool2d(x, kernel_size=8).flatten(1)
        return blocks - blocks.mean(dim=1, keepdim=True)


def protocol_path() -> Path:
    """The protocol YAML shipped inside this package."""
    return Path(__file__).with_name("plugmask.yaml")
