"""Shared fixtures: an isolated cache home and a tiny SynthFace protocol for end-to-end runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY = {
    "schema": 1,
    "id": "tiny",
    "version": 1,
    "description": "tiny SynthFace protocol for tests",
    "dataset": {"format": "synthface", "name": "synthface-tiny",
                "options": {"split": "tiny", "seed": 5, "first_identity": 500000,
                            "n_identities": 20, "n_unmasked": 4, "n_masked": 4}},
    "train": {"format": "synthface", "name": "synthface-tiny-train",
              "options": {"split": "tiny-train", "seed": 5, "first_identity": 0, "n_identities": 12,
                          "n_unmasked": 0, "n_masked": 4, "include_twins": True}},
    "tasks": {
        "verification": {"seed": 1, "folds": 2, "pairs_per_fold": 40},
        "identification": {"seed": 2, "gallery_identities": 15},
        "restoration": {},
    },
    "metrics": {"verification": {"far_targets": [0.1, 0.01], "bootstrap": 50}},
}


@pytest.fixture(scope="session", autouse=True)
def meerbench_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All caches of the test session live in one temp folder (never the user's ~/.cache)."""
    home = tmp_path_factory.mktemp("meerbench-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEERBENCH_HOME", str(home))
    mp.delenv("MEERBENCH_DATA", raising=False)
    yield home
    mp.undo()


@pytest.fixture()
def tiny_protocol(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path
