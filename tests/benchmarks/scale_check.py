"""Scale check of the streaming pipeline: peak memory of one run on 20,000 vs 200,000 records.

    nice -n 19 python tests/benchmarks/scale_check.py --work /tmp/scale        # ~10 min, 1 GB disk

Builds two insightface RecordIO sets from 2,000 SynthFace 112-px renders (200 identities x 10,
JPEG quality 95): the 20,000-record set holds them 10 times and the 200,000-record set 100 times,
each copy under its own identities. Then runs the same short streaming training on each (in a
fresh process each, ``--runs`` times) and prints the peak RSS of the main process (VmHWM) and
the peak of main + loader workers summed (sampled every 0.2 s). docs/training.md has the numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

IDS, PER = 200, 10
RECOGNITION = {"margin": 1.0, "map": 1.0, "family": 0.2, "decorrelation": 0.1}


def build(work: Path) -> None:
    from PIL import Image

    from meerbench.data.formats.recordio import write_record_set
    from meerbench.data.render.face import render_face

    def jpeg(i: int, j: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(render_face(2311, i, j, masked=False).image).save(buffer, "JPEG",
                                                                          quality=95)
        return buffer.getvalue()

    sets = {copies: work / f"set{copies * IDS * PER // 1000}k" for copies in (10, 100)}
    if all((out / "property").is_file() for out in sets.values()):
        return
    faces = [jpeg(i, j) for i in range(IDS) for j in range(PER)]
    for copies, out in sets.items():
        write_record_set(out, ((c * IDS + n // PER, data) for c in range(copies)
                               for n, data in enumerate(faces)), copies * IDS, (112, 112))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a single run (child)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run(args.one, args.work)))
        return
    os.environ.setdefault("MEERBENCH_HOME", str(args.work / "home"))
    build(args.work)
    for n in range(args.runs + 1):  # the first run builds the occluder bank: not counted
        for name in ("set20k", "set200k"):
            done = subprocess.run([sys.executable, __file__, "--work",
                                   str(args.work / f"run{n}-{name}"), "--one",
                                   str(args.work / name)], capture_output=True, text=True,
                                  check=True)
            if n:
                print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
