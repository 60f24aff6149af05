"""Where meerbench keeps its cache and finds data, and which device and precision it runs on."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from meerbench.errors import MeerbenchError

if TYPE_CHECKING:
    import torch

#: what ``--device`` accepts besides ``auto``: ``cpu``, ``cuda``, ``cuda:N``.
DEVICE_PATTERN = re.compile(r"cpu|(cuda)(?::(\d+))?")
#: what ``--precision`` and ``runtime.precision`` accept; ``auto`` is resolved per model and device.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def home() -> Path:
    """Cache root: ``$MEERBENCH_HOME``, else ``$XDG_CACHE_HOME/meerbench``, else ~/.cache."""
    if env := os.environ.get("MEERBENCH_HOME"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "meerbench"


def data_root(dataset: str, explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The root of a dataset: ``--data`` if given, else ``$MEERBENCH_DATA/<dataset>``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if env := os.environ.get("MEERBENCH_DATA"):
        return Path(env).expanduser() / dataset
    return None


def resolve_device(name: str | torch.device | None,
                   source: str = "--device") -> torch.device:
    """The device ``name`` asks for, checked against this machine.

    ``None`` or ``auto``: ``cuda`` when a GPU is visible, else ``cpu``. ``cpu``, ``cuda`` and
    ``cuda:N`` are checked against the GPUs visible here, so a device that is absent is an error
    naming ``source`` (the flag or config field), never silently replaced or recorded as used.
    """
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    found = DEVICE_PATTERN.fullmatch(str(name))
    if found is None:
        raise MeerbenchError(f"{source} {name!r} is not a device; use auto, cpu, cuda or "
                             f"cuda:N (N counts from 0).")
    if found.group(1) is None:
        return torch.device("cpu")
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = found.group(2)
    if int(index or 0) >= visible:
        seen = (f"only {visible} GPU(s) are visible here (cuda:0 .. cuda:{visible - 1})"
                if visible else "no CUDA GPU is visible here; use cpu or auto")
        raise MeerbenchError(f"{source} {name!r}: {seen}.")
    return torch.device("cuda", int(index)) if index else torch.device("cuda")
