"""A non-editable install must still ship and list the built-in protocols."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_protocols_and_lists_them_when_installed(tmp_path):
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("meerbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "meerbench/protocols/synthmask.yaml" in names

    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    code = ("import json, meerbench; from meerbench.protocol import describe_protocols; "
            "print(json.dumps([meerbench.__file__, [n for n, _ in describe_protocols()]]))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True)
    location, protocols = json.loads(out.stdout)
    assert location.startswith(str(site))  # the installed copy, not the checkout
    assert {"synthmask", "synthmask-unseen", "synthmask-train"} <= set(protocols)
