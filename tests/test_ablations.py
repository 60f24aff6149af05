"""The 2x retraining configurations and MEER's ablations (issue 15, docs/meer.md).

Every MEER variant's shipped 2x configuration is shrunk to a tiny network on a 12-identity slice
(its stages and loss tables kept) and trained through the real loop; the exported folder loads
through its card, embeds and, with a generator, restores. The ablated component must really be
absent: no parameters of it in the checkpoint, no loss term of it in the log.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_train import TINY_TRAIN, read_log

from meerbench.engine.embed import ArrayImages, embed
from meerbench.models.meer import MeerArch, MeerNet, load_trained
from meerbench.train import train
from meerbench.train.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"
BASELINES_2X = ("arcface-s-2x", "arcface-s-maskaug-2x", "from-s-2x")
MEER_2X = ("meer-s-2x", "meer-s-2x-nodecoupling", "meer-s-2x-nogenerator", "meer-s-2x-noidloss")
#: parameters only MEER's decoupling module has: the F_id conv, the F_m split, the family head
DECOUPLING_KEYS = ("identity.", "mask.split.", "mask.family.")
#: what every logged train record holds besides the loss terms
BOOKKEEPING = {"kind", "step", "stage", "lr", "train_seconds", "loss", "images_per_s",
               "data_wait_s", "data_share"}


def tiny_variant(name: str, folder: Path) -> Path:
    """The shipped config ``name`` at test size: its stages and loss weights, tiny everything
    else (network, data, steps, validation)."""
    folder.mkdir(parents=True, exist_ok=True)
    protocol = folder / "tiny-train.yaml"
    protocol.write_text(yaml.safe_dump(TINY_TRAIN))
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    model = cfg["model"]
    model.update(width=0.125, input_size=32, embedding_dim=64)
    for key, value in (("generator_width", 4), ("mask_width", 8)):
        if key in model:
            model[key] = value
    cfg["data"].update(protocol=str(protocol), holdout_identities=4)
    cfg["margin"] = {"kind": "arcface", "s": 16.0, "m": 0.3}
    cfg["optim"].update(batch_pairs=8, warmup_steps=2)
    for stage in cfg["stages"]:
        stage["steps"] = 2
    cfg["runtime"] = {"threads": 1, "precision": "fp32", "log_every": 1, "checkpoint_every": 100}
    cfg["validation"].update(every=2, folds=2, pairs_per_fold=16)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each MEER variant trained for 2 steps per stage; name -> exported folder."""
    root = tmp_path_factory.mktemp("ablations")
    return {name: train(tiny_variant(name, root / name), root / name / "out", progress=False)
            for name in MEER_2X}


def _keys(out: Path) -> set[str]:
    return set(load_file(str(out / "model.safetensors")))


def _logged_terms(out: Path) -> dict[str, set[str]]:
    """Loss terms logged per stage (union over the stage's train records)."""
    terms: dict[str, set[str]] = {}
    for record in read_log(out):
        if record["kind"] == "train":
            terms.setdefault(record["stage"], set()).update(set(record) - BOOKKEEPING)
    return terms


def test_2x_configs_share_the_budget():
    configs = {n: load_config(CONFIGS / f"{n}.yaml") for n in (*BASELINES_2X, *MEER_2X)}
    reference = load_config(CONFIGS / "meer-s.yaml")

    def budget(c):  # everything that must be equal across the seven runs
        o = c.optim
        return (c.seed, c.data.protocol, c.data.identities, c.data.holdout_identities,
                c.data.flip, o.batch_pairs * len(c.data.images), o.name, o.lr, o.momentum,
                o.weight_decay, o.schedule, o.warmup_steps, o.accumulate, o.generator_lr_scale,
                o.clip_grad_norm, c.margin, c.steps, c.arch.depth, c.arch.width,
                c.arch.input_size, c.arch.embedding_dim, c.runtime, c.validation.every,
                c.validation.condition, c.validation.far, c.validation.folds,
                c.validation.pairs_per_fold, c.validation.seed, c.export_dtype)

    assert len({budget(c) for c in configs.values()}) == 1
    assert configs["meer-s-2x"].steps == 2 * reference.steps == 2880
    for name, c in configs.items():
        assert c.name == name  # a plain name: the output and card folder
        assert c.optim.batch_pairs * len(c.data.images) == 128
    # MEER's three-stage variants double meer-s' stages; (b) has one stage of the same losses
    doubled = [(s.name, 2 * s.steps) for s in reference.stages]
    for name in ("meer-s-2x", "meer-s-2x-nodecoupling", "meer-s-2x-noidloss"):
        assert [(s.name, s.steps) for s in configs[name].stages] == doubled, name
        assert configs[name].validation.select_from_stage == "refine"
    full = configs["meer-s-2x"]
    assert [s.losses for s in full.stages] == [s.losses for s in reference.stages]
    # each ablation removes its component and nothing else
    dec = configs["meer-s-2x-nodecoupling"]
    assert (dec.arch.decoupling, dec.arch.generator) == ("none", True)
    assert [s.losses for s in dec.stages] == [
        {k: v for k, v in s.losses.items() if k not in ("family", "decorrelation")}
        for s in full.stages]
    gen = configs["meer-s-2x-nogenerator"]
    assert (gen.arch.decoupling, gen.arch.generator) == ("meer", False)
    assert [s.losses for s in gen.stages] == [full.stages[0].losses]
    idl = configs["meer-s-2x-noidloss"]
    assert idl.arch == full.arch
    assert [s.losses for s in idl.stages] == [
        {k: v for k, v in s.losses.items() if k != "id_preserving"} for s in full.stages]


