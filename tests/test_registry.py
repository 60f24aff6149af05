import subprocess
import sys

import pytest

from meerbench.errors import UnknownNameError
from meerbench.registry import Registry


def test_lazy_entry_is_not_imported_until_used():
    reg = Registry("thing", "meerbench.tests.none")
    reg.add_lazy("json-dumps", "json:dumps", "dump json")
    assert reg.entry("json-dumps").obj is None
    import json

    assert reg.get("json-dumps") is json.dumps


def test_decorator_uses_first_docstring_line():
    reg = Registry("thing", "meerbench.tests.none")

    @reg.register("f")
    def factory():
        """Makes things.

        More text."""

    assert reg.entry("f").description == "Makes things."


def test_unknown_name_lists_known_names_and_closest_match():
    reg = Registry("model", "meerbench.tests.none")
    for name in ("fisherfaces", "eigenfaces", "pixels"):
        reg.add_lazy(name, "json:dumps", "")
    with pytest.raises(UnknownNameError) as err:
        reg.get("fisherface")
    text = str(err.value)
    assert "Did you mean 'fisherfaces'?" in text
    assert "eigenfaces, fisherfaces, pixels" in text


def test_import_meerbench_does_not_import_torch():
    code = "import sys, meerbench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_entry_points_are_discovered(tmp_path, monkeypatch):
    info = tmp_path / "demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[meerbench.models]\ndemo-model = json:loads\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("model", "meerbench.models")
    assert "demo-model" in reg.names()
    assert reg.entry("demo-model").origin == "demo-plugin"
    import json

    assert reg.get("demo-model") is json.loads
