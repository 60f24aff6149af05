"""Result files: one versioned JSON per (model, protocol) plus per-pair scores in a side CSV."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from meerbench.errors import MeerbenchError
from meerbench.io import ensure_writable_dir, write_json

SCHEMA = "meerbench.result/1"


@dataclass
class Result:
    """Everything needed to trust, compare and recompute one evaluation."""

    model: dict[str, Any]
    protocol: dict[str, Any]
    metrics: dict[str, Any]
    counts: dict[str, Any]
    provenance: dict[str, Any]
    timings: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "model": self.model, "protocol": self.protocol,
                "metrics": self.metrics, "counts": self.counts, "provenance": self.provenance,
                "timings": self.timings, "files": self.files}

    @property
    def stem(self) -> str:
        return f"{self.model['name']}__{self.protocol['id']}"

    def write(self, out_dir: Path) -> Path:
        ensure_writable_dir(out_dir)
        path = out_dir / f"{self.stem}.json"
        write_json(path, self.to_dict())
        return path


def read_result(path: Path) -> dict[str, Any]:
    """Load a Result JSON, checking its schema."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MeerbenchError(f"Cannot read result {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise MeerbenchError(f"{path} is not a meerbench result (expected schema {SCHEMA}).")
    return data


def provenance(device: str, precision: str) -> dict[str, Any]:
    """Versions, machine and time of this run."""
    import numpy
    import torch

    import meerbench

    return {
        "meerbench_version": meerbench.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "platform": platform.platform(),
        "device": device,
        "precision": precision,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5, check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
