"""torchrun extraction on CPU (gloo) equals one process, byte for byte."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def run(args: list[str], home: Path, out: Path, tiny_protocol: Path) -> dict:
    env = {**os.environ, "MEERBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    cmd = [*args, "run", "--model", "eigenfaces", "--protocol", str(tiny_protocol), "--out",
           str(out), "--device", "cpu", "--batch-size", "5", "--chunk-size", "10", "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "eigenfaces__tiny.json").read_text())


def test_torchrun_two_processes_match_one(tmp_path, tiny_protocol):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun not installed next to python"
    one = run([sys.executable, "-m", "meerbench.cli"], tmp_path / "h1", tmp_path / "o1",
              tiny_protocol)
    two = run([torchrun, "--nproc_per_node=2", "--master_port=29533", "-m", "meerbench.cli"],
              tmp_path / "h2", tmp_path / "o2", tiny_protocol)
    assert one["counts"]["images"] % 10 != 0  # last chunk is partial: no padding may leak
    assert one["metrics"] == two["metrics"]
    e1 = np.load(next((tmp_path / "h1" / "embeddings").glob("*/embeddings.npy")))
    e2 = np.load(next((tmp_path / "h2" / "embeddings").glob("*/embeddings.npy")))
    assert e1.shape == e2.shape and e1.tobytes() == e2.tobytes()
    assert not list((tmp_path / "h2" / "embeddings").glob("*/chunk-*.npy"))
