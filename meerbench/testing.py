"""Conformance checks for plugin authors: run them on your model or protocol in your own tests.

    from meerbench.testing import check_face_model, check_protocol
    check_face_model(MyModel())          # or a registered name: check_face_model("my-model")
    check_protocol("my-protocol.yaml")

Each check raises :class:`ConformanceError` naming the property that fails. meerbench runs them
over every registered model and protocol (``tests/test_conformance.py``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from meerbench.errors import MeerbenchError


class ConformanceError(MeerbenchError, AssertionError):
    """A model or protocol breaks a rule every one of its kind must keep."""


def _require(ok: bool, what: str, message: str) -> None:
    if not ok:
        raise ConformanceError(f"{what}: {message}")


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def check_face_model(model: Any, *, n_images: int = 6, seed: int = 0) -> None:
    """What the engine relies on: a valid, JSON-able contract aligned as protocols prepare faces;
    embeddings of the promised width, finite, non-zero and deterministic through the engine's
    own forward path; a JSON-able ``describe()`` with a sha256; fitted state that round-trips;
    restorations of the input's shape and dtype."""
    import torch

    from meerbench.engine.embed import check_width, forward_batch
    from meerbench.models import load_model
    from meerbench.models.base import FaceModel
    from meerbench.models.contract import ARCFACE_112, FaceModelCfg, check_alignment

    net = load_model(model) if isinstance(model, str) else model
    what = f"model {getattr(net, 'name', net)!r}"
    _require(isinstance(net, FaceModel), what, "is not a meerbench.FaceModel")
    _require(isinstance(net.cfg, FaceModelCfg), what, "cfg is not a FaceModelCfg")
    try:
        json.dumps(net.cfg.to_dict(), allow_nan=False)  # recorded in every Result and cache key
    except (TypeError, ValueError) as exc:
        raise ConformanceError(f"{what}: contract is not plain JSON data ({exc})") from None
    try:
        check_alignment(net.cfg, ARCFACE_112)
    except MeerbenchError as exc:
        raise ConformanceError(f"{what}: {exc}") from None
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n_images, 112, 112, 3), dtype=np.uint8))
    if net.needs_fit:
        identities = np.repeat(np.arange(n_images // 2), 2)
        net.fit(net.cfg.preprocess(images), identities)
        state = net.state()
        _require(all(isinstance(v, np.ndarray) for v in state.values()), what,
                 "state() must hold numpy arrays only (they are saved with allow_pickle=False)")
    preprocessed = net.cfg.preprocess(images)
    channels = 1 if net.cfg.channels == "GRAY" else 3
    _require(tuple(preprocessed.shape) == (n_images, channels, *net.cfg.input_size), what,
             f"preprocess gave shape {tuple(preprocessed.shape)}")
    device = torch.device("cpu")
    try:
        first = check_width(net, forward_batch(net, images, device, "fp32"))
    except MeerbenchError as exc:
        raise ConformanceError(f"{what}: {exc}") from None
    _require(bool(torch.isfinite(first).all()), what, "embeddings are not finite")
    _require(bool((first.norm(dim=1) > 0.5).all()), what, "an embedding is zero (not normalisable)")
    again = forward_batch(net, images, device, "fp32")
    _require(torch.equal(first, again), what, "the same images gave other embeddings")
    described = _json(net.describe())
    _require(described.get("name") == net.name, what, "describe() must carry the model's name")
    _require(bool(re.fullmatch(r"[0-9a-f]{64}", str(described.get("weights_sha256")))), what,
             "describe() must carry a 64-hex weights_sha256")
    if net.needs_fit:
        fresh = load_model(net.name) if isinstance(model, str) else None
        if fresh is not None:
            fresh.load_state(net.state())
            _require(torch.equal(forward_batch(fresh, images, device, "fp32"), first), what,
                     "state()/load_state() do not reproduce the embeddings")
    if net.can_restore():
        masked = images.numpy()
        restored = net.restore(masked, None)
        _require(restored.shape == masked.shape and restored.dtype == np.uint8, what,
                 f"restore gave {restored.shape} {restored.dtype}, not {masked.shape} uint8")


def check_protocol(protocol: Any) -> None:
    """What reports and caches rely on: a plain id, a registered dataset format, registered task
    types whose sections parse, metric settings that parse, and a JSON-able configuration."""
    from meerbench.data.formats import DATASETS
    from meerbench.protocol import Protocol, load_protocol, task_types
    from meerbench.schema import is_plain_name

    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    what = f"protocol {proto.id!r} ({proto.source})"
    _require(is_plain_name(proto.id), what, "id is not a plain name")
    _require(proto.dataset.format in DATASETS.names(), what,
             f"dataset format {proto.dataset.format!r} is not registered")
    known = {task.name for task in task_types()}
    _require(bool(proto.tasks), what, "declares no task")
    unknown = sorted(set(proto.tasks) - known)
    _require(not unknown, what, f"unknown task types {unknown}")
    _require(_json(proto.raw) == proto.raw, what, "configuration is not plain JSON data")
    _require(proto.version >= 1, what, "version must be >= 1")
