"""Streaming loader throughput at 112 px: on-the-fly masking against decode only, per core.

Run with ``python -m pytest tests/benchmarks/test_bench_loader.py --benchmark-only``. Both
sides read the same insightface RecordIO set (JPEG, quality 95, SynthFace faces at 112x112)
through a ``torch.utils.data.DataLoader`` in the measuring process (``num_workers=0``, one torch
thread) with the same batch size, in alternating rounds. Throughput is images per second of
process CPU time (``time.process_time``): what one worker core delivers, and far less disturbed
by other processes on a shared machine than wall time (the benchmark's own wall-clock stats are
kept too). The masked side is the training stream of ``configs/train/meer-r50-ms1mv3.yaml``
(decode, occluder from the bank, flip draw, the masked image, its twin and its map as uint8);
the decode-only side decodes each record to a uint8 tensor. The ratio (masked / decode-only
images per CPU second) lands in ``extra_info``. ``cpu_throughput`` is also what
``scale_check.py`` runs on its 200,000-image set.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from meerbench.data.formats.recordio import write_record_set
from meerbench.data.render.face import render_face
from meerbench.train.config import TrainConfig, load_config
from meerbench.train.stream import OccluderBank, RecordSource, StreamSet, occluder_bank

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train" / "meer-r50-ms1mv3.yaml"
IDENTITIES, PER_IDENTITY, BATCH, ROUNDS = 32, 8, 32, 5


class DecodeOnly(TorchDataset):
    """Records decoded to uint8 (112, 112, 3) tensors: the loader without masking."""

    def __init__(self, source: RecordSource, indices: np.ndarray) -> None:
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(self.indices[i])
        return torch.from_numpy(self.source.image(index)), torch.tensor(
            int(self.source.labels[index]))


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _epoch(loader: DataLoader, cpu: list[float]) -> None:
    t = time.process_time()
    for _ in loader:
        pass
    cpu.append(time.process_time() - t)


def cpu_throughput(source: RecordSource, cfg: TrainConfig, bank: OccluderBank,
                   indices: np.ndarray, rounds: int, benchmark: Any = None) -> dict[str, float]:
    """Images per CPU second of the masked stream of ``cfg`` and of decoding only, over the
    records ``indices`` of ``source``, in alternating rounds (the best of each side); with
    pytest-benchmark's ``benchmark`` the masked rounds are its measured rounds."""
    masked = DataLoader(StreamSet(source, indices, cfg, bank), batch_size=BATCH, num_workers=0)
    plain = DataLoader(DecodeOnly(source, indices), batch_size=BATCH, num_workers=0)
    torch.set_num_threads(1)
    masked_cpu: list[float] = []
    plain_cpu: list[float] = []
    if benchmark is None:
        for _ in range(rounds + 1):  # the first round of each side warms up
            _epoch(plain, plain_cpu)
            _epoch(masked, masked_cpu)
        masked_cpu, plain_cpu = masked_cpu[1:], plain_cpu[1:]
    else:
        benchmark.pedantic(_epoch, args=(masked, masked_cpu), rounds=rounds, iterations=1,
                           warmup_rounds=1, setup=lambda: _epoch(plain, plain_cpu))
    n = len(indices)
    masked_rate, plain_rate = n / min(masked_cpu), n / min(plain_cpu)
    return {"images": n, "rounds": rounds, "masked_img_per_cpu_s": round(masked_rate, 1),
            "decode_img_per_cpu_s": round(plain_rate, 1),
            "ratio": round(masked_rate / plain_rate, 4)}


def test_masked_stream_throughput_vs_decode_only(benchmark, tmp_path):
    faces = [(i, _jpeg(render_face(2311, i, j, masked=False).image))
             for i in range(IDENTITIES) for j in range(PER_IDENTITY)]
    write_record_set(tmp_path / "set", faces, IDENTITIES, (112, 112))
    source = RecordSource(tmp_path / "set", "bench")
    cfg = load_config(CONFIG)
    mask = cfg.data.mask
    assert mask is not None and cfg.arch.input_size == 112
    bank = occluder_bank(mask.seed, mask.families, 112, mask.bank, progress=False)
    result = cpu_throughput(source, cfg, bank, np.arange(len(source.labels)), ROUNDS, benchmark)
    benchmark.extra_info.update(result, bank=mask.bank, size=112)
    print(f"\nmasked stream {result['masked_img_per_cpu_s']:.0f} img/s per core, decode only "
          f"{result['decode_img_per_cpu_s']:.0f} img/s per core, ratio {result['ratio']:.3f}")
    assert result["ratio"] >= 0.5
