"""Where meerbench keeps its cache and finds data, and which device it runs on."""

from __future__ import annotations

import os
from pathlib import Path


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


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
