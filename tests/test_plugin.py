"""A real plugin package (tests/plugin_example) registers a model, a protocol and a task type
through entry points: pip installs it into a temporary folder, and a separate meerbench process
finds, lists and runs them without any change to meerbench."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).with_name("plugin_example")


def meerbench(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "meerbench.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_plugin_model_and_protocol_are_discovered_listed_and_run(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="pip builds the plugin with the venv's setuptools")
    source = tmp_path / "source"  # build in a copy: the repository stays clean
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=300)
    assert list(target.glob("meerbench_plugin_example-0.1.0.dist-info/entry_points.txt"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(target), os.environ.get("PYTHONPATH")]))}

    models = meerbench(["list", "models"], env)
    assert "blockmean" in models and "(plugin from meerbench-plugin-example)" in models
    protocols = meerbench(["list", "protocols"], env)
    assert "plugmask            v1: Plugin example protocol" in protocols
    tasks = meerbench(["list", "tasks"], env)
    assert "occlusion" in tasks and "(plugin from meerbench-plugin-example)" in tasks

    out = tmp_path / "results"
    printed = meerbench(["run", "--model", "blockmean", "--protocol", "plugmask", "--out",
                         str(out), "--no-progress"], env)
    assert "blockmean on plugmask v1" in printed
    assert "occlusion  Face covered: " in printed
    result = json.loads((out / "blockmean__plugmask.json").read_text())
    assert result["model"]["name"] == "blockmean"
    assert result["model"]["contract"]["embedding_dim"] == 64
    assert result["protocol"]["id"] == "plugmask"
    assert set(result["metrics"]["verification"]) == {"UMR-UMP", "UMR-MP", "MR-MP"}
    occlusion = result["metrics"]["occlusion"]
    assert occlusion["status"] == "ok" and 0.05 < occlusion["coverage"] < 0.6
    assert result["counts"]["occlusion_maps"] == 16 * 3
    assert (out / "blockmean__plugmask.scores.csv").is_file()
