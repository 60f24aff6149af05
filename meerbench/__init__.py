"""meerbench: benchmark masked face recognition and masked-face restoration.

The public API is small and lazy (``import meerbench`` does not import torch)::

    import meerbench
    result = meerbench.evaluate("fisherfaces", "synthmask")
    print(result["metrics"]["verification"]["UMR-MP"]["accuracy"]["mean"])

Extension points, re-exported here: ``FaceModel``, ``FaceModelCfg`` and ``register_model`` (add a
model), ``register_task`` (add a task type), ``Result``, ``read_result`` and ``read_results``
(read Results, validated); ``load_results`` gives every reported number of Result files as one
tidy pandas DataFrame (pandas is imported only then)::

    frame = meerbench.load_results("reports/results")
    frame.query("protocol == 'synthmask' and metric == 'acc'").pivot(
        index="model", columns="condition", values="value")

``meerbench.testing`` holds the conformance checks; ``registry`` the registries (``MODELS``,
``PROTOCOLS``, ``DATASETS``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from meerbench import registry

__version__ = version("meerbench")  # one owner: pyproject.toml

if TYPE_CHECKING:
    from meerbench.models.base import FaceModel
    from meerbench.protocol import Protocol


def load_protocol(name_or_path: str) -> Protocol:
    """A registered protocol by name, or a protocol YAML file by path."""
    from meerbench.protocol import load_protocol as _load

    return _load(name_or_path)


def load_model(name: str, /, **kwargs: Any) -> FaceModel:
    """A registered model by name (see ``meerbench list models``), or a model file by path: a
    card YAML or folder with card.yaml, an ONNX or TorchScript file, or a checkpoint with
    ``arch=`` (see ``meerbench run --help``)."""
    from meerbench.models import load_model as _load

    return _load(name, **kwargs)


def evaluate(model: str, protocol: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``model`` on ``protocol`` and return the Result as a dict (also written to disk)."""
    from meerbench.engine.evaluate import evaluate as _evaluate

    return _evaluate(model, protocol, **kwargs).to_dict()


def list_models() -> list[str]:
    from meerbench.registry import MODELS

    return MODELS.names()


def list_protocols() -> list[str]:
    from meerbench.protocol import PROTOCOLS

    return PROTOCOLS.names()


def list_datasets() -> list[str]:
    from meerbench.data.formats import DATASETS

    return DATASETS.names()


#: Public names that live deeper in the package, imported on first use (some import torch,
#: ``load_results`` imports pandas).
_LAZY = {
    "FaceModel": "meerbench.models.base",
    "FaceModelCfg": "meerbench.models.contract",
    "register_model": "meerbench.models.cards",
    "register_task": "meerbench.tasks",
    "Result": "meerbench.results",
    "read_result": "meerbench.results",
    "read_results": "meerbench.results",
    "load_results": "meerbench.report.frame",
}

__all__ = ["FaceModel", "FaceModelCfg", "Result", "evaluate", "list_datasets", "list_models",
           "list_protocols", "load_model", "load_protocol", "load_results", "read_result",
           "read_results", "register_model", "register_task", "registry"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'meerbench' has no attribute {name!r}")
