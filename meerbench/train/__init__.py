"""Training of MEER and its same-pipeline baselines: ``train(config_path, out_dir)``.

See ``docs/meer.md`` for the model, the stages, the losses and the reference runs.
"""

from __future__ import annotations

from pathlib import Path


def train(config_path: str | Path, out_dir: str | Path | None = None, *, resume: bool = True,
          progress: bool = True, stop_after: int | None = None) -> Path:
    """Train the model a YAML config describes; returns the output folder (see ``loop.train``)."""
    from meerbench.train.loop import train as _train

    return _train(config_path, out_dir, resume=resume, progress=progress, stop_after=stop_after)


__all__ = ["train"]
