"""Deterministic lists of a protocol's tasks: verification pairs (balanced folds, or dense: every
genuine pair and all or a seeded uniform sample of impostor pairs) and identification galleries.

Generated from a seed and the sorted sample list, so the same protocol on the same data gives the
same lists on every machine; each list's sha256 lands in every Result. Training's model selection
builds its validation pairs here too (without a protocol file).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meerbench.data.dataset import Dataset
from meerbench.errors import ProtocolError
from meerbench.io import atomic_open
from meerbench.store import Artefact

#: (reference masked?, probe masked?) for each masked-benchmark condition.
CONDITIONS: dict[str, tuple[bool, bool]] = {
    "UMR-UMP": (False, False),
    "UMR-MP": (False, True),
    "MR-MP": (True, True),
}


@dataclass(frozen=True)
class VerificationTask:
    """``pairs``: ``generated`` (seeded, below) or ``official`` (the dataset's own list).

    ``allow_fewer`` lets a generated fold use every genuine pair there is when the data has fewer
    than ``pairs_per_fold / 2`` (real datasets of unknown size); impostors match the genuine count.
    """

    seed: int
    folds: int
    pairs_per_fold: int
    conditions: tuple[str, ...]
    pairs: str = "generated"
    allow_fewer: bool = False


@dataclass(frozen=True)
class DenseVerificationTask:
    """Every genuine pair of each condition and ``impostors`` impostor pairs per condition, a
    seeded uniform sample without replacement (None: all of them)."""

    seed: int
    conditions: tuple[str, ...]
    impostors: int | None


@dataclass(frozen=True)
class IdentificationTask:
    """Enrol ``gallery_identities`` identities (or ``gallery_fraction`` of the enrollable ones)."""

    seed: int
    gallery_identities: int | None
    gallery_fraction: float | None
    gallery_per_identity: int
    gallery_masked: bool
    probes_masked: bool


@dataclass(frozen=True)
class PairList:
    """Verification pairs as indices into ``Dataset.samples``, one block per condition."""

    ref: np.ndarray
    probe: np.ndarray
    label: np.ndarray
    fold: np.ndarray
    condition: np.ndarray
    sha256: str


@dataclass(frozen=True)
class Gallery:
    """Identification split: gallery and probe sample indices."""

    gallery: np.ndarray
    probes: np.ndarray
    sha256: str


def _list_hash(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def build_pairs(task: VerificationTask, dataset: Dataset) -> PairList:
    """The verification pairs of ``task``: the dataset's official list or a generated one."""
    build = _official_pairs if task.pairs == "official" else _generated_pairs
    return dataset.derived(("pairs", task), lambda: build(task, dataset))


def _twin_links(dataset: Dataset) -> set[tuple[int, int]]:
    """(unmasked, masked) index pairs of a masked image and its own unmasked twin: never a pair."""
    by_path = {s.path: i for i, s in enumerate(dataset.samples)}
    return {(by_path[s.twin], i) for i, s in enumerate(dataset.samples)
            if s.twin is not None and s.twin in by_path}


def build_dense_pairs(task: DenseVerificationTask, dataset: Dataset) -> PairList:
    """Dense pairs per condition, as index arrays (no per-pair Python objects): every genuine pair
    (a masked image never meets its own unmasked twin) and all impostor pairs or a seeded uniform
    sample of ``task.impostors`` of them. Pairs of a condition whose reference and probe are both
    masked or both unmasked are unordered (ref index < probe index). Fold is 0 throughout; the
    list's sha256 covers the sample keys and the index arrays.

    Drawn once per dataset object and kept in the artefact store (kind ``pairs``), keyed on the
    task, everything the draw reads of the dataset (keys, identities, masked flags, twin links)
    and this module's source: drawing SynthMask v2's 15 M pairs takes seconds, reading them back
    a fraction of that, so every run after the first, of any model, reads them."""
    return dataset.derived(("dense-pairs", task), lambda: _stored_dense_pairs(task, dataset))


PAIRS_FILE = "pairs.npz"


def _stored_dense_pairs(task: DenseVerificationTask, dataset: Dataset) -> PairList:
    artefact = Artefact("pairs", {
        "task": {"seed": task.seed, "conditions": list(task.conditions),
                 "impostors": task.impostors},
        "dataset": _sampling_inputs(dataset), "code_sha256": _code_digest()},
        label=f"{dataset.name}-dense")

    def fill(folder: Path) -> dict[str, str]:
        pairs = _dense_pairs(task, dataset)
        with atomic_open(folder / PAIRS_FILE, "wb") as fh:
            np.savez(fh, ref=pairs.ref.astype(np.int32), probe=pairs.probe.astype(np.int32),
                     label=pairs.label.astype(np.uint8),
                     condition=condition_codes(pairs.condition, task.conditions))
        return {"sha256": pairs.sha256}

    folder = artefact.ensure(fill)  # every file checked against its record
    with np.load(folder / PAIRS_FILE, allow_pickle=False) as npz:
        ref, probe, label, codes = (npz[k] for k in ("ref", "probe", "label", "condition"))
    return PairList(ref=ref.astype(np.int64), probe=probe.astype(np.int64),
                    label=label.astype(np.int64), fold=np.zeros(len(ref), np.int64),
                    condition=np.asarray(task.conditions, dtype=object)[codes],
                    sha256=artefact.info["sha256"])


def condition_codes(names: np.ndarray, conditions: tuple[str, ...]) -> np.ndarray:
    """Index in ``conditions`` of each pair's condition name, as uint8 (what files store)."""
    codes = np.zeros(len(names), np.uint8)
    for i, cond in enumerate(conditions):
        codes[names == cond] = i
    return codes


def _sampling_inputs(dataset: Dataset) -> str:
    """sha256 of what a draw reads of ``dataset``: sample keys, identities, masked flags and
    twin links (not the image bytes: the lists do not depend on them)."""
    digest = hashlib.sha256()
    for s in dataset.samples:
        digest.update(f"{s.key}\0{s.identity}\0{int(s.masked)}\n".encode())
    digest.update(repr(sorted(_twin_links(dataset))).encode())
    return digest.hexdigest()


@functools.cache
def _code_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _dense_pairs(task: DenseVerificationTask, dataset: Dataset) -> PairList:
    n = len(dataset.samples)
    masked = np.array([s.masked for s in dataset.samples], dtype=bool)
    identity = np.unique([s.identity for s in dataset.samples], return_inverse=True)[1]
    links = np.array(sorted(u * n + m for u, m in _twin_links(dataset)), dtype=np.int64)
    blocks = []
    for c_index, cond in enumerate(task.conditions):
        ref_masked, probe_masked = CONDITIONS[cond]
        refs, probes = np.flatnonzero(masked == ref_masked), np.flatnonzero(masked == probe_masked)
        if not refs.size or not probes.size:
            state = ref_masked if not refs.size else probe_masked
            raise ProtocolError(f"Dataset {dataset.name}, condition {cond}: no "
                                f"{'masked' if state else 'unmasked'} images.")
        same = ref_masked == probe_masked
        genuine = _genuine_grid(refs, probes, identity, same)
        genuine = genuine[~np.isin(genuine[:, 0] * n + genuine[:, 1], links)]
        impostor = _impostor_grid(refs, probes, identity, same, task.impostors,
                                  np.random.default_rng([task.seed, 1 + c_index]))
        if not genuine.size or not impostor.size:
            raise ProtocolError(f"Dataset {dataset.name}, condition {cond}: {len(genuine)} "
                                f"genuine and {len(impostor)} impostor pairs; dense verification "
                                "needs both.")
        if task.impostors is not None and len(impostor) < task.impostors:
            raise ProtocolError(
                f"Dataset {dataset.name}, condition {cond}: only {len(impostor):,} impostor pairs "
                f"exist, {task.impostors:,} asked for; lower impostors or leave it out (all).")
        rows = np.concatenate([genuine, impostor])
        label = np.r_[np.ones(len(genuine), np.int64), np.zeros(len(impostor), np.int64)]
        blocks.append((rows, label, np.full(len(rows), c_index, np.int64)))
    rows, label, cond_index = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
    digest = hashlib.sha256()
    digest.update("\n".join([*task.conditions, "", *(s.key for s in dataset.samples)]).encode())
    for column in (cond_index, rows[:, 0], rows[:, 1], label):
        digest.update(column.astype("<i8").tobytes())
    return PairList(ref=rows[:, 0], probe=rows[:, 1], label=label,
                    fold=np.zeros(len(rows), np.int64),
                    condition=np.asarray(task.conditions, dtype=object)[cond_index],
                    sha256=digest.hexdigest())


def _genuine_grid(refs: np.ndarray, probes: np.ndarray, identity: np.ndarray,
                  same: bool) -> np.ndarray:
    """(ref, probe) of every pair of one identity: ordered refs x probes, or unordered pairs of
    distinct images when refs and probes are the same set."""
    out = [np.zeros((0, 2), np.int64)]
    by_id = probes[np.argsort(identity[probes], kind="stable")]
    if same:
        for group in np.split(by_id, np.flatnonzero(np.diff(identity[by_id])) + 1):
            i, j = np.triu_indices(len(group), 1)
            out.append(np.column_stack([np.minimum(group[i], group[j]),
                                        np.maximum(group[i], group[j])]))
    else:
        starts = np.searchsorted(identity[by_id], identity[refs], side="left")
        stops = np.searchsorted(identity[by_id], identity[refs], side="right")
        for r, a, b in zip(refs.tolist(), starts.tolist(), stops.tolist(), strict=True):
            out.append(np.column_stack([np.full(b - a, r), by_id[a:b]]))
    return np.concatenate(out).astype(np.int64)


def _impostor_grid(refs: np.ndarray, probes: np.ndarray, identity: np.ndarray, same: bool,
                   count: int | None, rng: np.random.Generator) -> np.ndarray:
    """Impostor (ref, probe) pairs of the refs x probes grid (upper triangle when ``same``): all
    of them, or a seeded uniform sample of ``count`` without replacement (``rng.choice`` over the
    grid's impostor cells: a partial shuffle, ``count`` swaps); sorted by ref, then probe."""
    valid = identity[refs][:, None] != identity[probes][None, :]
    if same:
        valid &= refs[:, None] < probes[None, :]
    cells = np.flatnonzero(valid)  # grid order: by ref, then probe
    if count is not None and count < cells.size:
        chosen = np.zeros(cells.size, bool)
        chosen[rng.choice(cells.size, count, replace=False)] = True
        cells = cells[chosen]  # still in grid order: no sort
    row, column = np.divmod(cells, len(probes))
    return np.column_stack([refs[row], probes[column]])


def _official_pairs(task: VerificationTask, dataset: Dataset) -> PairList:
    """Official pairs, per condition.

    With synthetic masking (masked twins of every image exist) each official pair appears in
    every condition, its images swapped for their masked twins as the condition says. Otherwise
    each pair belongs to the condition its own images' masked flags give (a masked reference with
    an unmasked probe is swapped into UMR-MP) and only the protocol's conditions are kept.
    """
    if not dataset.pairs:
        raise ProtocolError(
            f"Dataset {dataset.name} has no official pair list; use pairs: generated.")
    masked_of = {u: m for u, m in _twin_links(dataset)}
    masked = [s.masked for s in dataset.samples]
    by_state = {state: name for name, state in CONDITIONS.items()}
    rows: list[tuple[int, int, int, int, int]] = []
    for pair in dataset.pairs:
        r, p = dataset.index(pair.ref), dataset.index(pair.probe)
        if masked_of:
            for c_index, cond in enumerate(task.conditions):
                ref_m, probe_m = CONDITIONS[cond]
                rr = masked_of[r] if ref_m else r
                pp = masked_of[p] if probe_m else p
                rows.append((rr, pp, pair.label, pair.fold, c_index))
            continue
        if masked[r] and not masked[p]:
            r, p = p, r
        cond = by_state[(masked[r], masked[p])]
        if cond in task.conditions:
            rows.append((r, p, pair.label, pair.fold, task.conditions.index(cond)))
    if not rows:
        raise ProtocolError(
            f"No official pair of {dataset.name} falls in conditions {', '.join(task.conditions)}."
        )
    rows.sort(key=lambda row: row[4])
    return _pair_list(np.asarray(rows, dtype=np.int64), task, dataset)


def _generated_pairs(task: VerificationTask, dataset: Dataset) -> PairList:
    """Balanced genuine/impostor pairs per condition in folds with identities disjoint across folds.

    Deterministic from ``task.seed`` and the sorted sample list: identities are shuffled once and
    cut into folds; each (condition, fold) draws from its own seeded generator.
    """
    identities = sorted({s.identity for s in dataset.samples})
    if len(identities) < 2 * task.folds:
        raise ProtocolError(
            f"Dataset {dataset.name} has {len(identities)} identities; {task.folds} folds need at "
            f"least {2 * task.folds}."
        )
    order = np.random.default_rng([task.seed, 0]).permutation(len(identities))
    fold_ids = [[identities[j] for j in chunk] for chunk in np.array_split(order, task.folds)]
    by_id_state: dict[tuple[str, bool], list[int]] = {}
    for idx, s in enumerate(dataset.samples):
        by_id_state.setdefault((s.identity, s.masked), []).append(idx)

    links = _twin_links(dataset)
    blocks: list[np.ndarray] = []
    for c_index, cond in enumerate(task.conditions):
        ref_masked, probe_masked = CONDITIONS[cond]
        for fold, ids in enumerate(fold_ids):
            rng = np.random.default_rng([task.seed, 1 + c_index, fold])
            genuine = [g for g in _genuine_candidates(ids, by_id_state, ref_masked, probe_masked)
                       if g not in links and g[::-1] not in links]
            half = task.pairs_per_fold // 2
            if task.allow_fewer:
                half = min(half, len(genuine))
                if half == 0:
                    continue  # this fold has no genuine pair for this condition
            if len(genuine) < half:
                raise ProtocolError(
                    f"Dataset {dataset.name}, condition {cond}, fold {fold}: only "
                    f"{len(genuine)} genuine pairs possible, {half} needed; lower "
                    "tasks.verification.pairs_per_fold (or set allow_fewer: true)."
                )
            pick = np.sort(rng.choice(len(genuine), size=half, replace=False))
            gen = np.asarray(genuine, dtype=np.int64)[pick]
            imp = _impostor_pairs(ids, by_id_state, ref_masked, probe_masked, half, rng)
            if len(imp) < half:
                if task.allow_fewer and not len(imp):
                    continue  # one identity with such images: no impostor, so no balanced fold
                if not task.allow_fewer:
                    raise ProtocolError(
                        f"Dataset {dataset.name}, condition {cond}, fold {fold}: only {len(imp)} "
                        f"distinct impostor pairs possible, {half} needed.")
                gen = gen[np.sort(rng.choice(half, size=len(imp), replace=False))]
                half = len(imp)  # allow_fewer keeps the classes balanced
            rows = np.concatenate([gen, imp])
            meta = np.column_stack([
                np.r_[np.ones(half, np.int64), np.zeros(half, np.int64)],
                np.full(2 * half, fold), np.full(2 * half, c_index),
            ])
            blocks.append(np.column_stack([rows, meta]))
    if not blocks:
        raise ProtocolError(f"Dataset {dataset.name}: no genuine pair in any condition or fold.")
    return _pair_list(np.concatenate(blocks), task, dataset)


def _pair_list(table: np.ndarray, task: VerificationTask, dataset: Dataset) -> PairList:
    """Columns ref, probe, label, fold, condition index -> PairList with its sha256."""
    keys = [s.key for s in dataset.samples]
    lines = [
        f"{task.conditions[c]}\t{f}\t{keys[r]}\t{keys[p]}\t{lab}"
        for r, p, lab, f, c in table.tolist()
    ]
    return PairList(
        ref=table[:, 0], probe=table[:, 1], label=table[:, 2], fold=table[:, 3],
        condition=np.asarray(task.conditions, dtype=object)[table[:, 4]], sha256=_list_hash(lines),
    )


def _genuine_candidates(
    ids: list[str], table: dict[tuple[str, bool], list[int]], ref_masked: bool, probe_masked: bool
) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for ident in ids:
        refs = table.get((ident, ref_masked), [])
        probes = table.get((ident, probe_masked), [])
        if ref_masked == probe_masked:
            out.extend((a, b) for i, a in enumerate(refs) for b in refs[i + 1:])
        else:
            out.extend((a, b) for a in refs for b in probes)
    return out


def _impostor_pairs(
    ids: list[str], table: dict[tuple[str, bool], list[int]], ref_masked: bool, probe_masked: bool,
    count: int, rng: np.random.Generator,
) -> np.ndarray:
    """Up to ``count`` distinct impostor pairs (fewer when the fold cannot give more)."""
    refs = [i for i in ids if table.get((i, ref_masked))]
    probes = [i for i in ids if table.get((i, probe_masked))]
    if not refs or not probes or len(set(refs) | set(probes)) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    chosen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    for _ in range(count * 50):
        if len(out) == count:
            break
        a, b = refs[rng.integers(len(refs))], probes[rng.integers(len(probes))]
        if a == b:
            continue
        ra = table[(a, ref_masked)]
        pb = table[(b, probe_masked)]
        pair = (ra[rng.integers(len(ra))], pb[rng.integers(len(pb))])
        canon = tuple(sorted(pair)) if ref_masked == probe_masked else pair
        if canon not in chosen:
            chosen.add(canon)
            out.append(pair)
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def build_gallery(task: IdentificationTask, dataset: Dataset) -> Gallery:
    """Enrol identities with ``gallery_per_identity`` images each; every other identity's probes
    are non-mated (open set). Deterministic from ``task.seed`` and the sorted sample list."""
    by_identity: dict[str, list[int]] = {}
    for i, s in enumerate(dataset.samples):
        if s.masked == task.gallery_masked:
            by_identity.setdefault(s.identity, []).append(i)
    # an enrolled identity keeps at least one probe, so it can be found
    probe_ids = {s.identity for s in dataset.samples if s.masked == task.probes_masked}
    enrollable = sorted(
        ident for ident, idx in by_identity.items()
        if len(idx) >= task.gallery_per_identity + (task.gallery_masked == task.probes_masked)
        and ident in probe_ids
    )
    wanted = (task.gallery_identities if task.gallery_identities is not None
              else int(task.gallery_fraction * len(enrollable)))
    if not 0 < wanted <= len(enrollable):
        raise ProtocolError(
            f"Dataset {dataset.name}: the gallery asks for {wanted} identities; {len(enrollable)} "
            f"have {task.gallery_per_identity} enrollable image(s) and a probe."
        )
    if wanted >= len(probe_ids):
        raise ProtocolError(
            f"Dataset {dataset.name}: enrolling {wanted} of {len(probe_ids)} probe identities "
            "leaves no non-mated probes for open-set identification."
        )
    rng = np.random.default_rng([task.seed, 0])
    enrolled = sorted(enrollable[j] for j in rng.permutation(len(enrollable))[:wanted])
    gallery: list[int] = []
    for ident in enrolled:
        gallery.extend(sorted(rng.choice(by_identity[ident], task.gallery_per_identity,
                                         replace=False).tolist()))
    in_gallery = set(gallery)
    probes = [i for i, s in enumerate(dataset.samples)
              if s.masked == task.probes_masked and i not in in_gallery]
    keys = [s.key for s in dataset.samples]
    lines = [f"G\t{keys[i]}" for i in gallery] + [f"P\t{keys[i]}" for i in probes]
    return Gallery(np.asarray(gallery, np.int64), np.asarray(probes, np.int64), _list_hash(lines))
