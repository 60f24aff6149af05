"""Example meerbench plugin: the ``blockmean`` model, the ``plugmask`` protocol and the
``occlusion`` task type.

``pyproject.toml`` registers them under the entry-point groups ``meerbench.models``,
``meerbench.protocols`` and ``meerbench.tasks``. A model entry point names a factory that
``load_model`` calls; a protocol entry point names a path, a mapping, or a function returning
either; a task entry point names a ``meerbench.tasks.Task`` instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from meerbench import FaceModel, FaceModelCfg
from meerbench.data.images import read_mask
from meerbench.schema import Fields
from meerbench.tasks import Cell, Context, Metric, Outcome, Plan, Section, Task


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


COVERAGE = Metric("coverage", "occlusion", "Face covered", "%", higher_is_better=False)


class Occlusion(Task):
    """How much of the face the occluders hide: the mean fraction of each masked image's pixels
    inside its occluder map (a property of the data, the same for every model)."""

    name = "occlusion"  # the protocol section ``tasks.occlusion`` and ``metrics.occlusion``

    def parse(self, fields: Fields) -> None:
        return None  # no options

    def run(self, config: None, plan: Plan, ctx: Context) -> Outcome:
        maps = [s.mask_map for s in ctx.dataset.samples if s.masked and s.mask_map is not None]
        if not maps:
            return Outcome(Section.skipped("no masked images with occluder maps"))
        coverage = [float(read_mask(path).mean()) for path in maps]
        return Outcome(Section(values={"coverage": float(np.mean(coverage))}),
                       counts={"occlusion_maps": len(maps)})

    def cells(self, section: Section) -> Iterator[tuple[str, Metric, Cell]]:
        if section.ok:
            yield self.name, COVERAGE, Cell(section.values["coverage"])


OCCLUSION = Occlusion()
