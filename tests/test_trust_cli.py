"""Issue 12 items 4 and 10 at the command line: numeric flags, device choice and file-system
failures end in one line ``meerbench: error: ...`` and exit 2, with nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from meerbench.cli import main, os_error_message
from meerbench.errors import MeerbenchError
from meerbench.settings import resolve_device
from tests.conftest import TINY
from tests.test_train import write_tiny_run

VALID_DEVICES = "use auto, cpu, cuda or cuda:N"


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI; assert exit 2 with exactly one line ``meerbench: error: ...``; return it."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("meerbench: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A tiny protocol, a folder with one face, a score file and a training config."""
    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(yaml.safe_dump(TINY))
    faces = tmp_path / "faces"
    faces.mkdir()
    Image.new("RGB", (112, 112), (128, 100, 90)).save(faces / "a.png")
    scores = tmp_path / "scores.csv"
    scores.write_text("score,label\n" + "".join(
        f"{0.1 * i:.1f},{i % 2}\n" for i in range(20)))
    return {"protocol": protocol, "faces": faces, "scores": scores,
            "config": write_tiny_run(tmp_path / "cfg")}


BAD_NUMBERS = [
    ("run", "--batch-size", "0"),
    ("run", "--batch-size", "-3"),
    ("run", "--workers", "-1"),
    ("run", "--workers", "100000"),
    ("run", "--chunk-size", "0"),
    ("mask", "--seed", "-1"),
    ("metrics", "--seed", "-5"),
    ("metrics", "--folds", "1"),
    ("train", "--stop-after", "0"),
]


@pytest.mark.parametrize(("command", "flag", "value"), BAD_NUMBERS)
def test_numeric_flags_out_of_range_exit_2_naming_the_flag(capsys, tmp_path, inputs, command,
                                                           flag, value):
    out = tmp_path / "out"
    base = {
        "run": ["run", "--model", "pixels", "--protocol", inputs["protocol"], "--out", out,
                "--no-progress"],
        "mask": ["mask", inputs["faces"], "--out", out, "--no-progress"],
        "metrics": ["metrics", "--scores", inputs["scores"], "--bootstrap", "0"],
        "train": ["train", "--config", inputs["config"], "--out", out, "--no-progress"],
    }[command]
    err = cli_error(capsys, *base, flag, value)
    assert f"argument {flag}: must be " in err and value in err
    assert not out.exists()


def test_resolve_device_accepts_auto_cpu_and_visible_gpus(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(MeerbenchError, match=r"'cuda:2': only 2 GPU\(s\) are visible"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("device", ["bogus", "gpu", "CUDA", "cuda:x", "cuda:-1"])
def test_unknown_device_lists_the_valid_ones(capsys, tmp_path, inputs, device):
    out = tmp_path / "out"
    err = cli_error(capsys, "run", "--model", "pixels", "--protocol", inputs["protocol"],
                    "--out", out, "--device", device, "--no-progress")
    assert f"--device {device!r} is not a device" in err and VALID_DEVICES in err
    assert not out.exists()


def test_absent_gpu_is_an_error_not_recorded_as_used(capsys, tmp_path, inputs, monkeypatch):
    out = tmp_path / "out"
    run = ["run", "--model", "pixels", "--protocol", inputs["protocol"], "--out", out,
           "--no-progress", "--device"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:7"):
        err = cli_error(capsys, *run, device)
        assert f"--device {device!r}: no CUDA GPU is visible here" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    err = cli_error(capsys, *run, "cuda:7")
    assert "'cuda:7': only 1 GPU(s) are visible here (cuda:0 .. cuda:0)" in err
    assert not out.exists()


def test_train_config_device_without_gpu(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = write_tiny_run(tmp_path, runtime__device="cuda")
    out = tmp_path / "out"
    err = cli_error(capsys, "train", "--config", config, "--out", out, "--no-progress")
    assert f"{config}: runtime.device 'cuda': no CUDA GPU is visible" in err
    assert not out.exists()


def test_output_under_a_regular_file_is_one_line(capsys, tmp_path, inputs):
    """A path through a regular file fails to write even for root (unlike chmod)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    err = cli_error(capsys, "train", "--config", inputs["config"], "--out", blocker / "run",
                    "--no-progress", "--stop-after", "1")
    assert f"cannot write {blocker / 'run'}" in err and "Not a directory" in err
    err = cli_error(capsys, "mask", inputs["faces"], "--out", blocker / "masked",
                    "--no-progress")
    assert str(blocker) in err and "cannot write" in err
    assert blocker.read_text() == "not a folder"


def test_meerbench_home_under_a_regular_file_is_one_line(capsys, tmp_path, inputs,
                                                         monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEERBENCH_HOME", str(blocker / "home"))
    err = cli_error(capsys, "train", "--config", inputs["config"], "--out", tmp_path / "out",
                    "--no-progress", "--stop-after", "1")
    assert str(blocker / "home") in err and "Not a directory" in err


def test_read_only_output_and_home(capsys, tmp_path, inputs, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("root (with CAP_DAC_OVERRIDE) writes into read-only folders; the "
                        "regular-file tests above cover the same failure for root")
        err = cli_error(capsys, "train", "--config", inputs["config"], "--out", locked / "run",
                        "--no-progress", "--stop-after", "1")
        assert f"cannot write {locked / 'run'}" in err and "Permission denied" in err
        monkeypatch.setenv("MEERBENCH_HOME", str(locked))
        err = cli_error(capsys, "train", "--config", inputs["config"], "--out",
                        tmp_path / "out", "--no-progress", "--stop-after", "1")
        assert str(locked) in err
    finally:
        locked.chmod(0o755)


def test_os_error_message_says_read_or_write():
    assert os_error_message(NotADirectoryError(20, "Not a directory", "/f/x")) == \
        "cannot write /f/x: Not a directory"
    assert os_error_message(FileNotFoundError(2, "No such file or directory", "/none")) == \
        "cannot read /none: No such file or directory"
    assert os_error_message(PermissionError(13, "Permission denied", "/ro/new")) == \
        "cannot write /ro/new: Permission denied"
    assert os_error_message(OSError(28, "No space left on device")) == \
        "[Errno 28] No space left on device"


def test_non_utf8_output_name_prints_under_a_strict_stdout(tmp_path, inputs):
    """A folder name that is not UTF-8 (bytes 0xff) is echoed escaped, not a crash after the
    work is done, also where stdout is strict UTF-8 (e.g. an en_US.UTF-8 locale)."""
    out = os.fsdecode(bytes(tmp_path) + b"/masked\xff")
    done = subprocess.run(
        [sys.executable, "-m", "meerbench.cli", "mask", str(inputs["faces"]), "--out", out,
         "--no-progress"], capture_output=True, text=True, errors="replace", timeout=300,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "masked\\udcff" in done.stdout and os.path.isdir(out)
