"""Training configuration: one YAML file per reference model, validated on load.

Every field is read through ``meerbench.schema.Fields``, so a misspelt or misplaced field fails
with the file, the field and the allowed names. The file's canonical sha256 is stored in every
checkpoint: a run resumes only from a checkpoint written under the same configuration.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meerbench.data.formats.inputs import read_yaml
from meerbench.errors import ConfigError, ProtocolError
from meerbench.models.meer import MeerArch
from meerbench.schema import Fields
from meerbench.settings import PRECISIONS

#: loss terms a stage may weight (see ``meerbench.train.losses`` and docs/meer.md).
LOSS_TERMS = (
    "margin",  # ArcFace/CosFace on the recognizer's training images
    "map",  # BCE + Dice of the predicted occluder map
    "family",  # cross-entropy of the occluder family (mask families + "none")
    "decorrelation",  # squared cross-correlation of pooled identity and mask features
    "l1",  # L1 of the generated face, with extra weight on the occluded region
    "ssim",  # 1 - SSIM of the generated face
    "identity",  # 1 - cos(E(restored), E(unmasked)) through a frozen copy of the recognizer
    "adversarial",  # PatchGAN hinge loss of the generator
    "perceptual",  # VGG-16 relu3_3 L1, only with local VGG weights
    "id_preserving",  # 1 - cos(E(restored), E(unmasked)) refining the recognizer itself
    "margin_restored",  # the margin loss on the restored face's embedding
)
GENERATOR_TERMS = frozenset(LOSS_TERMS[4:])
IMAGE_KINDS = ("masked", "unmasked")
MARGINS = ("arcface", "cosface")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
CONDITIONS = ("UMR-UMP", "UMR-MP", "MR-MP")
#: test protocols: training and model selection must never see them.
TEST_PROTOCOLS = ("synthmask", "synthmask-unseen")


@dataclass(frozen=True)
class MaskCfg:
    """On-the-fly occluders for unmasked training sets (``meerbench.train.stream``)."""

    seed: int
    families: tuple[str, ...]  # seen families only: the held-out ones stay unseen
    validation_images: int  # held-out images per identity masked for validation
    bank: int  # occluders pre-rendered at the template and composited (0: render each one)


@dataclass(frozen=True)
class LoaderCfg:
    """DataLoader settings of the streaming pipeline; they change speed, never a batch, so
    they are not part of the configuration's sha256 (a run may resume with other values)."""

    workers: int
    prefetch: int  # batches each worker prepares ahead
    pin_memory: bool  # page-locked batches for asynchronous copies to a GPU


@dataclass(frozen=True)
class DataCfg:
    protocol: str  # registered name or YAML path of the training protocol
    identities: int | None  # use only the first N identities (sorted), None = all
    holdout_identities: int  # the last N of those: validation only, never trained on
    images: tuple[str, ...]  # what the recognizer's margin loss sees: masked and/or unmasked
    flip: bool  # random horizontal flip of a whole pair (image, twin, map)
    root: str | None  # the dataset folder (default: $MEERBENCH_DATA/<dataset name>)
    mask: MaskCfg | None  # set: stream unmasked images and draw occluders on the fly
    loader: LoaderCfg

    @property
    def streaming(self) -> bool:
        return self.mask is not None


@dataclass(frozen=True)
class MarginCfg:
    kind: str
    s: float
    m: float
    sample_rate: float  # partial-FC style: share of class centres in each step's softmax


@dataclass(frozen=True)
class OptimCfg:
    name: str
    lr: float
    momentum: float
    weight_decay: float
    batch_pairs: int  # global batch per optimizer step, in (masked, unmasked) pairs
    accumulate: int  # micro-batches per optimizer step (per process)
    schedule: str
    warmup_steps: int
    milestones: tuple[int, ...]  # step schedule only
    gamma: float
    generator_lr_scale: float  # generator (and discriminator) lr = lr x this
    clip_grad_norm: float | None


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    losses: dict[str, float]


@dataclass(frozen=True)
class LossCfg:
    occluded_weight: float  # extra L1 weight inside the occluder map
    ssim_window: int
    perceptual_weights: str | None  # local VGG-16 state dict; required if perceptual > 0


@dataclass(frozen=True)
class RuntimeCfg:
    device: str  # auto | cpu | cuda
    precision: str
    channels_last: bool
    threads: int | None
    log_every: int
    checkpoint_every: int


@dataclass(frozen=True)
class ValidationCfg:
    every: int
    folds: int
    pairs_per_fold: int
    condition: str  # the condition whose TAR@FAR selects the model
    far: float
    select_from_stage: str  # only validations from this stage on are eligible
    seed: int


