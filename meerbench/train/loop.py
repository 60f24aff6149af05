"""The training loop: stages, mixed precision, accumulation, DDP, checkpoints, logs, export.

One process on CPU or GPU, or one process per GPU (or CPU, gloo) under ``torchrun``: the
objective is wrapped in ``DistributedDataParallel`` and each optimizer step's global batch of
``optim.batch_pairs`` pairs is cut into ``world x accumulate`` equal micro-batches. Checkpoints
hold everything a step depends on (weights, optimizer, grad scaler, RNG states, the
best weights so far, the step); the learning rate and the data order are pure functions of
(config, step). So on CPU,
training 2N steps equals training N steps, stopping and resuming N more, bit for bit.

Files in the output folder: ``state/last.pt`` (training state; not for shipping),
``train_log.jsonl`` (one JSON record per log or validation event), and on completion
``model.safetensors`` (the selected weights), ``model.sha256``, ``card.yaml`` and ``config.yaml``.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from meerbench.engine.distributed import init_from_env
from meerbench.engine.embed import auto_precision
from meerbench.errors import ModelError, TrainingError
from meerbench.io import atomic_open, sha256_file, write_text
from meerbench.models.card_schema import SCHEMA as CARD_SCHEMA
from meerbench.models.meer import MeerNet, contract
from meerbench.models.weights import safe_torch_load
from meerbench.settings import resolve_device
from meerbench.train import losses as L
from meerbench.train.config import TrainConfig, load_config
from meerbench.train.data import Batch, load_train_data, make_batch, step_flips, step_indices
from meerbench.train.objective import Objective
from meerbench.train.stream import Stream, load_stream_data
from meerbench.train.validate import Validator

STATE_VERSION = 2  # 2: tensors and plain data only (weights_only=True)
RESTART = ("Delete it or pass --no-resume to start over (states written by earlier meerbench "
           "versions hold numpy objects and cannot be resumed).")


def train(config_path: str | Path, out_dir: str | Path | None = None, *, resume: bool = True,
          progress: bool = True, stop_after: int | None = None) -> Path:
    """Train the model ``config_path`` describes into ``out_dir`` (default ``runs/<name>``).

    With ``resume`` an existing ``state/last.pt`` written under the same configuration is
    continued. ``stop_after`` ends the run (with a checkpoint) after that optimizer step; the
    schedule still spans the configured steps, so a later call resumes it exactly.
    """
    cfg = load_config(config_path)
    out = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    device = resolve_device(cfg.runtime.device, f"{cfg.source}: runtime.device")
    rank, world = init_from_env(device.type)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    trainer = Trainer(cfg, Path(config_path), out, device, rank, world, progress)
    trainer.run(resume=resume, stop_after=stop_after)
    return out


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "cosine":
        span = max(1, cfg.steps - o.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * (step - o.warmup_steps) / span))
    if o.schedule == "step":
        return o.gamma ** sum(step >= m for m in o.milestones)
    return 1.0


class Trainer:
    """Holds the model, optimizers and bookkeeping of one run."""

    def __init__(self, cfg: TrainConfig, config_path: Path, out: Path, device: torch.device,
                 rank: int, world: int, progress: bool) -> None:
        self.cfg, self.config_path, self.out = cfg, config_path, out
        self.device, self.rank, self.world = device, rank, world
        self.progress = progress and rank == 0
        precision = cfg.runtime.precision
        self.precision = auto_precision(device) if precision == "auto" else precision
        o = cfg.optim
        if o.batch_pairs % (world * o.accumulate):
            raise ModelError(f"{cfg.source}: optim.batch_pairs={o.batch_pairs} is not divisible "
                             f"by world size x accumulate = {world * o.accumulate}")
        _seed_everything(cfg.seed)
        self.stream: Stream | None = None
        if cfg.data.streaming:
            self.data, self.stream = load_stream_data(cfg, device, rank, world, self.progress)
            self.train_count = len(self.stream.dataset)
        else:
            self.data = load_train_data(cfg, self.progress)
            self.train_count = len(self.data.pairs.masked)
        self.feed: Iterator[Batch] | None = None
        self.objective = Objective(cfg, MeerNet(cfg.arch), self.data.classes).to(device)
        adversarial = any(s.losses.get("adversarial", 0) > 0 for s in cfg.stages)
        self.disc = L.PatchDiscriminator().to(device) if adversarial else None
        self.perceptual = (L.Perceptual(cfg.losses.perceptual_weights).to(device)
                           if any(s.losses.get("perceptual", 0) > 0 for s in cfg.stages) else None)
        if cfg.runtime.channels_last:
            for module in (self.objective, self.disc):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        self.model: nn.Module = self.objective
        self.disc_model: nn.Module | None = self.disc
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.objective, device_ids=ids,
                                                 find_unused_parameters=True)
            if self.disc is not None:
                self.disc_model = DistributedDataParallel(self.disc, device_ids=ids)
        self.optimizer = self._optimizer(self._param_groups())
        self.optimizer_d = (self._optimizer([{"params": list(self.disc.parameters()),
                                              "lr": o.lr * o.generator_lr_scale}])
                            if self.disc is not None else None)
        self.optimizers = [opt for opt in (self.optimizer, self.optimizer_d) if opt is not None]
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.validator = Validator(cfg, self.data) if rank == 0 else None
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.train_seconds = 0.0
        self.window = [0.0, 0.0, 0]  # data-wait s, step s, steps since the last train record
        self.log: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ set-up helpers

    def _param_groups(self) -> list[dict[str, Any]]:
        gen = {id(p) for p in self.objective.generator_parameters()}
        trainable = [p for p in self.objective.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in gen], "lr": self.cfg.optim.lr}]
        if gen:
            groups.append({"params": [p for p in trainable if id(p) in gen],
                           "lr": self.cfg.optim.lr * self.cfg.optim.generator_lr_scale})
        return groups

    def _optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        o = self.cfg.optim
        if o.name == "sgd":
            return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum,
                                   weight_decay=o.weight_decay)
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)

    @property
    def state_path(self) -> Path:
        return self.out / "state" / "last.pt"

    @property
    def log_path(self) -> Path:
        return self.out / "train_log.jsonl"

    # ------------------------------------------------------------------ main loop

    def run(self, *, resume: bool, stop_after: int | None) -> None:
        cfg = self.cfg
        if resume and self.state_path.is_file():
            self.load_state()
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, unit="step",
                   desc=f"train {cfg.name}")
        if self.stream is not None:
            self.feed = self.stream.batches(self.step)
        rt, v = cfg.runtime, cfg.validation
        while self.step < cfg.steps:
            stage = cfg.stage_at(self.step)
            t0 = time.perf_counter()
            terms, wait = self.train_step(stage.losses)
            self.step += 1
            elapsed = time.perf_counter() - t0
            self.train_seconds += elapsed
            self.window[0] += wait
            self.window[1] += elapsed
            self.window[2] += 1
            bar.update(1)
            last = self.step == cfg.steps
            stopping = stop_after is not None and self.step >= stop_after
            if last or stopping or any(self.step % n == 0 for n in (
                    rt.log_every, v.every, rt.checkpoint_every)):
                # only before a write: a NaN stays in the weights, and a check every step
                # would stall a GPU on a sync
                self._check_finite(stage.name, terms)
            if self.step % rt.log_every == 0 or last:
                record = self._train_record(stage.name, terms, elapsed)
                bar.set_postfix(stage=stage.name, loss=f"{record['loss']:.3f}")
            if self.step % v.every == 0 or last:
                self.validate(stage.name)
            if self.step % rt.checkpoint_every == 0 or last or stopping:
                self.save_state()
            if stopping:
                break
        bar.close()
        if self.step == cfg.steps and self.rank == 0:
            self.export()
        if self.world > 1:
            dist.barrier()

    def micro_batch(self, a: int, micro: int) -> Batch:
        """This rank's micro-batch ``a`` of the current step, on the device."""
        if self.feed is not None:
            return next(self.feed)
        cfg, o = self.cfg, self.cfg.optim
        rows = step_indices(len(self.data.pairs.masked), o.batch_pairs, self.step, cfg.seed)
        flips = step_flips(o.batch_pairs, self.step, cfg.seed, cfg.data.flip)
        chunk = slice((self.rank * o.accumulate + a) * micro,
                      (self.rank * o.accumulate + a + 1) * micro)
        return make_batch(self.data, rows[chunk], flips[chunk]).to(
            self.device, cfg.runtime.channels_last)

    def train_step(self, weights: dict[str, float]) -> tuple[dict[str, torch.Tensor], float]:
        """One optimizer step over the global batch; returns the mean loss terms (all ranks)
        and the seconds spent waiting for data."""
        cfg, o = self.cfg, self.cfg.optim
        wait = 0.0
        micro = o.batch_pairs // (self.world * o.accumulate)
        factor = lr_factor(cfg, self.step)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor
        adversarial = weights.get("adversarial", 0) > 0 and self.disc is not None
        sums: dict[str, torch.Tensor] = {}
        for a in range(o.accumulate):
            t0 = time.perf_counter()
            batch = self.micro_batch(a, micro)
            wait += time.perf_counter() - t0
            sync = a == o.accumulate - 1
            with _no_sync(self.model, sync), self._autocast():
                total, terms, composite = self.model(batch, weights, self.disc, self.perceptual)
            self.scaler.scale(total / o.accumulate).backward()
            terms["loss"] = total.detach()
            if adversarial:
                with _no_sync(self.disc_model, sync), self._autocast():
                    out = self.disc_model(torch.cat([batch.unmasked, composite]))
                    d_loss = L.hinge_d(out[:micro], out[micro:])
                self.scaler.scale(d_loss / o.accumulate).backward()
                terms["discriminator"] = d_loss.detach()
            for k, val in terms.items():
                sums[k] = sums.get(k, 0) + val.float() / o.accumulate
        if o.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.objective.parameters(), o.clip_grad_norm)
        self.scaler.step(self.optimizer)
        if adversarial:
            self.scaler.step(self.optimizer_d)
        self.scaler.update()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        return {k: v for k, v in sums.items()}, wait

    def _check_finite(self, stage: str, terms: dict[str, torch.Tensor]) -> None:
        """Stop before a NaN or inf loss reaches the log, a validation or a checkpoint."""
        if bool(torch.isfinite(terms["loss"]).item()):
            return
        bad = ", ".join(f"{k}={float(v):g}" for k, v in sorted(terms.items())
                        if not math.isfinite(float(v)))
        raise TrainingError(
            f"{self.cfg.source}: the loss is not finite at step {self.step} (stage '{stage}'): "
            f"{bad}. Nothing was written after the previous log step; the last checkpoint is "
            f"{self.state_path}. Lower optim.lr or the weight of the term named, then resume.")

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return (torch.autocast(self.device.type, dtype=dtype) if dtype
                else contextlib.nullcontext())

    # ------------------------------------------------------------------ logging, validation

    def _train_record(self, stage: str, terms: dict[str, torch.Tensor],
                      elapsed: float) -> dict[str, Any]:
        wait, busy, steps = self.window[0], max(self.window[1], 1e-9), max(self.window[2], 1)
        names = sorted(terms)
        values = torch.stack([terms[k].detach().float().reshape(()) for k in names]).cpu()
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        record = {"kind": "train", "step": self.step, "stage": stage,
                  "lr": self.optimizer.param_groups[0]["lr"],
                  "train_seconds": round(self.train_seconds, 2),
                  **{k: float(v) for k, v in zip(names, values.tolist(), strict=True)},
                  "images_per_s": self.cfg.optim.batch_pairs * len(self.cfg.data.images)
                  / max(elapsed, 1e-9),
                  # mean seconds per step spent waiting for batches since the last record, and
                  # their share of the step time: a starved GPU shows a share near 1
                  "data_wait_s": wait / steps, "data_share": wait / busy}
        self.window = [0.0, 0.0, 0]
        self._append_log(record)
        return record

    def validate(self, stage: str) -> None:
        if self.rank == 0:
            start_time = time.perf_counter()
            metrics = self.validator(self.objective.net, self.device, self.precision)
            record = {"kind": "validation", "step": self.step, "stage": stage,
                      "seconds": round(time.perf_counter() - start_time, 2), **metrics}
            self._append_log(record)
            key = self.validator.selection_key
            start = self.cfg.stage_start(self.cfg.validation.select_from_stage)
            eligible = self.step > start
            if eligible and (self.best is None or metrics[key] > self.best["score"]):
                plain = {k: float(v) for k, v in metrics.items()}  # no numpy scalars in states
                self.best = {"step": self.step, "score": plain[key], "metrics": plain,
                             "weights": {k: v.detach().cpu().clone()
                                         for k, v in self.objective.net.state_dict().items()}}
        if self.world > 1:
            dist.barrier()

    def _append_log(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.log.append(record)
        with atomic_open(self.log_path) as handle:
            for line in self.log:
                handle.write(json.dumps(line, allow_nan=False) + "\n")

    # ------------------------------------------------------------------ checkpoints

    def save_state(self) -> None:
        """Write ``state/last.pt`` from tensors and plain Python data only, so that
        ``load_state`` can read it with ``torch.load(weights_only=True)``."""
        if self.rank == 0:
            state = {
                "version": STATE_VERSION, "config_sha256": self.cfg.sha256, "step": self.step,
                "objective": self.objective.state_dict(),
                "disc": self.disc.state_dict() if self.disc is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "optimizer_d": (self.optimizer_d.state_dict()
                                if self.optimizer_d is not None else None),
                "scaler": self.scaler.state_dict(),
                "rng": _rng_state(), "best": self.best, "train_seconds": self.train_seconds,
            }
            with atomic_open(self.state_path, "wb") as handle:
                torch.save(state, handle)
        if self.world > 1:
            dist.barrier()

    def load_state(self) -> None:
        """Continue from ``state/last.pt``. It is read with ``weights_only=True``: a file holding
        any Python object beyond tensors and plain data is refused, never unpickled."""
        path = self.state_path
        state = safe_torch_load(path, self.device, RESTART)
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ModelError(f"{path} is not a training state of this meerbench version. "
                             f"{RESTART}")
        if state.get("config_sha256") != self.cfg.sha256:
            raise ModelError(
                f"{path} was written under a different configuration; "
                f"train into a new folder or pass resume=False (--no-resume) to start over."
            )
        self.step = state["step"]
        self.objective.load_state_dict(state["objective"])
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.best = state["best"]
        self.train_seconds = state["train_seconds"]
        if self.rank == 0 and self.log_path.is_file():
            lines = [json.loads(x) for x in self.log_path.read_text().splitlines() if x.strip()]
            self.log = [r for r in lines if r["step"] <= self.step]

    # ------------------------------------------------------------------ export

    def export(self) -> None:
        """Write the selected weights, their sha256, the card and the config to ``out``."""
        from safetensors.torch import load_file, save

        cfg = self.cfg
        chosen = self.best or {"step": self.step, "weights": self.objective.net.state_dict(),
                               "metrics": {}, "score": None}
        dtype = torch.float16 if cfg.export_dtype == "float16" else torch.float32
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
                   for k, v in chosen["weights"].items()}
        weights = self.out / "model.safetensors"
        with atomic_open(weights, "wb") as handle:
            handle.write(save(tensors))  # no metadata: its key order is not stable across saves
        digest = sha256_file(weights)
        write_text(self.out / "model.sha256", f"{digest}  model.safetensors\n")
        write_text(self.out / "config.yaml", self.config_path.read_text())
        shipped = MeerNet(cfg.arch).to(self.device)
        shipped.load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in load_file(str(weights)).items()})
        if cfg.runtime.channels_last:
            shipped.to(memory_format=torch.channels_last)
        metrics = self.validator(shipped, self.device, self.precision)
        terms = contract(cfg.arch, cfg.flip_fusion).to_dict()
        card = {  # a schema-2 model card (models.card_schema)
            "schema": CARD_SCHEMA,
            "name": cfg.name,
            "description": _description(cfg),
            "architecture": "meer",
            "options": cfg.arch.to_dict(),
            "contract": json.loads(json.dumps({k: v for k, v in terms.items() if k != "weights"})),
            "weights": {"path": "model.safetensors", "sha256": digest, "dtype": cfg.export_dtype,
                        "bytes": weights.stat().st_size,
                        "parameters": sum(v.numel() for v in tensors.values()),
                        "licence": ""},
            "training": {
                "config": "config.yaml", "config_sha256": cfg.sha256, "log": "train_log.jsonl",
                "protocol": cfg.data.protocol, "train_identities": self.data.classes,
                "train_pairs": self.train_count,
                "holdout_identities": len(self.data.holdout), "steps": cfg.steps,
                "stages": [{"name": s.name, "steps": s.steps, "losses": s.losses}
                           for s in cfg.stages],
                "images_per_step": cfg.optim.batch_pairs * len(cfg.data.images),
                "selected_step": chosen["step"], "train_seconds": round(self.train_seconds, 1),
                "device": str(self.device), "processes": self.world,
                "precision": self.precision, "torch": str(torch.__version__),
                "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
            },
            "validation": {
                "selection": f"{self.validator.selection_key} on held-out identities of "
                             f"{cfg.data.protocol}, from stage "
                             f"{cfg.validation.select_from_stage}",
                "training_weights": chosen["metrics"],
                "shipped_weights": metrics,
            },
        }
        write_text(self.out / "card.yaml", yaml.safe_dump(card, sort_keys=False))


def _description(cfg: TrainConfig) -> str:
    """The card's one-line description; a MEER ablation names the components it lacks."""
    arch = cfg.arch
    if arch.decoupling == "from":
        return "FROM-style predicted feature mask (no generator), same pipeline and budget"
    components = {
        "mask decoupling": arch.decoupling == "meer",
        "restoration": arch.generator,
        "id-preserving refinement": any(s.losses.get("id_preserving", 0) > 0
                                        for s in cfg.stages),
    }
    if not any(components.values()):
        return "IResNet trained with a margin loss (same pipeline and budget as MEER)"
    if all(components.values()):
        return ("MEER reimplementation from its abstract: mask decoupling, restoration, "
                "id-preserving refinement")
    missing = " and ".join(k for k, present in components.items() if not present)
    return f"MEER ablation without {missing} (docs/meer.md), same pipeline and budget as MEER"


def _no_sync(model: nn.Module | None, sync: bool) -> contextlib.AbstractContextManager:
    if sync or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain ints (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
