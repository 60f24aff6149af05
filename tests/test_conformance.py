"""The plugin conformance checks, run over every registered model and protocol."""

from __future__ import annotations

import pytest
import torch

from meerbench.errors import MeerbenchError
from meerbench.models.base import FaceModel
from meerbench.models.contract import FaceModelCfg
from meerbench.registry import MODELS, PROTOCOLS
from meerbench.testing import ConformanceError, check_face_model, check_protocol


def _loadable(name: str) -> bool:
    from meerbench.models import load_model

    try:
        load_model(name)
    except MeerbenchError:  # weights not placed here (the insightface cards): nothing to check
        return False
    return True


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_conforms(name: str) -> None:
    if not _loadable(name):
        pytest.skip(f"{name}: weights are not on this machine")
    check_face_model(name)


@pytest.mark.parametrize("name", PROTOCOLS.names())
def test_every_registered_protocol_conforms(name: str) -> None:
    check_protocol(name)


class Broken(FaceModel):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rand(len(x), 8)  # neither the promised width nor deterministic


def test_a_broken_model_is_named_with_what_it_breaks() -> None:
    with pytest.raises(ConformanceError, match=r"'broken'.*promises 512-d"):
        check_face_model(Broken("broken", FaceModelCfg()))
    with pytest.raises(ConformanceError, match="other embeddings"):
        check_face_model(Broken("broken", FaceModelCfg(embedding_dim=8)))
    with pytest.raises(ConformanceError, match="aligned as 'other'"):
        check_face_model(Broken("broken", FaceModelCfg(embedding_dim=8, alignment="other")))


def test_the_public_api_is_re_exported_and_import_stays_torch_free() -> None:
    import subprocess
    import sys

    code = ("import sys, meerbench\n"
            "assert meerbench.registry.MODELS.names() and meerbench.FaceModelCfg\n"
            "assert meerbench.register_model and meerbench.register_task\n"
            "assert meerbench.read_result and meerbench.read_results and meerbench.Result\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert meerbench.FaceModel.__name__ == 'FaceModel'")
    subprocess.run([sys.executable, "-c", code], check=True)
