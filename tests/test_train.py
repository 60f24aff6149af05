"""Training pipeline: config checks, data order, every stage on a tiny slice, exact resume, DDP."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from meerbench.data.images import read_rgb
from meerbench.errors import ProtocolError, TrainingError
from meerbench.models.card_schema import read_card
from meerbench.models.meer import contract
from meerbench.train import train
from meerbench.train.config import load_config, parse_config
from meerbench.train.data import load_train_data, make_batch, step_indices
from meerbench.train.loop import lr_factor

TINY_TRAIN = {
    "schema": 1, "id": "tiny-train", "version": 1, "description": "tiny training split",
    "dataset": {"format": "synthface", "name": "synthface-tiny-train",
                "options": {"split": "tiny-train", "seed": 5, "first_identity": 0,
                            "n_identities": 12, "n_unmasked": 0, "n_masked": 4,
                            "include_twins": True}},
    "tasks": {"verification": {"seed": 3, "folds": 2, "pairs_per_fold": 16}},
}
RECOGNITION = {"margin": 1.0, "map": 1.0, "family": 0.2, "decorrelation": 0.1}
TINY_MEER = {
    "name": "meer-tiny", "seed": 0,
    "model": {"depth": 18, "width": 0.125, "input_size": 32, "embedding_dim": 64,
              "decoupling": "meer", "generator": True, "generator_width": 4, "mask_width": 8},
    "data": {"protocol": "PROTOCOL", "holdout_identities": 4},
    "margin": {"kind": "arcface", "s": 16.0, "m": 0.3},
    "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0005, "batch_pairs": 8,
              "warmup_steps": 2},
    "stages": [
        {"name": "warmup", "steps": 4, "losses": RECOGNITION},
        {"name": "generator", "steps": 4,
         "losses": {**RECOGNITION, "l1": 1.0, "ssim": 0.5, "identity": 0.5, "adversarial": 0.01}},
        {"name": "refine", "steps": 4,
         "losses": {**RECOGNITION, "l1": 1.0, "ssim": 0.5, "id_preserving": 1.0,
                    "margin_restored": 0.5}},
    ],
    "runtime": {"threads": 1, "precision": "fp32", "log_every": 1, "checkpoint_every": 4},
    "validation": {"every": 6, "folds": 2, "pairs_per_fold": 16, "select_from_stage": "refine"},
}


def write_tiny_run(folder: Path, **changes: object) -> Path:
    """A tiny training protocol and MEER config in ``folder``; ``changes`` update the config."""
    folder.mkdir(parents=True, exist_ok=True)
    protocol = folder / "tiny-train.yaml"
    protocol.write_text(yaml.safe_dump(TINY_TRAIN))
    cfg = copy.deepcopy(TINY_MEER)
    cfg["data"]["protocol"] = str(protocol)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = cfg
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = folder / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_config_refuses_test_protocols_and_unknown_terms(tmp_path):
    cfg = copy.deepcopy(TINY_MEER)
    cfg["data"]["protocol"] = "synthmask"
    with pytest.raises(ProtocolError, match="never train or select on test data"):
        parse_config(cfg, "x.yaml")
    for pinned in ("synthmask@1", "synthmask-unseen@2"):  # a kept version is a test set too
        cfg["data"]["protocol"] = pinned
        with pytest.raises(ProtocolError, match="never train or select on test data"):
            parse_config(cfg, "x.yaml")
    cfg["data"]["protocol"] = "synthmask-train"
    cfg["stages"][0]["losses"] = {"margin": 1.0, "perceptul": 1.0}
    with pytest.raises(ProtocolError, match="perceptul"):
        parse_config(cfg, "x.yaml")
    cfg["stages"][0]["losses"] = {"margin": 1.0, "l1": 1.0}
    cfg["model"]["generator"] = False
    with pytest.raises(ProtocolError, match="generator losses"):
        parse_config(cfg, "x.yaml")


def test_shipped_configs_parse():
    folder = Path(__file__).resolve().parents[1] / "configs" / "train"
    names = {p.stem for p in folder.glob("*.yaml")}
    assert {"meer-s", "arcface-s", "arcface-s-maskaug", "from-s", "meer-r50",
            "meer-r100"} <= names
    configs = {n: load_config(folder / f"{n}.yaml") for n in names}
    small = [configs[n] for n in ("meer-s", "arcface-s", "arcface-s-maskaug", "from-s")]
    # same encoder, steps, schedule and images per step for the four CPU reference models
    assert len({(c.arch.depth, c.arch.width, c.arch.input_size, c.steps, c.optim.lr,
                 c.optim.batch_pairs * len(c.data.images)) for c in small}) == 1
    # the GPU configs on RecordIO sets: per (depth, set) the same budget for MEER and baselines
    streamed = [c for c in configs.values() if c.data.streaming]
    assert {"meer-r50-ms1mv3", "arcface-r50-ms1mv3", "arcface-maskaug-r50-ms1mv3",
            "from-r50-ms1mv3", "meer-r100-glint360k"} <= {c.name for c in streamed}
    groups: dict[tuple, set] = {}
    for c in streamed:
        groups.setdefault((c.arch.depth, c.data.protocol), set()).add(
            (c.arch.width, c.arch.input_size, c.steps, c.optim.lr,
             c.optim.batch_pairs * len(c.data.images), c.margin.sample_rate))
    assert all(len(v) == 1 for v in groups.values()), groups
    assert configs["meer-r100-glint360k"].margin.sample_rate < 1


def test_data_order_is_the_stream_of_seeded_epoch_permutations():
    stream = np.concatenate([np.random.default_rng([1, e]).permutation(10) for e in range(4)])
    for step in (3, 0, 2, 2, 7, 1):  # out of order and repeated; 2 and 7 cross epochs
        assert np.array_equal(step_indices(10, 4, step, seed=1), stream[4 * step:4 * step + 4])
    assert not np.array_equal(step_indices(10, 4, 0, seed=1), step_indices(10, 4, 0, seed=2))


def test_training_sees_the_pixels_evaluation_sees(tmp_path):
    """A batch is the network's contract applied to the original files, up to the uint8
    rounding of the resized cache (half a grey level: 0.5 / 127.5 in [-1, 1] units)."""
    cfg = load_config(write_tiny_run(tmp_path))
    data = load_train_data(cfg, progress=False)
    rows = np.arange(6)
    batch = make_batch(data, rows, np.zeros(6, bool))
    files = [data.dataset.samples[i].path for i in data.pairs.masked[rows]]
    originals = torch.from_numpy(np.stack([read_rgb(f) for f in files]))
    expected = contract(cfg.arch, cfg.flip_fusion).preprocess(originals)
    assert batch.masked.shape == expected.shape == (6, 3, 32, 32)
    assert (batch.masked - expected).abs().max() <= 0.5 / 127.5 + 1e-6


def test_lr_schedule_warms_up_then_decays(tmp_path):
    cfg = load_config(write_tiny_run(tmp_path))
    factors = [lr_factor(cfg, s) for s in range(cfg.steps)]
    assert factors[0] == 0.5 and factors[1] == 1.0
    assert all(a >= b for a, b in zip(factors[1:], factors[2:], strict=False))
    assert factors[-1] < 0.05


def test_every_stage_runs_and_losses_fall(tmp_path):
    stages = copy.deepcopy(TINY_MEER["stages"])
    for stage in stages:
        stage["steps"] = 14
    out = train(write_tiny_run(tmp_path, stages=stages, optim__lr=0.005), tmp_path / "out",
                progress=False)
    log = [r for r in read_log(out) if r["kind"] == "train"]
    assert [r["stage"] for r in log[::14]] == ["warmup", "generator", "refine"]

    def falls(term: str) -> bool:
        values = [r[term] for r in log if term in r]
        return np.mean(values[-4:]) < np.mean(values[:4])

    for term in ("margin", "map", "family", "l1", "ssim"):
        assert falls(term), term
    assert {"identity", "adversarial", "discriminator"} <= set(log[20])
    assert {"id_preserving", "margin_restored"} <= set(log[-1])
    card = yaml.safe_load((out / "card.yaml").read_text())
    assert card["schema"] == 2 and read_card(out / "card.yaml").architecture == "meer"
    assert card["training"]["selected_step"] > 28  # selection only from the refine stage
    assert card["validation"]["shipped_weights"]["restore/pooled_psnr_masked"] > 0


def test_resume_continues_bit_for_bit(tmp_path):
    config = write_tiny_run(tmp_path)
    straight = train(config, tmp_path / "straight", progress=False)
    stopped = train(config, tmp_path / "resumed", progress=False, stop_after=5)
    assert not (stopped / "model.safetensors").exists()
    resumed = train(config, tmp_path / "resumed", progress=False)
    a = torch.load(straight / "state" / "last.pt", weights_only=False)
    b = torch.load(resumed / "state" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 12
    for key, value in a["objective"].items():
        assert torch.equal(value, b["objective"][key]), key
    assert (straight / "model.safetensors").read_bytes() == \
        (resumed / "model.safetensors").read_bytes()
    timing = {"images_per_s", "train_seconds", "seconds", "data_wait_s", "data_share"}

    def strip(out: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in timing} for r in read_log(out)]

    assert strip(straight) == strip(resumed)


def test_a_non_finite_loss_stops_training_with_the_step_and_term(tmp_path, monkeypatch):
    from meerbench.train import losses

    calls = iter(range(10**6))
    real = losses.weighted_l1

    def l1_that_overflows(*args: object) -> torch.Tensor:
        value = real(*args)
        return value * torch.inf if next(calls) == 2 else value

    monkeypatch.setattr(losses, "weighted_l1", l1_that_overflows)
    stages = copy.deepcopy(TINY_MEER["stages"])
    stages[0]["steps"] = 1  # l1 runs from step 2 on; its third call is step 4
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match=r"not finite at step 4 \(stage 'generator'\): "
                                            r"l1=inf, loss=inf"):
        train(write_tiny_run(tmp_path, stages=stages, runtime__checkpoint_every=2), out,
              progress=False)
    assert max(r["step"] for r in read_log(out)) == 3
    assert torch.load(out / "state" / "last.pt", weights_only=False)["step"] == 2


def test_resume_refuses_another_config(tmp_path):
    train(write_tiny_run(tmp_path), tmp_path / "out", progress=False, stop_after=1)
    with pytest.raises(Exception, match="different configuration"):
        train(write_tiny_run(tmp_path, seed=1), tmp_path / "out", progress=False)


def test_torchrun_two_processes_match_one_process(tmp_path):
    """2 ranks x 4 pairs (gloo) vs 1 process accumulating 2 x 4 pairs: the same global batch
    and the same BatchNorm batches; parameters agree to 1e-6 (averaging all-reduced gradients
    is exact in binary floating point, so in practice they are equal)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun not installed next to python"
    one = write_tiny_run(tmp_path / "one", optim__accumulate=2)
    two = write_tiny_run(tmp_path / "two")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd, config, out in (
        ([sys.executable, "-m", "meerbench.cli"], one, tmp_path / "o1"),
        ([torchrun, "--nproc_per_node=2", "--master_port=29541", "-m", "meerbench.cli"], two,
         tmp_path / "o2"),
    ):
        done = subprocess.run([*cmd, "train", "--config", str(config), "--out", str(out),
                               "--no-progress"], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    a = torch.load(tmp_path / "o1" / "state" / "last.pt", weights_only=False)["objective"]
    b = torch.load(tmp_path / "o2" / "state" / "last.pt", weights_only=False)["objective"]
    params = [k for k in a if "running_" not in k and "num_batches" not in k]
    assert max((a[k] - b[k]).abs().max().item() for k in params) <= 1e-6