@pytest.mark.parametrize("name", MEER_2X)
def test_variant_trains_exports_loads_embeds_and_restores(runs, name):
    out = runs[name]
    cfg = load_config(out / "config.yaml")
    model = load_trained(out)
    assert model.name == name
    images = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    emb = embed(model, ArrayImages(torch.from_numpy(images)), batch_size=2, progress=False)
    assert emb.embeddings.shape == (3, 64) and np.isfinite(emb.embeddings).all()
    assert model.can_restore() == cfg.arch.generator
    if cfg.arch.generator:
        restored, masks = model.restore_with_masks(images)
        assert restored.shape == images.shape and masks.shape == (3, 112, 112)
        card = yaml.safe_load((out / "card.yaml").read_text())
        assert card["validation"]["shipped_weights"]["restore/pooled_psnr_masked"] > 0
    else:
        with pytest.raises(NotImplementedError):
            model.restore(images, None)
    # what each stage logged is exactly what its loss table weights
    logged = _logged_terms(out)
    assert logged == {s.name: {k for k, v in s.losses.items() if v > 0} for s in cfg.stages}


def test_ablated_components_are_absent(runs):
    keys = {name: _keys(out) for name, out in runs.items()}
    terms = {name: set().union(*_logged_terms(out).values()) for name, out in runs.items()}
    full = keys["meer-s-2x"]
    assert all(any(k.startswith(p) for k in full) for p in DECOUPLING_KEYS)
    # (a) no decoupling: the full network minus exactly the decoupling module's parameters
    assert keys["meer-s-2x-nodecoupling"] == {k for k in full if not k.startswith(DECOUPLING_KEYS)}
    assert not terms["meer-s-2x-nodecoupling"] & {"family", "decorrelation"}
    assert {"map", "l1", "id_preserving", "margin_restored"} <= terms["meer-s-2x-nodecoupling"]
    # (b) no generator: no generator parameters, no restoration term
    assert keys["meer-s-2x-nogenerator"] == {k for k in full if not k.startswith("generator.")}
    assert terms["meer-s-2x-nogenerator"] == {"margin", "map", "family", "decorrelation"}
    # (c) no id-preserving loss: the same network, the term never computed
    assert keys["meer-s-2x-noidloss"] == full
    assert terms["meer-s-2x"] - terms["meer-s-2x-noidloss"] == {"id_preserving"}
    descriptions = {n: yaml.safe_load((o / "card.yaml").read_text())["description"]
                    for n, o in runs.items()}
    assert descriptions["meer-s-2x"].startswith("MEER reimplementation")
    assert "without mask decoupling" in descriptions["meer-s-2x-nodecoupling"]
    assert "without restoration and id-preserving refinement" in \
        descriptions["meer-s-2x-nogenerator"]
    assert "without id-preserving refinement" in descriptions["meer-s-2x-noidloss"]


def test_without_decoupling_the_recognizer_is_the_plain_iresnet():
    """MEER minus decoupling embeds exactly as a plain IResNet with the same encoder weights:
    the map head and the generator do not touch the recognition path."""
    arch = MeerArch(width=0.125, input_size=32, embedding_dim=32, decoupling="none",
                    generator=True, generator_width=4, mask_width=8)
    net = MeerNet(arch).eval()
    plain = MeerNet(dataclasses.replace(arch, generator=False)).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k.startswith("encoder.")})
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    enc = net.encode(x)
    assert torch.equal(enc.embedding, plain(x))
    assert enc.family_logits is None and enc.pooled_mask is None
    assert enc.mask_logits.shape == (2, 1, 8, 8)
    assert net.generate(enc).shape == x.shape


def test_ablation_config_rules(tmp_path):
    """'decorrelation' and 'family' need the decoupling module; 'map' needs a map head, which a
    generator brings."""
    from meerbench.errors import ProtocolError
    from meerbench.train.config import parse_config

    base = yaml.safe_load((CONFIGS / "meer-s-2x-nodecoupling.yaml").read_text())
    parse_config(base, "x.yaml")
    for term in ("decorrelation", "family"):
        bad = copy.deepcopy(base)
        bad["stages"][0]["losses"][term] = 0.1
        with pytest.raises(ProtocolError, match=f"'{term}' only with"):
            parse_config(bad, "x.yaml")
    plain = copy.deepcopy(base)
    plain["model"]["generator"] = False
    plain["stages"] = [plain["stages"][0]]
    plain["validation"]["select_from_stage"] = "warmup"
    with pytest.raises(ProtocolError, match="'map' only with an occluder-map head"):
        parse_config(plain, "x.yaml")