@dataclass(frozen=True)
class TrainConfig:
    name: str
    seed: int
    arch: MeerArch
    flip_fusion: str
    export_dtype: str  # float16 | float32 for the exported safetensors
    data: DataCfg
    margin: MarginCfg
    optim: OptimCfg
    stages: tuple[Stage, ...]
    losses: LossCfg
    runtime: RuntimeCfg
    validation: ValidationCfg
    source: str
    sha256: str
    raw: dict[str, Any]

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_at(self, step: int) -> Stage:
        """The stage that optimizer step ``step`` (0-based) belongs to."""
        end = 0
        for stage in self.stages:
            end += stage.steps
            if step < end:
                return stage
        return self.stages[-1]

    def stage_start(self, name: str) -> int:
        start = 0
        for stage in self.stages:
            if stage.name == name:
                return start
            start += stage.steps
        raise KeyError(name)


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training YAML file."""
    path = Path(path)
    data = read_yaml(path, "training config", ProtocolError)
    return parse_config(data, str(path))


def parse_config(data: Any, source: str) -> TrainConfig:
    top = Fields(data, source)
    name = top.get("name", str)
    seed = top.get("seed", int, 0)

    m = top.sub("model")
    try:
        arch = MeerArch(
            depth=m.get("depth", int, 18), width=m.get("width", float, 1.0),
            input_size=m.positive_int("input_size", 112),
            embedding_dim=m.positive_int("embedding_dim", 512),
            decoupling=m.get("decoupling", str, "none"), generator=m.get("generator", bool, False),
            generator_width=m.positive_int("generator_width", 16),
            mask_width=m.positive_int("mask_width", 32),
        )
    except ValueError as exc:
        raise m.error("", str(exc)) from None
    flip_fusion = m.choice("flip_fusion", ("none", "sum"), "none")
    export_dtype = m.choice("export_dtype", ("float16", "float32"), "float16")
    m.finish()

    d = top.sub("data")
    images = tuple(d.get("images", list, list(IMAGE_KINDS)))
    if not images or any(k not in IMAGE_KINDS for k in images):
        raise d.error("images", f"a non-empty list drawn from {', '.join(IMAGE_KINDS)}")
    mask = None
    if (mf := d.sub("mask", None)) is not None:
        from meerbench.data.render.occluders import SEEN_FAMILIES, resolve_families

        families = mf.get("families", (str, list), "seen")
        try:
            resolved = resolve_families(families)
        except ConfigError as exc:
            raise mf.error("families", str(exc)) from None
        if not set(resolved) <= set(SEEN_FAMILIES):
            raise mf.error("families", f"seen families only ({', '.join(SEEN_FAMILIES)}): the "
                                       "held-out families must stay unseen in training")
        mask = MaskCfg(mf.get("seed", int, 0), resolved,
                       mf.positive_int("validation_images", 10), mf.get("bank", int, 1024))
        if mask.bank < 0:
            raise mf.error("bank", "0 (render every occluder) or a number of occluders")
        mf.finish()
    lf = d.sub("loader", {})
    loader = LoaderCfg(lf.get("workers", int, 0), lf.positive_int("prefetch", 2),
                       lf.get("pin_memory", bool, True))
    if loader.workers < 0:
        raise lf.error("workers", "0 (load in the training process) or more worker processes")
    lf.finish()
    data_cfg = DataCfg(
        protocol=d.get("protocol", str), identities=d.positive_int("identities", None),
        holdout_identities=d.positive_int("holdout_identities"), images=images,
        flip=d.get("flip", bool, True), root=d.get("root", str, None), mask=mask, loader=loader,
    )
    if Path(data_cfg.protocol).stem.split("@")[0] in TEST_PROTOCOLS:  # name or name@version
        raise d.error("protocol", f"a training protocol, not the test protocol "
                                  f"{data_cfg.protocol!r} (never train or select on test data)")
    d.finish()

    g = top.sub("margin")
    margin = MarginCfg(g.choice("kind", MARGINS, "arcface"), g.get("s", float, 64.0),
                       g.get("m", float, 0.5), g.get("sample_rate", float, 1.0))
    if not 0 < margin.sample_rate <= 1:
        raise g.error("sample_rate", "a share of the classes in (0, 1]")
    g.finish()

    o = top.sub("optim")
    optim = OptimCfg(
        name=o.choice("name", OPTIMIZERS, "sgd"), lr=o.get("lr", float),
        momentum=o.get("momentum", float, 0.9), weight_decay=o.get("weight_decay", float, 5e-4),
        batch_pairs=o.positive_int("batch_pairs"), accumulate=o.positive_int("accumulate", 1),
        schedule=o.choice("schedule", SCHEDULES, "cosine"),
        warmup_steps=o.get("warmup_steps", int, 0),
        milestones=tuple(o.get("milestones", list, [])), gamma=o.get("gamma", float, 0.1),
        generator_lr_scale=o.get("generator_lr_scale", float, 1.0),
        clip_grad_norm=o.get("clip_grad_norm", float, None),
    )
    o.finish()

    stages = []
    for i, raw in enumerate(top.get("stages", list)):
        s = Fields(raw, source, f"stages[{i}]")
        losses_fields = s.sub("losses")
        losses = {}
        for term in list(losses_fields.data):
            if term not in LOSS_TERMS:
                raise losses_fields.error(term, f"a loss term, one of {', '.join(LOSS_TERMS)}")
            losses[term] = losses_fields.get(term, float)
        stages.append(Stage(s.get("name", str), s.positive_int("steps"), losses))
        s.finish()
    if not stages:
        raise top.error("stages", "at least one stage")

    lf = top.sub("losses", {})
    losses_cfg = LossCfg(lf.get("occluded_weight", float, 5.0), lf.positive_int("ssim_window", 7),
                         lf.get("perceptual_weights", str, None))
    lf.finish()

    r = top.sub("runtime", {})
    runtime = RuntimeCfg(
        device=r.choice("device", ("auto", "cpu", "cuda"), "auto"),
        precision=r.choice("precision", PRECISIONS, "auto"),
        channels_last=r.get("channels_last", bool, True), threads=r.positive_int("threads", None),
        log_every=r.positive_int("log_every", 20),
        checkpoint_every=r.positive_int("checkpoint_every", 200),
    )
    r.finish()

    v = top.sub("validation", {})
    validation = ValidationCfg(
        every=v.positive_int("every", 500), folds=v.positive_int("folds", 10),
        pairs_per_fold=v.positive_int("pairs_per_fold", 200),
        condition=v.choice("condition", CONDITIONS, "UMR-MP"), far=v.get("far", float, 0.01),
        select_from_stage=v.get("select_from_stage", str, stages[0].name),
        seed=v.get("seed", int, 0),
    )
    v.finish()
    top.finish()

    cfg = TrainConfig(
        name=name, seed=seed, arch=arch, flip_fusion=flip_fusion, export_dtype=export_dtype,
        data=data_cfg, margin=margin, optim=optim, stages=tuple(stages), losses=losses_cfg,
        runtime=runtime, validation=validation, source=source,
        sha256=_sha256(data),
        raw=dict(data),
    )
    _check(cfg, top)
    return cfg


def _sha256(data: dict[str, Any]) -> str:
    """sha256 of the canonical YAML, without ``data.loader`` (speed settings only)."""
    hashed = dict(data)
    if isinstance(hashed.get("data"), dict) and "loader" in hashed["data"]:
        hashed["data"] = {k: v for k, v in hashed["data"].items() if k != "loader"}
    return hashlib.sha256(yaml.safe_dump(hashed, sort_keys=True).encode()).hexdigest()


def _check(cfg: TrainConfig, top: Fields) -> None:
    """Cross-field rules: what the stages ask for must exist in the model."""
    if cfg.validation.select_from_stage not in {s.name for s in cfg.stages}:
        raise top.error("validation.select_from_stage", "the name of one of the stages")
    arch = cfg.arch
    for stage in cfg.stages:
        used = {t for t, w in stage.losses.items() if w > 0}
        if "margin" not in used:
            raise top.error(f"stages.{stage.name}.losses", "a positive 'margin' weight")
        if "decorrelation" in used and arch.decoupling != "meer":
            raise top.error(f"stages.{stage.name}.losses",
                            "'decorrelation' only with model.decoupling: meer")
        if "map" in used and not (arch.decoupling == "meer" or arch.generator):
            raise top.error(f"stages.{stage.name}.losses", "'map' only with an occluder-map head "
                                                           "(model.decoupling: meer, or "
                                                           "model.generator: true)")
        if "family" in used and arch.decoupling == "none":
            raise top.error(f"stages.{stage.name}.losses",
                            "'family' only with a family head (model.decoupling: meer or from)")
        if used & GENERATOR_TERMS and not arch.generator:
            raise top.error(f"stages.{stage.name}.losses",
                            "generator losses only with model.generator: true")
        if "perceptual" in used and not cfg.losses.perceptual_weights:
            raise top.error("losses.perceptual_weights",
                            "a local VGG-16 weights file when a stage weights 'perceptual'")
    if cfg.data.mask is not None and not set(cfg.data.mask.families) <= set(arch.families):
        raise top.error("data.mask.families", f"families the mask branch classifies: "
                                              f"{', '.join(arch.families)}")
    if arch.generator and "masked" not in cfg.data.images:
        raise top.error("data.images", "'masked' in the list when the model has a generator")
    if cfg.optim.schedule == "step" and not cfg.optim.milestones:
        raise top.error("optim.milestones", "a list of steps for the step schedule")
