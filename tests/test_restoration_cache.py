"""Restorations and their metrics are store artefacts: a rerun reads them, a change of restorer,
data, metric settings or scoring code computes them again."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from meerbench.engine.evaluate import evaluate
from meerbench.metrics.restoration import FID_WEIGHTS_FILE, metric_settings
from meerbench.models.classical import PixelsModel
from meerbench.settings import home


class CountingFill(PixelsModel):
    """Fills the occluder with one grey level and counts the images it restored."""

    restoration_given = "true-map"

    def __init__(self, name: str, level: int = 128) -> None:
        super().__init__(name)
        self.level, self.restored = level, 0

    def can_restore(self) -> bool:
        return True

    def restore(self, images: np.ndarray, mask_maps: np.ndarray) -> np.ndarray:
        self.restored += len(images)
        out = images.copy()
        out[mask_maps] = self.level
        return out


    def weights_hash(self) -> str:
        return hashlib.sha256(f"{self.name}:{self.level}".encode()).hexdigest()


def _restoration(model: CountingFill, protocol: Path, out: Path | None) -> dict:
    return evaluate(model, str(protocol), out_dir=out, progress=False).to_dict()


def test_rerun_reads_the_cached_restorations_and_metrics(tiny_protocol: Path,
                                                         tmp_path: Path) -> None:
    first, again = CountingFill("fill-rerun"), CountingFill("fill-rerun")
    a = _restoration(first, tiny_protocol, tmp_path / "a")
    b = _restoration(again, tiny_protocol, tmp_path / "b")
    assert first.restored == 80 and again.restored == 0  # 20 identities x 4 masked images
    assert a["metrics"]["restoration"] == b["metrics"]["restoration"]
    assert a["metrics"]["restoration"]["given"] == "true-map"
    samples = [(tmp_path / d / r["files"]["restoration_samples"]).read_bytes()
               for d, r in (("a", a), ("b", b))]
    assert samples[0] == samples[1]
    assert len(list((home() / "restorations").glob("fill-rerun-*"))) == 1


def test_another_restorer_or_recognizer_is_another_key(tiny_protocol: Path,
                                                       tmp_path: Path) -> None:
    grey = _restoration(CountingFill("fill-keys"), tiny_protocol, None)["metrics"]["restoration"]
    white = CountingFill("fill-keys", level=255)  # same name, other weights hash
    other = _restoration(white, tiny_protocol, None)["metrics"]["restoration"]
    assert white.restored == 80 and other["psnr"] != grey["psnr"]

    text = tiny_protocol.read_text().replace("restoration: {}",
                                             "restoration: {recognizer: eigenfaces}")
    assert text != tiny_protocol.read_text()
    tiny_protocol.write_text(text)
    again = CountingFill("fill-keys")
    by_eigen = _restoration(again, tiny_protocol, None)["metrics"]["restoration"]
    assert again.restored == 0  # the restorations were cached: only the metrics are new
    assert by_eigen["identity_similarity"]["recognizer"] == "eigenfaces"
    assert by_eigen["psnr"] == grey["psnr"]


def test_changed_scoring_code_scores_again(tiny_protocol: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics artefact is keyed on the scoring code (``tasks.code_digest``): a fixed bug in
    PSNR or SSIM is not hidden behind a report cached by the old code. The restorations, keyed
    on the restorer, are read back."""
    import meerbench.tasks.restoration as task

    first = CountingFill("fill-code")
    _restoration(first, tiny_protocol, None)
    scored = home() / "restoration-metrics"
    before = set(scored.glob("fill-code-*"))
    monkeypatch.setattr(task, "code_digest", lambda module=None: "0" * 64)
    again = CountingFill("fill-code")
    _restoration(again, tiny_protocol, None)
    assert again.restored == 0 and len(before) == 1
    assert len(set(scored.glob("fill-code-*")) - before) == 1


def test_metric_settings_change_when_weights_are_placed(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A report cached while FID weights were absent ('not available') is not read back once
    the weights file is there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    before = metric_settings()
    assert set(before["weights_sha256"].values()) == {None}
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True)
    (folder / FID_WEIGHTS_FILE).write_bytes(b"not the real weights")
    after = metric_settings()
    assert after["weights_sha256"]["fid"] is not None and after != before


def test_the_train_split_is_opened_once_per_evaluation(tiny_protocol: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """inpaint-telea+fisherfaces and the restoration task's fisherfaces recognizer are both
    fitted on the train split: it is opened (and hashed) once."""
    import meerbench.engine.evaluate as engine

    names: list[str] = []

    def counting(spec: Any, *args: Any, **kwargs: Any) -> Any:
        names.append(spec.name)
        return real(spec, *args, **kwargs)

    real = engine.open_dataset
    monkeypatch.setattr(engine, "open_dataset", counting)
    evaluate("inpaint-telea+fisherfaces", str(tiny_protocol), out_dir=None, progress=False)
    assert names == ["synthface-tiny", "synthface-tiny-train"]
