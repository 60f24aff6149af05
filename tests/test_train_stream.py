"""Streaming training: RecordIO and SynthFace sources, on-the-fly occluders as a pure function of
(seed, epoch, index), worker-count invariance, exact resume with workers, 2 ranks = accumulation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from meerbench.cli import main
from meerbench.data.formats import open_dataset
from meerbench.data.formats.recordio import pack_dataset
from meerbench.data.masking import template_landmarks
from meerbench.data.render.occluders import SEEN_FAMILIES, render_occluder, sample_occluder
from meerbench.errors import DatasetError, ProtocolError
from meerbench.protocol import load_protocol
from meerbench.train import train
from meerbench.train.config import load_config, parse_config
from meerbench.train.losses import MarginHead, sampled_classes
from meerbench.train.stream import (
    BANK_TAG,
    TAG,
    RecordSource,
    draw_sample,
    load_stream_data,
    occluder_bank,
)
from tests.test_train import TINY_MEER, read_log, write_tiny_run

MASK = {"seed": 7, "families": "seen", "validation_images": 4, "bank": 64}


@pytest.fixture(scope="module")
def record_set(tmp_path_factory) -> Path:
    """The tiny SynthFace training split's unmasked faces (12 identities x 4, 112 px) packed as
    an insightface RecordIO set."""
    folder = tmp_path_factory.mktemp("rec")
    config = load_config(write_tiny_run(folder / "cfg"))
    dataset = open_dataset(load_protocol(config.data.protocol).dataset, progress=False)
    pack_dataset(dataset, folder / "set", progress=False)
    return folder / "set"


def rec_run(folder: Path, root: Path, **changes: object) -> Path:
    """The tiny MEER config streaming ``root`` with on-the-fly masks."""
    path = write_tiny_run(folder, data__mask=MASK, data__root=str(root), **changes)
    cfg = yaml.safe_load(path.read_text())
    protocol = folder / "casia-like.yaml"
    protocol.write_text(yaml.safe_dump({
        "schema": 1, "id": "casia-like", "version": 1, "description": "tiny RecordIO set",
        "dataset": {"format": "insightface-rec", "name": "tiny-rec"},
        "tasks": {"verification": {"seed": 3, "folds": 2, "pairs_per_fold": 16}}}))
    cfg["data"]["protocol"] = str(protocol)
    path.write_text(yaml.safe_dump(cfg))
    return path


def first_batches(config: Path, steps: int, workers: int, rank: int = 0, world: int = 1,
                  start: int = 0) -> list[torch.Tensor]:
    cfg = load_config(config)
    cfg = type(cfg)(**{**cfg.__dict__, "data": type(cfg.data)(**{
        **cfg.data.__dict__, "loader": type(cfg.data.loader)(workers, 2, False)})})
    _, stream = load_stream_data(cfg, torch.device("cpu"), rank, world, progress=False)
    out = []
    for n, batch in enumerate(stream.batches(start)):
        if n == steps:
            break
        out.append(torch.cat([batch.masked.flatten(1), batch.unmasked.flatten(1),
                              batch.maps.flatten(1), batch.family[:, None].float(),
                              batch.label[:, None].float()], 1))
    return out


def test_occluders_are_a_pure_function_of_seed_epoch_and_index(record_set):
    source = RecordSource(record_set, "tiny")
    kw = {"families": SEEN_FAMILIES, "family_classes": (*SEEN_FAMILIES, "none"), "size": 112,
          "flip": False}
    a = draw_sample(source, 5, seed=1, epoch=0, **kw)
    b = draw_sample(source, 5, seed=1, epoch=0, **kw)
    c = draw_sample(source, 5, seed=1, epoch=1, **kw)
    assert a.masked.tobytes() == b.masked.tobytes() and a.family == b.family
    assert a.masked.tobytes() != c.masked.tobytes()  # another epoch, another occluder
    original = source.image(5)
    assert np.array_equal(a.twin, original)  # the twin is the original
    outside = a.coverage == 0
    assert 0.05 < (~outside).mean() < 0.8
    assert np.array_equal(a.masked[outside], original[outside])  # untouched outside the map
    assert a.label == source.labels[5]
    families = {draw_sample(source, i, seed=1, epoch=e, **kw).family
                for i in range(len(source.labels)) for e in range(3)}
    assert families <= set(range(len(SEEN_FAMILIES))) and len(families) >= 3


def test_bank_occluders_match_a_full_render_within_one_grey_level(record_set):
    source = RecordSource(record_set, "tiny")
    bank = occluder_bank(3, SEEN_FAMILIES, 112, 16, progress=False)
    assert bank.family.tolist() == [
        SEEN_FAMILIES.index(sample_occluder(np.random.default_rng([3, TAG, BANK_TAG, k]),
                                            SEEN_FAMILIES).family) for k in range(16)]
    points = np.round(template_landmarks((112, 112)), 3)
    for k, index in ((0, 1), (5, 7), (11, 30)):
        face = source.image(index)
        spec = sample_occluder(np.random.default_rng([3, TAG, BANK_TAG, k]), SEEN_FAMILIES)
        rendered, rendered_map = render_occluder(face, points, spec)
        masked, occluder_map = bank.apply(k, face)
        assert np.array_equal(occluder_map, rendered_map)
        assert np.abs(masked.astype(int) - rendered).max() <= 1
        assert np.array_equal(masked[~occluder_map], face[~occluder_map])
    kw = {"families": SEEN_FAMILIES, "family_classes": (*SEEN_FAMILIES, "none"), "size": 112,
          "flip": False, "bank": bank}
    a = draw_sample(source, 4, seed=1, epoch=0, **kw)
    assert a.masked.tobytes() == draw_sample(source, 4, seed=1, epoch=0, **kw).masked.tobytes()
    assert np.array_equal(a.twin, source.image(4))


def test_per_image_landmarks_place_the_occluder(record_set, tmp_path):
    root = tmp_path / "with-landmarks"
    shutil.copytree(record_set, root)
    n = len(RecordSource(root, "x").labels)
    points = np.round(template_landmarks((112, 112)), 3) + [0.0, 8.0]  # 8 px lower
    np.save(root / "landmarks.npy", np.repeat(points[None], n, 0).astype(np.float32))
    source = RecordSource(root, "x")
    bank = occluder_bank(3, SEEN_FAMILIES, 112, 16, progress=False)
    kw = {"families": SEEN_FAMILIES, "family_classes": (*SEEN_FAMILIES, "none"), "size": 112,
          "flip": False, "bank": bank}
    s = draw_sample(source, 2, seed=1, epoch=0, **kw)  # the bank is not used: own landmarks
    spec = sample_occluder(np.random.default_rng([1, TAG, 0, 2]), SEEN_FAMILIES)
    expected, expected_map = render_occluder(source.image(2), np.round(points, 3), spec)
    assert np.array_equal(s.masked, expected) and np.array_equal(s.coverage > 0, expected_map)
    np.save(root / "landmarks.npy", np.zeros((n + 1, 5, 2), np.float32))
    with pytest.raises(DatasetError, match=r"landmarks\.npy: shape \(\d+, 5, 2\), expected"):
        RecordSource(root, "x")


def test_held_out_families_are_refused_for_training(tmp_path):
    cfg = yaml.safe_load(write_tiny_run(tmp_path, data__mask={"families": "scarf"}).read_text())
    with pytest.raises(ProtocolError, match="held-out families must stay unseen"):
        parse_config(cfg, "x.yaml")


def test_batches_do_not_depend_on_workers_or_ranks(record_set, tmp_path):
    config = rec_run(tmp_path, record_set)
    zero = first_batches(config, 3, workers=0)
    two = first_batches(config, 3, workers=2)
    assert len(zero) == 3 and all(torch.equal(a, b) for a, b in zip(zero, two, strict=True))
    halves = [first_batches(config, 3, workers=1, rank=r, world=2) for r in (0, 1)]
    for step in range(3):
        assert torch.equal(torch.cat([halves[0][step], halves[1][step]]), zero[step])
    assert torch.equal(first_batches(config, 1, workers=2, start=2)[0], zero[2])


def test_a_sharded_set_gives_the_same_batches_as_one_file(record_set, tmp_path):
    """The same faces packed as shards of 5 images (10 shards) stream bit-identical batches."""
    sharded = tmp_path / "sharded"
    pack_dataset(open_dataset(load_protocol(load_config(write_tiny_run(tmp_path / "cfg")).data
                                            .protocol).dataset, progress=False),
                 sharded, shard_size=5, progress=False)
    assert len(list(sharded.glob("train-*.rec"))) == 10 and not (sharded / "train.rec").exists()
    one = first_batches(rec_run(tmp_path / "one", record_set), 3, workers=2)
    many = first_batches(rec_run(tmp_path / "many", sharded), 3, workers=2)
    assert len(one) == 3 and all(torch.equal(a, b) for a, b in zip(one, many, strict=True))


def test_trains_from_a_record_set_and_logs_data_wait(record_set, tmp_path):
    out = train(rec_run(tmp_path, record_set, data__loader={"workers": 1}), tmp_path / "out",
                progress=False)
    log = [r for r in read_log(out) if r["kind"] == "train"]
    assert len(log) == 12 and all(0 <= r["data_share"] <= 1 and r["data_wait_s"] >= 0
                                  for r in log)
    card = yaml.safe_load((out / "card.yaml").read_text())
    # 12 identities - 4 held out = 8 trained on, 4 images each
    assert card["training"]["train_identities"] == 8 and card["training"]["train_pairs"] == 32
    assert any(r["kind"] == "validation" for r in read_log(out))


def test_trains_from_a_synthface_split_streamed(tmp_path):
    out = train(write_tiny_run(tmp_path, data__mask=MASK, stages=TINY_MEER["stages"][:1],
                               validation__select_from_stage="warmup"),
                tmp_path / "out", progress=False)
    assert (out / "model.safetensors").is_file()


def test_resume_mid_epoch_with_workers_continues_bit_for_bit(record_set, tmp_path):
    config = rec_run(tmp_path, record_set, data__loader={"workers": 2})
    straight = train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "resumed", progress=False, stop_after=5)  # epoch = 32 / 8 steps
    resumed = train(config, tmp_path / "resumed", progress=False)
    a = torch.load(straight / "state" / "last.pt", weights_only=False)
    b = torch.load(resumed / "state" / "last.pt", weights_only=False)
    for key, value in a["objective"].items():
        assert torch.equal(value, b["objective"][key]), key
    assert (straight / "model.safetensors").read_bytes() == \
        (resumed / "model.safetensors").read_bytes()


def test_torchrun_two_processes_match_one_process_with_accumulation(record_set, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun not installed next to python"
    stages = [{**TINY_MEER["stages"][0], "steps": 4}]
    same = {"stages": stages, "validation__select_from_stage": "warmup",
            "data__loader": {"workers": 1}}
    one = rec_run(tmp_path / "one", record_set, optim__accumulate=2, **same)
    two = rec_run(tmp_path / "two", record_set, **same)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd, config, out in (
        ([sys.executable, "-m", "meerbench.cli"], one, tmp_path / "o1"),
        ([torchrun, "--nproc_per_node=2", "--master_port=29547", "-m", "meerbench.cli"], two,
         tmp_path / "o2"),
    ):
        done = subprocess.run([*cmd, "train", "--config", str(config), "--out", str(out),
                               "--no-progress"], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    a = torch.load(tmp_path / "o1" / "state" / "last.pt", weights_only=False)["objective"]
    b = torch.load(tmp_path / "o2" / "state" / "last.pt", weights_only=False)["objective"]
    params = [k for k in a if "running_" not in k and "num_batches" not in k]
    assert max((a[k] - b[k]).abs().max().item() for k in params) <= 1e-6


def test_loader_only_reports_throughput_and_needs_a_stream(record_set, tmp_path, capsys):
    config = rec_run(tmp_path, record_set, data__loader={"workers": 1})
    assert main(["train", "--config", str(config), "--loader-only", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "loader: 24 samples (masked face, twin, map)" in out and "with 1 workers" in out
    assert not (Path("runs") / "meer-tiny").exists()
    assert main(["train", "--config", str(write_tiny_run(tmp_path / "plain")),
                 "--loader-only", "3"]) == 2
    assert "no data.mask" in capsys.readouterr().err


def test_missing_record_set_names_the_layout(tmp_path, capsys):
    config = rec_run(tmp_path, tmp_path / "absent")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "tiny-rec" in err and "train.rec" in err and "meerbench pack" in err


def test_partial_fc_softmax_runs_over_the_batch_classes_and_a_sample():
    torch.manual_seed(0)
    labels = torch.tensor([3, 3, 17, 42, 99])
    keep = sampled_classes(labels, 1000, 0.1)
    assert len(keep) == 100 and torch.all(keep[1:] > keep[:-1])
    assert set(labels.tolist()) <= set(keep.tolist())
    assert len(sampled_classes(labels, 200, 0.01)) == 4  # never fewer than the batch's classes
    full = MarginHead(8, 1000, "arcface", 64.0, 0.5)
    sampled = MarginHead(8, 1000, "arcface", 64.0, 0.5, sample_rate=0.1)
    sampled.load_state_dict(full.state_dict())
    emb = torch.randn(5, 8)
    assert sampled(emb, labels) < full(emb, labels)  # fewer negatives, smaller loss
    sampled.eval()
    assert torch.equal(sampled(emb, labels), full(emb, labels))  # all centres outside training
    sampled.train()
    sampled(emb, labels).backward()
    touched = (sampled.weight.grad.abs().sum(1) > 0).nonzero().flatten()
    assert set(labels.tolist()) <= set(touched.tolist()) and len(touched) <= 100
