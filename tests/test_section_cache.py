"""Task sections as store artefacts (``meerbench.engine.sections``): a rerun reads them, gives
the same Result and side files byte for byte, and anything the numbers rest on (embeddings,
protocol, scoring code) makes it score again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from meerbench.engine import sections
from meerbench.engine.evaluate import evaluate
from meerbench.tasks.identification import Identification
from meerbench.tasks.verification import Verification


def no_tasks(protocol: Path) -> Path:
    data = yaml.safe_load(protocol.read_text())
    data["tasks"].pop("restoration")
    protocol.write_text(yaml.safe_dump(data))
    return protocol


def scored(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the tasks whose run is called from now on."""
    calls: list[str] = []
    for cls in (Verification, Identification):
        original = cls.run

        def spy(self, *args, _original=original, **kwargs):
            calls.append(self.name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "run", spy)
    return calls


def test_rerun_reads_sections_and_writes_the_same_result(tiny_protocol: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    protocol = no_tasks(tiny_protocol)
    calls = scored(monkeypatch)
    first = evaluate("pixels", str(protocol), out_dir=tmp_path / "a", progress=False)
    assert sorted(calls) == ["identification", "verification"]
    second = evaluate("pixels", str(protocol), out_dir=tmp_path / "b", progress=False)
    assert sorted(calls) == ["identification", "verification"]  # nothing scored again
    assert second.metrics == first.metrics and second.counts == first.counts
    assert second.files == first.files and first.files["scores"]
    for name in first.files.values():
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    was = json.loads((tmp_path / "a" / "pixels__tiny.json").read_text())
    now = json.loads((tmp_path / "b" / "pixels__tiny.json").read_text())
    assert now["metrics"] == was["metrics"] and now["files"] == was["files"]
    # no output folder: no side files named, the numbers the same
    third = evaluate("pixels", str(protocol), out_dir=None, progress=False)
    assert third.files == {} and third.metrics == first.metrics


def test_what_the_numbers_rest_on_is_in_the_key(tiny_protocol: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    protocol = no_tasks(tiny_protocol)
    evaluate("pixels", str(protocol), out_dir=None, progress=False)
    calls = scored(monkeypatch)
    # another bootstrap count: another protocol sha256, scored again
    data = yaml.safe_load(protocol.read_text())
    data["metrics"]["verification"]["bootstrap"] = 40
    protocol.write_text(yaml.safe_dump(data))
    evaluate("pixels", str(protocol), out_dir=None, progress=False)
    assert sorted(calls) == ["identification", "verification"]
    # changed scoring code: scored again
    monkeypatch.setattr(sections, "code_digest", lambda module=None: "0" * 64)
    evaluate("pixels", str(protocol), out_dir=None, progress=False)
    assert sorted(calls) == ["identification"] * 2 + ["verification"] * 2


def test_embeddings_digest_sees_every_bit() -> None:
    a = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    b = a.copy()
    b.view(np.uint32)[17, 3] ^= 1  # one bit of one value
    assert sections.embeddings_digest(a) != sections.embeddings_digest(b)
    assert sections.embeddings_digest(a) != sections.embeddings_digest(a.reshape(25, 16))
    assert sections.embeddings_digest(a) == sections.embeddings_digest(a.copy())


def test_a_missing_side_file_in_the_store_is_rebuilt(tiny_protocol: Path, tmp_path: Path,
                                                     meerbench_home: Path) -> None:
    protocol = no_tasks(tiny_protocol)
    first = evaluate("pixels", str(protocol), out_dir=tmp_path / "a", progress=False)
    for stored in (meerbench_home / "sections").glob(
            f"pixels__tiny-verification-*/{first.files['scores']}"):
        stored.unlink()
    with pytest.warns(UserWarning, match="missing or not as recorded"):
        second = evaluate("pixels", str(protocol), out_dir=tmp_path / "b", progress=False)
    assert second.metrics == first.metrics
    assert ((tmp_path / "b" / first.files["scores"]).read_bytes()
            == (tmp_path / "a" / first.files["scores"]).read_bytes())


def test_labels_the_embeddings_do_not_show_are_in_the_key(tiny_protocol: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-family numbers read the samples' occluder families, which neither the embeddings nor
    the manifest hash (key, identity, masked) carry: the dataset's content hash, which does, keys
    the sections. Another content hash with the same embeddings is scored again."""
    from meerbench.data.dataset import Dataset

    protocol = no_tasks(tiny_protocol)
    evaluate("pixels", str(protocol), out_dir=None, progress=False)
    calls = scored(monkeypatch)
    original = Dataset.content_hash
    monkeypatch.setattr(Dataset, "content_hash",
                        lambda self, keys=None: "f" + original(self, keys)[1:])
    evaluate("pixels", str(protocol), out_dir=None, progress=False)
    assert sorted(calls) == ["identification", "verification"]
