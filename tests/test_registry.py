import json
import subprocess
import sys

import pytest

from meerbench.errors import ConfigError, UnknownNameError
from meerbench.registry import Registry


def test_lazy_entry_is_not_imported_until_used():
    reg = Registry("thing", "meerbench.tests.none")
    reg.add_lazy("json-dumps", "json:dumps", "dump json")
    assert reg.entry("json-dumps").obj is None
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
    assert reg.get("demo-model") is json.loads


def test_builtins_load_on_first_use_without_torch():
    code = ("import sys, meerbench; from meerbench.registry import MODELS, PROTOCOLS, DATASETS; "
            "m = MODELS.names(); p = PROTOCOLS.names(); d = DATASETS.names(); "
            "assert {'pixels', 'meer-s', 'arcface-r50', 'meer'} <= set(m), m; "
            "assert 'synthmask' in p and 'synthface' in d, (p, d); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_name_registers_once():
    reg = Registry("thing", "meerbench.tests.none")
    reg.add_lazy("twice", "json:dumps", "first", origin="pkg-a")
    with pytest.raises(ConfigError, match=r"'twice' is registered twice: by pkg-a .*json:dumps.* "
                                          r"and by pkg-b"):
        reg.add("twice", object(), origin="pkg-b")


def test_builtin_loader_runs_once_before_the_first_lookup():
    calls = []
    reg = Registry("thing", "meerbench.tests.none", "test_registry:_register_demo")
    _LOADERS.append(lambda r: (calls.append(1), r.add("demo", json.dumps)))
    assert reg.names() == ["demo"] and reg.get("demo") is json.dumps and calls == [1]


_LOADERS: list = []


def _register_demo(registry: Registry) -> None:
    _LOADERS.pop()(registry)


def test_plugin_shadowed_by_a_builtin_warns(tmp_path, monkeypatch):
    info = tmp_path / "shadow_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[meerbench.tests.shadow]\npixels = json:loads\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("model", "meerbench.tests.shadow")
    reg.add("pixels", json.dumps)
    with pytest.warns(UserWarning, match=r"'pixels' of plugin shadow-plugin \(json:loads\) is "
                                         r"ignored: builtin"):
        names = reg.names()
    assert names == ["pixels"] and reg.get("pixels") is json.dumps
