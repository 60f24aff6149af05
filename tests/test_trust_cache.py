"""Issue 12, items 1-4: no cache hit on other data, resume across batch and chunk sizes after
SIGKILL, every artefact kind survives a flipped byte and a truncation, the Result records the
precision and device actually used."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY
from PIL import Image

from meerbench.data.dataset import DatasetSpec
from meerbench.data.formats import open_dataset
from meerbench.engine.evaluate import evaluate
from meerbench.store import ArtefactRepaired


def folder_protocol(tmp_path: Path) -> Path:
    proto = {**TINY, "id": "folder-trust", "train": None,
             "dataset": {"format": "folder", "name": "faces", "options": {}},
             "tasks": {"verification": {"seed": 1, "folds": 2, "pairs_per_fold": 6,
                                        "conditions": ["UMR-UMP"]}}}
    path = tmp_path / "folder.yaml"
    path.write_text(yaml.safe_dump(proto))
    return path


def write_faces(root: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(6):
        (root / f"person{i}").mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (112, 112, 3))
        for j in range(3):
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"person{i}" / f"{j}.png")


def metrics_of(result) -> dict:
    return json.loads(json.dumps(result.metrics))


# ---------------------------------------------------------------- 1. content keys the cache

def test_other_images_under_the_same_names_are_never_a_cache_hit(tmp_path: Path) -> None:
    proto = folder_protocol(tmp_path)
    write_faces(tmp_path / "a", seed=1)
    write_faces(tmp_path / "b", seed=2)  # the same file names, other pixels
    first = evaluate("pixels", str(proto), data=tmp_path / "a", out_dir=None, progress=False)
    other = evaluate("pixels", str(proto), data=tmp_path / "b", out_dir=None, progress=False)
    assert not other.timings["embed_cache_hit"]
    assert other.protocol["content_sha256"] != first.protocol["content_sha256"]
    assert metrics_of(other) != metrics_of(first)
    fresh_b = evaluate("pixels", str(proto), data=tmp_path / "b", out_dir=None, progress=False)
    assert fresh_b.timings["embed_cache_hit"] and metrics_of(fresh_b) == metrics_of(other)
    # one image edited in place: a miss, and the numbers of the edited data
    edited = tmp_path / "a" / "person0" / "1.png"
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(edited)
    after = evaluate("pixels", str(proto), data=tmp_path / "a", out_dir=None, progress=False)
    assert not after.timings["embed_cache_hit"]
    assert after.protocol["content_sha256"] != first.protocol["content_sha256"]


def test_one_file_by_two_paths_or_two_copies_is_refused_naming_both(tmp_path: Path) -> None:
    write_faces(tmp_path / "faces", seed=1)
    (tmp_path / "faces" / "person9").mkdir()
    os.symlink(tmp_path / "faces" / "person0" / "0.png", tmp_path / "faces" / "person9" / "x.png")
    spec = DatasetSpec("folder", "faces", {})
    with pytest.raises(Exception, match=r"person0/0\.png.*person9/x\.png|person9/x\.png.*person0"):
        open_dataset(spec, tmp_path / "faces").content_hash()
    (tmp_path / "faces" / "person9" / "x.png").unlink()
    os.link(tmp_path / "faces" / "person0" / "0.png", tmp_path / "faces" / "person9" / "x.png")
    with pytest.raises(Exception, match=r"are the same file") as caught:  # a hard link
        open_dataset(spec, tmp_path / "faces").content_hash()
    assert "person0/0.png" in str(caught.value) and "person9/x.png" in str(caught.value)
    (tmp_path / "faces" / "person9" / "x.png").unlink()
    (tmp_path / "faces" / "person9" / "x.png").write_bytes(
        (tmp_path / "faces" / "person1" / "2.png").read_bytes())
    with pytest.raises(Exception, match="same content") as caught:
        open_dataset(spec, tmp_path / "faces").content_hash()
    assert "person1/2.png" in str(caught.value) and "person9/x.png" in str(caught.value)


# --------------------------------------------- 2. resume across batch / chunk size after SIGKILL

KILL_AFTER = """
import os, signal, sys
from meerbench.engine import embed as E
calls = {"n": 0}
real = E.forward_batch
def counting(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] > int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: as a real kill
    return real(*args, **kwargs)
