"""Streaming metric states give the one-shot numbers across batches and across processes (gloo)."""

import json
import os
import socket

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from meerbench.metrics.identification import (
    IdentificationSettings,
    IdentificationState,
    identification_report,
)
from meerbench.metrics.verification import (
    VerificationSettings,
    VerificationState,
    verification_report,
)

V_SETTINGS = VerificationSettings(bootstrap=200, far_targets=(0.1, 0.01))
I_SETTINGS = IdentificationSettings(bootstrap=100)


def data():
    rng = np.random.default_rng(7)
    labels = np.r_[np.ones(300), np.zeros(300)].astype(int)
    scores = rng.normal(labels * 1.5, 1.0)
    folds = np.arange(600) % 10
    groups = np.arange(600) // 6
    gallery = rng.normal(size=(40, 16))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    gallery_ids = np.arange(40).astype(str)
    probe_ids = rng.integers(0, 50, 90).astype(str)  # ids 40..49 are non-mated
    probes = rng.normal(size=(90, 16)) + np.vstack(
        [gallery[int(i)] * 2 if int(i) < 40 else np.zeros(16) for i in probe_ids])
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return scores, labels, folds, groups, probes, probe_ids, gallery, gallery_ids


def one_shot():
    s, y, f, g, p, pid, gal, gid = data()
    return (verification_report(s, y, f, V_SETTINGS, groups=g),
            identification_report(p, pid, gal, gid, I_SETTINGS))


def test_batches_equal_one_shot():
    s, y, f, g, p, pid, gal, gid = data()
    ver, ident = VerificationState(), IdentificationState()
    for lo in range(0, 600, 128):
        ver.update(s[lo:lo + 128], y[lo:lo + 128], f[lo:lo + 128], g[lo:lo + 128])
    for lo in range(0, 90, 17):
        ident.update(p[lo:lo + 17], pid[lo:lo + 17])
    assert (ver.compute(V_SETTINGS), ident.compute(gal, gid, I_SETTINGS)) == one_shot()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    s, y, f, g, p, pid, gal, gid = data()
    ver, ident = VerificationState(), IdentificationState()
    vs, ps = np.array_split(np.arange(600), world)[rank], np.array_split(np.arange(90), world)[rank]
    for half in np.array_split(vs, 2):  # several updates per rank, contiguous shards
        ver.update(s[half], y[half], f[half], g[half])
    ident.update(p[ps], pid[ps])
    result = (ver.compute(V_SETTINGS), ident.compute(gal, gid, I_SETTINGS))
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(result, handle)
    dist.destroy_process_group()


def test_two_processes_equal_one_shot(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "result.json"
    mp.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    expected = json.loads(json.dumps(one_shot()))
    assert json.loads(out.read_text()) == expected
