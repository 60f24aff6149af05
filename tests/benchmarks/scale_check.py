"""Scale check of the streaming pipeline on distinct SynthFace faces packed as RecordIO.

    nice -n 10 python tests/benchmarks/scale_check.py --work /tmp/scale   # ~30 min, ~8 GB disk

1. Renders a SynthFace split of ``--images`` distinct unmasked 112-px faces (10 per identity,
   every identity and image distinct; ``synthface.generate_split`` on every core, PNG) and packs
   it with ``meerbench pack``'s ``pack_dataset`` twice: all of it, and its first tenth of the
   identities (the small set). The rendered split is deleted once packed.
2. Memory: the same short streaming training run on each set (a fresh process each, ``--runs``
   times after one uncounted run that builds the occluder bank): peak RSS of the main process
   (VmHWM) and peak of main + loader workers summed (sampled every 0.2 s).
3. Throughput: on the large set, the 112-px masked stream of ``configs/train/meer-r50-ms1mv3``
   against a decode-only loader over the same records (``test_bench_loader.cpu_throughput``:
   images per CPU second of one process, i.e. per worker core, alternating rounds, one run).

Prints one JSON line per measurement; docs/training.md has the numbers. Remove ``--work`` after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

PER_IDENTITY = 10
RECOGNITION = {"margin": 1.0, "map": 1.0, "family": 0.2, "decorrelation": 0.1}
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train" / "meer-r50-ms1mv3.yaml"


def build(work: Path, images: int) -> dict[str, Path]:
    """The large and the small RecordIO set (packed once; the rendered split is then removed)."""
    from dataclasses import replace

    from meerbench.data.formats.manifest import read_manifest
    from meerbench.data.formats.recordio import pack_dataset
    from meerbench.data.render.occluders import SEEN_FAMILIES
    from meerbench.data.synthface import SplitSpec, generate_split

    sets = {n: work / f"set{n}" for n in (images, images // 10)}
    if all((root / "property").is_file() for root in sets.values()):
        return sets
    spec = SplitSpec("scale", seed=2311, first_identity=0, n_identities=images // PER_IDENTITY,
                     n_unmasked=PER_IDENTITY, n_masked=0, families=SEEN_FAMILIES)
    t0 = time.perf_counter()
    split = generate_split(spec, progress=False)
    rendered = time.perf_counter() - t0
    dataset = read_manifest(split.dir / "manifest.csv", "scale")
    small = {f"id{i:06d}" for i in range(spec.n_identities // 10)}
    for n, root in sets.items():
        part = dataset if n == images else replace(
            dataset, samples=[s for s in dataset.samples if s.identity in small])
        t1 = time.perf_counter()
        pack_dataset(part, root, progress=False)
        print(json.dumps({"built": root.name, "images": len(part.samples),
                          "render_s": round(rendered, 1) if n == images else None,
                          "pack_s": round(time.perf_counter() - t1, 1),
                          "rec_mib": round((root / "train.rec").stat().st_size / 2**20)}),
              flush=True)
    shutil.rmtree(split.dir)
    return sets


def tree_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants, summed."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(
                    int(entry))
            except OSError:
                pass
    todo, total = [pid], 0
    while todo:
        p = todo.pop()
        try:
            total += next(int(line.split()[1]) for line in
                          Path(f"/proc/{p}/status").read_text().splitlines()
                          if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
        todo += children.get(p, [])
    return total


def run(root: Path, work: Path) -> dict[str, object]:
    """One streaming training run on ``root`` in this process; its peak memory."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "protocol.yaml").write_text(yaml.safe_dump({
        "schema": 1, "id": "scale", "version": 1, "description": "scale check",
        "dataset": {"format": "insightface-rec", "name": "scale"},
        "tasks": {"verification": {"seed": 3, "folds": 2, "pairs_per_fold": 16}}}))
    (work / "config.yaml").write_text(yaml.safe_dump({
        "name": "scale", "seed": 0,
        "model": {"depth": 18, "width": 0.125, "input_size": 32, "embedding_dim": 64,
                  "decoupling": "meer", "generator": False, "mask_width": 8},
        "data": {"protocol": str(work / "protocol.yaml"), "root": str(root),
                 "holdout_identities": 20,
                 "mask": {"seed": 0, "validation_images": 4, "bank": 256},
                 "loader": {"workers": 2, "prefetch": 2, "pin_memory": False}},
        "margin": {"kind": "arcface", "s": 16.0, "m": 0.3},
        "optim": {"name": "adamw", "lr": 0.003, "batch_pairs": 16, "warmup_steps": 2},
        "stages": [{"name": "warmup", "steps": 40, "losses": RECOGNITION}],
        "runtime": {"threads": 1, "precision": "fp32", "log_every": 10, "checkpoint_every": 40},
        "validation": {"every": 40, "folds": 2, "pairs_per_fold": 16}}))
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_kib(os.getpid()))
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    from meerbench.train import train

    train(work / "config.yaml", work / "out", progress=False)
    done.set()
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM:"))
    return {"set": root.name, "main_vmhwm_mib": round(hwm / 1024, 1),
            "tree_peak_rss_mib": round(peak[0] / 1024, 1)}


def throughput(root: Path, sample: int, rounds: int) -> dict[str, object]:
    """Masked stream vs decode only over ``sample`` records spread over the whole set."""
    from test_bench_loader import cpu_throughput

    from meerbench.train.config import load_config
    from meerbench.train.stream import RecordSource, occluder_bank

    source = RecordSource(root, root.name)
    cfg = load_config(CONFIG)
    assert cfg.data.mask is not None
    bank = occluder_bank(cfg.data.mask.seed, cfg.data.mask.families, 112, cfg.data.mask.bank,
                         progress=False)
    chosen = np.sort(np.random.default_rng(0).choice(len(source.labels), sample, replace=False))
    return {"set": root.name, **cpu_throughput(source, cfg, bank, chosen, rounds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--images", type=int, default=200_000,
                        help="distinct faces in the large set (the small set: a tenth)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sample", type=int, default=4096,
                        help="records of the large set read in each throughput round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a single run (child)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run(args.one, args.work)))
        return
    os.environ.setdefault("MEERBENCH_HOME", str(args.work / "home"))
    print(json.dumps({"load_average": os.getloadavg()}), flush=True)
    sets = build(args.work, args.images)
    for n in range(args.runs + 1):  # the first run builds the occluder bank: not counted
        for _, root in sorted(sets.items()):
            done = subprocess.run([sys.executable, __file__, "--work",
                                   str(args.work / f"run{n}-{root.name}"), "--one", str(root)],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"training run on {root} failed:\n{done.stderr[-3000:]}")
            if n:
                print(done.stdout.strip().splitlines()[-1], flush=True)
    print(json.dumps(throughput(sets[args.images], args.sample, args.rounds)), flush=True)
    print(json.dumps({"load_average": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