E.forward_batch = counting
from meerbench.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_cli_process(args: list[str], home: Path, kill_after: int = 10**9
                    ) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEERBENCH_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", KILL_AFTER, str(kill_after), *args], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_resume_after_sigkill_with_other_batch_and_chunk_sizes_is_byte_identical(
        tmp_path: Path, tiny_protocol: Path) -> None:
    base = ["run", "--model", "meer-s", "--protocol", str(tiny_protocol), "--no-progress",
            "--device", "cpu"]
    home = tmp_path / "home"
    killed = run_cli_process([*base, "--out", str(tmp_path / "killed"), "--batch-size", "8",
                              "--chunk-size", "16"], home, kill_after=5)
    assert killed.returncode == -signal.SIGKILL
    pieces = list((home / "embeddings").glob("*.pieces/rows-*"))
    assert len(pieces) == 2  # chunks of rows 0-16 and 16-32 were saved before the kill
    # same batch size, other chunk size: the saved rows are reused, the rest computed
    resumed = run_cli_process([*base, "--out", str(tmp_path / "resumed"), "--batch-size", "8",
                               "--chunk-size", "24"], home)
    assert resumed.returncode == 0, resumed.stderr
    # other batch size too: nothing reused that could differ (the key holds the batch size)
    other = run_cli_process([*base, "--out", str(tmp_path / "other"), "--batch-size", "4",
                             "--chunk-size", "12"], home, kill_after=3)
    assert other.returncode == -signal.SIGKILL
    other = run_cli_process([*base, "--out", str(tmp_path / "other"), "--batch-size", "4",
                             "--chunk-size", "40"], home)
    assert other.returncode == 0, other.stderr
    for batch, folder in (("8", "resumed"), ("4", "other")):
        clean = run_cli_process([*base, "--out", str(tmp_path / f"clean{batch}"),
                                 "--batch-size", batch], tmp_path / f"home{batch}")
        assert clean.returncode == 0, clean.stderr
        name = "meer-s__tiny.scores.csv"
        assert (tmp_path / folder / name).read_bytes() == (
            tmp_path / f"clean{batch}" / name).read_bytes()
    assert not list(home.rglob("*.partial-*"))


# ----------------------------------------- 3. every artefact kind: flip a byte, truncate a file

def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        data = data[: len(data) // 3]
    path.write_bytes(bytes(data))


def only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert found, f"nothing matches {pattern} in {folder}"
    return found[0]


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_run_artefacts_repaired_with_identical_metrics(tmp_path: Path, tiny_protocol: Path,
                                                       monkeypatch, how: str) -> None:
    """SynthFace split, fitted baseline and embeddings of one run."""
    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path / "home"))
    home = tmp_path / "home"
    clean = evaluate("fisherfaces", str(tiny_protocol), out_dir=None, progress=False)
    targets = {
        "synthface image": only(home / "synthface", "tiny-*[!s]/images/500003/005.png"),
        "synthface manifest": only(home / "synthface", "tiny-*[!s]/manifest.csv"),
        "fit": only(home / "fits", "fisherfaces-*/state.npz"),
        "embeddings": only(home / "embeddings", "fisherfaces-*/embeddings.npy"),
    }
    for what, path in targets.items():
        damage(path, how)
        with pytest.warns(ArtefactRepaired, match=path.name) as caught:
            again = evaluate("fisherfaces", str(tiny_protocol), out_dir=None, progress=False)
        assert any(str(path) in str(w.message) for w in caught), what
        assert metrics_of(again) == metrics_of(clean), what
        with warnings.catch_warnings():
            warnings.simplefilter("error", ArtefactRepaired)  # repaired for good
            evaluate("fisherfaces", str(tiny_protocol), out_dir=None, progress=False)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_embedding_pieces_repaired_with_identical_embeddings(tmp_path: Path, monkeypatch,
                                                             how: str) -> None:
    import torch

    from meerbench.engine.cache import EmbeddingCache
    from meerbench.engine.embed import ArrayImages, embed
    from meerbench.models import load_model

    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path))
    images = ArrayImages(torch.from_numpy(
        np.random.default_rng(0).integers(0, 255, (40, 112, 112, 3), np.uint8)))
    model = load_model("pixels")
    clean = embed(model, images, progress=False).embeddings
    cache = EmbeddingCache({"test": how})

    class Interrupt(ArrayImages):
        def __getitem__(self, i):
            if i == 30:
                raise KeyboardInterrupt
            return super().__getitem__(i)

    with pytest.raises(KeyboardInterrupt):
        embed(model, Interrupt(images.images), cache=cache, batch_size=5, chunk_size=10,
              progress=False)
    piece = only(cache.artefact.pieces_dir, "rows-000000010-*")
    damage(piece, how)
    with pytest.warns(ArtefactRepaired, match=piece.name):
        out = embed(model, images, cache=cache, batch_size=5, chunk_size=10, progress=False)
    assert np.array_equal(out.embeddings, clean)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_dataset_artefacts_repaired(tmp_path: Path, monkeypatch, how: str) -> None:
    """Masked and aligned datasets, the insightface bin cache, the training array cache."""
    from fixtures_build import FIXTURES

    from meerbench.data.align import align_dataset
    from meerbench.data.masking import MaskingSpec, mask_dataset
    from meerbench.train.data import cached_arrays

    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path / "home"))
    faces = tmp_path / "faces"
    write_faces(faces, seed=3)
    dataset = open_dataset(DatasetSpec("folder", "faces", {}), faces)

    def masked() -> list[bytes]:
        out, _ = mask_dataset(dataset, MaskingSpec(seed=1, landmarks="template"), progress=False)
        return [s.path.read_bytes() for s in out.samples]

    def aligned() -> list[bytes]:
        out, _ = align_dataset(dataset, "dlib", progress=False)
        return [s.path.read_bytes() for s in out.samples]

    def bins() -> list[bytes]:
        out = open_dataset(DatasetSpec("insightface-bin", "lfw", {}), FIXTURES / "bins")
        return [s.path.read_bytes() for s in out.samples]

    def train_cache() -> list[bytes]:
        return [a.tobytes() for a in cached_arrays(dataset, 48, progress=False)]

    for name, make, kind, pattern in (
            ("masked", masked, "masked", "*/masked/person2/1.png"),
            ("aligned", aligned, "prepared", "*/person4/0.png"),
            ("bins", bins, "bins", "*/000007.jpg"),
            ("train cache", train_cache, "train-cache", "*/images.npy")):
        clean = make()
        path = only(tmp_path / "home" / kind, pattern)
        damage(path, how)
        with pytest.warns(ArtefactRepaired, match=path.name):
            assert make() == clean, name


