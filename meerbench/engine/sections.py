"""Task sections as store artefacts: a rerun does not score again what it scored before.

A task type whose numbers are a pure function of the embeddings, the dataset's labels, the
protocol and its own code says so (``Task.cached``); its outcome (the Result ``metrics`` entries
it writes, its counts and its side files) is then kept as an artefact of kind ``sections``. The
key holds the sha256 of the embeddings themselves (not of their cache key: recomputed
embeddings that differ in one bit score again), the protocol's sha256 and every list drawn from
it, the content hash of the embedded images (identities, masked flags, occluder families and the
bytes of images, twins and maps: per-family numbers read the families), the Result's
file stem, and the sha256 of the code that scores (``meerbench/tasks`` and ``meerbench/metrics``,
and the task's own module when it comes from a plugin). A changed number can only come from a
changed key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from meerbench.io import atomic_open
from meerbench.store import Artefact
from meerbench.tasks import Context, Outcome, Plan, Task, code_digest

OUTCOME = "outcome.json"


def embeddings_digest(embeddings: np.ndarray) -> str:
    """sha256 of the embeddings' dtype, shape and bytes."""
    array = np.ascontiguousarray(embeddings)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def run_task(task: Task, config: Any, plan: Plan, ctx: Context, key: dict[str, Any]
             ) -> tuple[dict[str, Any], Outcome]:
    """Run ``task`` (or read its artefact) -> (its ``metrics`` entries, its outcome), with its
    side files in ``ctx.out``. ``key``: what the evaluation's numbers rest on (see the module
    docstring); the task's name and code digest are added here."""
    if not task.cached:
        outcome = task.run(config, plan, ctx)
        entries: dict[str, Any] = {}
        task.write(outcome.section, entries)
        return entries, outcome
    artefact = Artefact("sections", {
        **key, "task": task.name, "code_sha256": code_digest(inspect.getsourcefile(type(task)))},
        label=f"{ctx.stem}-{task.name}")

    def fill(folder: Path) -> None:
        outcome = task.run(config, plan, dataclasses.replace(ctx, out=folder))
        entries: dict[str, Any] = {}
        task.write(outcome.section, entries)
        with atomic_open(folder / OUTCOME) as handle:
            json.dump({"metrics": entries, "counts": outcome.counts, "files": outcome.files},
                      handle, allow_nan=True)

    folder = artefact.ensure(fill)
    saved = json.loads(artefact.read_bytes(OUTCOME))
    if ctx.out is not None:
        for name in saved["files"].values():
            with atomic_open(ctx.out / name, "wb") as handle, open(folder / name, "rb") as src:
                shutil.copyfileobj(src, handle, 1 << 22)
    return saved["metrics"], Outcome(None, saved["counts"],
                                     saved["files"] if ctx.out is not None else {})
