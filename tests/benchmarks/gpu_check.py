"""The GPU checks of the model zoo and of MEER, as one short script for a lent GPU machine.

    PYTHONPATH=. python3 tests/benchmarks/gpu_check.py --out "$OUT"          # on the GPU (~5 min)
    python tests/benchmarks/gpu_check.py --device cpu --smoke --out /tmp/gc   # the same code, tiny

Measures (numbers go to ``gpu_check.json`` in ``--out`` and to stdout):
1. IResNet-50 and -100 forward images/s with AMP (bf16 autocast, channels_last) at batch 256,
   plain loop and through the engine (uint8 images in memory, preprocessing included).
2. The engine's AMP embeddings against the CPU fp32 path on 512 SynthFace images: cosine per
   image (min, mean), for random IResNet-50/-100 and the shipped ``arcface-s`` checkpoint.
3. 200 optimizer steps of ``meer-r50`` at 256 images per step with AMP, split over its three
   stages (so the generator and the refinement run too): images/s per stage and peak memory.
   Training data: a 200-identity slice of synthmask-train (throughput does not depend on size).
4. The same number of steps of ``meer-r50-ms1mv3`` streamed from an insightface RecordIO set
   (SynthFace faces as JPEG, occluders drawn on the fly by 8 loader workers): images/s with AMP
   and the share of step time spent waiting for data (``data_share`` of the training log).
Needs only torch, numpy, pillow, pyyaml, safetensors and tqdm: no install of meerbench itself.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from engine_ratio import plain_loop, random_iresnet

from meerbench.data.render import occluders
from meerbench.data.render.face import render_face
from meerbench.engine.embed import ArrayImages, embed
from meerbench.models import load_model
from meerbench.models.base import TorchFaceModel
from meerbench.train.loop import train

ROOT = Path(__file__).resolve().parents[2]


def forward_throughput(model: TorchFaceModel, device: torch.device, batch: int,
                       iters: int) -> dict[str, float]:
    """Plain AMP forward loop vs the engine on the same number of uint8 images."""
    model.net.to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 112, 112, device=device).contiguous(
        memory_format=torch.channels_last)
    plain_loop(model, [x, x])  # warm-up
    t = time.perf_counter()
    plain_loop(model, [x] * iters)
    plain = batch * iters / (time.perf_counter() - t)
    images = torch.randint(0, 256, (batch * iters, 112, 112, 3), dtype=torch.uint8)
    embed(model, ArrayImages(images[:batch]), batch_size=batch, device=device, progress=False)
    out = embed(model, ArrayImages(images), batch_size=batch, device=device, progress=False)
    return {"plain_img_s": plain, "engine_img_s": len(images) / out.seconds,
            "engine_over_plain": len(images) / out.seconds / plain}


def synthface_images(n: int) -> torch.Tensor:
    """n SynthFace test-split faces, half masked (seen families), as uint8 (n, 112, 112, 3)."""
    faces = [render_face(2311, 1_000_000 + i // 4, i % 4, masked=i % 2 == 1,
                         families=occluders.SEEN_FAMILIES).image for i in range(n)]
    return torch.from_numpy(np.stack(faces))


def agreement(model: TorchFaceModel, images: torch.Tensor, device: torch.device,
              batch: int) -> dict[str, float]:
    """Cosine between the CPU fp32 embeddings and the device's AMP embeddings, per image."""
    ref = embed(model, ArrayImages(images), batch_size=64, device="cpu", precision="fp32",
                progress=False).embeddings
    amp = embed(model, ArrayImages(images), batch_size=batch, device=device, precision="auto",
                progress=False)
    model.to(torch.device("cpu"))
    cos = np.sum(ref * amp.embeddings, axis=1)
    return {"precision": amp.precision, "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean()), "images": len(images)}


def meer_r50_steps(device: torch.device, steps: int, batch_pairs: int, work: Path,
                   identities: int) -> dict[str, object]:
    """``steps`` optimizer steps of the meer-r50 configuration over its three stages."""
    proto = yaml.safe_load((ROOT / "protocols" / "synthmask-train.yaml").read_text())
    proto["id"] = "synthmask-train-gpucheck"
    proto["dataset"]["options"]["n_identities"] = identities
    (work / "train.yaml").write_text(yaml.safe_dump(proto))
    cfg = yaml.safe_load((ROOT / "configs" / "train" / "meer-r50.yaml").read_text())
    cfg["data"].update(protocol=str(work / "train.yaml"), holdout_identities=identities // 4)
    cfg["optim"].update(batch_pairs=batch_pairs, warmup_steps=steps // 10)
    split = [steps - 2 * (steps // 3), steps // 3, steps // 3]
    for stage, n in zip(cfg["stages"], split, strict=True):
        stage["steps"] = n
    cfg["validation"].update(every=10 * steps,  # no validation inside the measured steps
                             folds=min(10, identities // 8), pairs_per_fold=identities // 4)
    cfg["runtime"].update(device=device.type, log_every=max(1, steps // 20),
                          checkpoint_every=10 * steps)
    (work / "meer-r50.yaml").write_text(yaml.safe_dump(cfg))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = train(work / "meer-r50.yaml", work / "run", progress=False)
    wall = time.perf_counter() - t
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    rows = [r for r in log if r.get("kind") == "train"]
    per_stage: dict[str, list[float]] = {}
    prev_step, prev_s = 0, 0.0
    for r in rows:  # images/s between consecutive log lines, averaged per stage (first excluded)
        if prev_step:
            per_stage.setdefault(r["stage"], []).append(
                (r["step"] - prev_step) * 2 * batch_pairs / (r["train_seconds"] - prev_s))
        prev_step, prev_s = r["step"], r["train_seconds"]
    return {
        "steps": rows[-1]["step"], "images_per_step": 2 * batch_pairs, "stages": split,
        "img_s_by_stage": {k: float(np.mean(v)) for k, v in per_stage.items()},
        "img_s_overall": rows[-1]["step"] * 2 * batch_pairs / rows[-1]["train_seconds"],
        "wall_s_including_data": wall,
        "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30
                            if device.type == "cuda" else None),
        "last_losses": {k: v for k, v in rows[-1].items() if isinstance(v, float)},
    }


def meer_r50_stream_steps(device: torch.device, steps: int, batch_pairs: int, work: Path,
                          identities: int, workers: int) -> dict[str, object]:
    """``steps`` steps of meer-r50-ms1mv3 streamed from a RecordIO set of SynthFace faces."""
    import io

    from PIL import Image

    from meerbench.data.formats.recordio import write_record_set

    def jpeg(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=95)
        return buffer.getvalue()

    faces = [(i, jpeg(render_face(2311, i, j, masked=False).image))
             for i in range(identities) for j in range(8)]
    write_record_set(work / "rec", faces, identities, (112, 112))
    (work / "rec.yaml").write_text(yaml.safe_dump({
        "schema": 1, "id": "gpucheck-rec", "version": 1, "description": "gpu check RecordIO",
        "dataset": {"format": "insightface-rec", "name": "gpucheck-rec"},
        "tasks": {"verification": {"seed": 3, "folds": 2, "pairs_per_fold": 16}}}))
    cfg = yaml.safe_load((ROOT / "configs" / "train" / "meer-r50-ms1mv3.yaml").read_text())
    cfg["data"].update(protocol=str(work / "rec.yaml"), root=str(work / "rec"),
                       holdout_identities=identities // 4)
    cfg["data"]["loader"]["workers"] = workers
    cfg["data"]["mask"]["validation_images"] = 8
    cfg["optim"].update(batch_pairs=batch_pairs, warmup_steps=steps // 10)
    split = [steps - 2 * (steps // 3), steps // 3, steps // 3]
    for stage, n in zip(cfg["stages"], split, strict=True):
        stage["steps"] = n
    cfg["validation"].update(every=10 * steps, folds=2, pairs_per_fold=identities // 4)
    cfg["runtime"].update(device=device.type, log_every=max(1, steps // 20),
                          checkpoint_every=10 * steps)
    (work / "stream.yaml").write_text(yaml.safe_dump(cfg))
    out = train(work / "stream.yaml", work / "stream-run", progress=False)
    rows = [r for r in (json.loads(line) for line in
                        (out / "train_log.jsonl").read_text().splitlines())
            if r.get("kind") == "train"]
    later = rows[1:] or rows  # the first window holds the workers' start-up
    return {"steps": rows[-1]["step"], "images_per_step": 2 * batch_pairs, "workers": workers,
            "img_s_overall": rows[-1]["step"] * 2 * batch_pairs / rows[-1]["train_seconds"],
            "data_share_mean": float(np.mean([r["data_share"] for r in later])),
            "data_wait_s_mean": float(np.mean([r["data_wait_s"] for r in later]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: test the script")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch, iters, n_images, steps, pairs, ids = ((4, 1, 8, 3, 2, 16) if args.smoke
                                                 else (256, 10, 512, 200, 128, 200))  # ids: >= 16
    report: dict[str, object] = {
        "torch": torch.__version__, "device": (torch.cuda.get_device_name()
                                               if device.type == "cuda" else "cpu"),
        "batch": batch}
    args.out.mkdir(parents=True, exist_ok=True)

    def save(key: str, value: object) -> None:
        report[key] = value
        print(key, json.dumps(value, indent=1), flush=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))

    images = synthface_images(n_images)
    for depth in (50, 100):
        model = random_iresnet(depth)
        save(f"iresnet{depth}_throughput", forward_throughput(model, device, batch, iters))
        save(f"iresnet{depth}_agreement", agreement(model, images, device, batch))
    save("arcface-s_agreement", agreement(load_model("arcface-s"), images, device, batch))
    with tempfile.TemporaryDirectory() as tmp:
        save("meer_r50_training", meer_r50_steps(device, steps, pairs, Path(tmp), ids))
        save("meer_r50_stream_recordio", meer_r50_stream_steps(
            device, steps, pairs, Path(tmp), ids, 1 if args.smoke else 8))


if __name__ == "__main__":
    main()
