"""Issue 12 item 7: `meerbench train` resume reads its state with ``weights_only=True``.

A planted ``state/last.pt`` whose pickle would run code is refused before anything in it runs,
with one line naming the file (exit 2 through the CLI); a state of the previous format gets a
clear "delete it or --no-resume" error; a state written now loads with ``weights_only=True``.
"""

from __future__ import annotations

import pathlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from meerbench.cli import main
from meerbench.errors import ModelError
from meerbench.train import train
from tests.test_train import write_tiny_run


class Payload:
    """Unpickling this creates ``marker``: proof that the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture()
def stopped(tmp_path: Path) -> tuple[Path, Path]:
    """(config, output folder) of a tiny run stopped with a checkpoint after step 1."""
    config = write_tiny_run(tmp_path)
    out = train(config, tmp_path / "out", progress=False, stop_after=1)
    return config, out


def cli_train(config: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["train", "--config", str(config), "--out", str(out), "--no-progress"])
    return code, capsys.readouterr().err


def test_state_is_tensors_and_plain_data(stopped):
    _, out = stopped
    state = torch.load(out / "state" / "last.pt", weights_only=True)
    assert state["step"] == 1 and state["version"] == 2


def test_planted_payload_never_runs(stopped, tmp_path, capsys):
    config, out = stopped
    path = out / "state" / "last.pt"
    marker = tmp_path / "pwned"
    torch.save({"version": 2, "step": 1, "best": Payload(marker)}, path)
    code, err = cli_train(config, out, capsys)
    assert not marker.exists()
    assert code == 2 and err.count("\n") == 1 and err.startswith("meerbench: error: ")
    assert str(path) in err and "Python objects" in err and "--no-resume" in err
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err
    with pytest.raises(ModelError, match="never done"):
        train(config, out, progress=False)
    assert not marker.exists()


def test_old_format_state_says_delete_or_restart(stopped, capsys):
    config, out = stopped
    path = out / "state" / "last.pt"
    old = torch.load(path, weights_only=True)
    old["version"] = 1  # as the previous code wrote it: numpy and Python RNG objects
    old["rng"] = {**old["rng"], "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save(old, path)
    code, err = cli_train(config, out, capsys)
    assert code == 2 and err.count("\n") == 1
    assert str(path) in err and "numpy" in err and "Delete it or pass --no-resume" in err
    assert main(["train", "--config", str(config), "--out", str(out), "--no-progress",
                 "--no-resume", "--stop-after", "2"]) == 0
    assert torch.load(path, weights_only=True)["step"] == 2


def test_truncated_state_names_the_file(stopped, capsys):
    config, out = stopped
    path = out / "state" / "last.pt"
    path.write_bytes(path.read_bytes()[:1000])
    code, err = cli_train(config, out, capsys)
    assert code == 2 and err.count("\n") == 1
    assert str(path) in err and "not a readable torch.save file" in err


def test_resume_after_a_best_checkpoint_is_exact(tmp_path):
    """A state holding the best weights and their metrics so far (plain floats, no numpy
    scalars) loads with ``weights_only=True`` and resumes to the same shipped weights."""
    config = write_tiny_run(tmp_path, validation__every=2)
    straight = train(config, tmp_path / "straight", progress=False)
    stopped = train(config, tmp_path / "resumed", progress=False, stop_after=10)
    state = torch.load(stopped / "state" / "last.pt", weights_only=True)
    assert state["best"]["step"] == 10 and isinstance(state["best"]["score"], float)
    resumed = train(config, tmp_path / "resumed", progress=False)
    assert (straight / "model.safetensors").read_bytes() == \
        (resumed / "model.safetensors").read_bytes()