# ----------------------------------------------------- 4. precision and device as actually used

def test_result_and_cache_key_hold_the_resolved_precision_and_device(tmp_path: Path,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path / "home"))
    proto = folder_protocol(tmp_path)
    write_faces(tmp_path / "a", seed=1)
    auto = evaluate("meer-s", str(proto), data=tmp_path / "a", out_dir=None, progress=False,
                    device="cpu")
    assert auto.provenance["device"] == "cpu" and auto.provenance["precision"] == "fp32"
    explicit = evaluate("meer-s", str(proto), data=tmp_path / "a", out_dir=None, progress=False,
                        device="cpu", precision="fp32")
    assert explicit.timings["embed_cache_hit"]  # "auto" resolved to fp32 on CPU: same numbers
    bf16 = evaluate("meer-s", str(proto), data=tmp_path / "a", out_dir=None, progress=False,
                    device="cpu", precision="bf16")
    assert not bf16.timings["embed_cache_hit"] and bf16.provenance["precision"] == "bf16"
    keys = [json.loads((p / "record.json").read_text())["key"]
            for p in (tmp_path / "home" / "embeddings").iterdir() if p.name.startswith("meer")]
    assert sorted(k["precision"] for k in keys) == ["bf16", "fp32"]
    assert {k["device_type"] for k in keys} == {"cpu"}
    assert auto.model["name"] == "meer-s"


# ------------------------------------------------- 11. SIGTERM while SynthFace renders

def test_sigterm_during_rendering_leaves_no_partial_folder(tmp_path: Path) -> None:
    import time

    proto = {**TINY, "id": "sigterm", "train": None,
             "dataset": {**TINY["dataset"], "options": {**TINY["dataset"]["options"],
                                                        "n_identities": 400}}}
    path = tmp_path / "sigterm.yaml"
    path.write_text(yaml.safe_dump(proto))
    home = tmp_path / "home"
    cli = Path(sys.executable).with_name("meerbench")
    process = subprocess.Popen([str(cli), "run", "--model", "pixels", "--protocol", str(path),
                                "--out", str(tmp_path / "out"), "--no-progress"],
                               env={**os.environ, "MEERBENCH_HOME": str(home)},
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(home.glob("synthface/.*partial-*/images/*")):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert list((home / "synthface").iterdir()) == []  # the partial folder went with it


# --------------------------------------------- 8. embeddings as wide as the card promises

def test_embeddings_narrower_than_the_card_are_refused() -> None:
    import torch

    from meerbench.engine.embed import ArrayImages, embed
    from meerbench.errors import ModelError
    from meerbench.models.base import FaceModel, FaceModelCfg

    class Narrow(FaceModel):  # e.g. an ONNX graph with 128-d output under a 512-d card
        def forward(self, x):
            return x.mean(dim=(2, 3)).repeat(1, 43)[:, :128]

    images = ArrayImages(torch.zeros((4, 112, 112, 3), dtype=torch.uint8))
    with pytest.raises(ModelError, match=r"shape \(4, 128\).*promises 512-d"):
        embed(Narrow("narrow", FaceModelCfg(embedding_dim=512)), images, progress=False)
    concat = Narrow("narrow", FaceModelCfg(embedding_dim=128, flip_fusion="concat"))
    assert embed(concat, images, progress=False).embeddings.shape == (4, 256)
