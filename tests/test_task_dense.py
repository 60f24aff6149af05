"""Dense verification: the pair lists (every genuine pair, a seeded uniform impostor sample),
blocked scoring, and the task type end to end through a run, its Result, side file and report."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml

from meerbench.cli import main, summary_table
from meerbench.data.dataset import Dataset, Sample
from meerbench.engine.evaluate import evaluate
from meerbench.errors import ProtocolError
from meerbench.metrics.dense import pair_scores
from meerbench.metrics.verification import VerificationSettings, verification_report
from meerbench.protocol import load_protocol
from meerbench.protocol.sampling import CONDITIONS, DenseVerificationTask, build_dense_pairs
from meerbench.results import read_result

ALL = tuple(CONDITIONS)


def dataset(n_ids: int = 6, unmasked: int = 3, masked: int = 2, twins: bool = False) -> Dataset:
    """Identity i has ``unmasked`` then ``masked`` images; with ``twins`` each masked image's
    unmasked twin is a sample too (as synthmask-train's include_twins)."""
    samples = []
    for i, j in itertools.product(range(n_ids), range(unmasked + masked)):
        path = Path(f"/x/{i:03d}/{j:02d}.png")
        twin = Path(f"/x/t/{i:03d}/{j:02d}.png") if twins and j >= unmasked else None
        samples.append(Sample(key=f"{i:03d}/{j:02d}.png", path=path, identity=f"id{i:03d}",
                              masked=j >= unmasked, twin=twin))
        if twin is not None:
            samples.append(Sample(key=f"t/{i:03d}/{j:02d}.png", path=twin, identity=f"id{i:03d}"))
    return Dataset("fake", Path("/x"), samples[::-1])


def brute_force(ds: Dataset, cond: str) -> tuple[set, set]:
    """Every (ref, probe) pair of a condition by definition: genuine and impostor sets."""
    ref_m, probe_m = CONDITIONS[cond]
    s = ds.samples
    twin_of = {i: next(k for k, t in enumerate(s) if t.path == x.twin)
               for i, x in enumerate(s) if x.twin is not None}
    genuine, impostor = set(), set()
    for r, p in itertools.product(range(len(s)), repeat=2):
        if s[r].masked != ref_m or s[p].masked != probe_m or r == p:
            continue
        if ref_m == probe_m and r > p:
            continue
        if s[r].identity == s[p].identity:
            if twin_of.get(p) != r:
                genuine.add((r, p))
        else:
            impostor.add((r, p))
    return genuine, impostor


def pair_set(pairs, cond: str, label: int) -> set:
    sel = (pairs.condition == cond) & (pairs.label == label)
    return set(zip(pairs.ref[sel].tolist(), pairs.probe[sel].tolist(), strict=True))


@pytest.mark.parametrize("twins", [False, True])
def test_dense_pairs_are_every_genuine_and_every_impostor_pair(twins):
    ds = dataset(twins=twins)
    pairs = build_dense_pairs(DenseVerificationTask(1, ALL, None), ds)
    for cond in ALL:
        genuine, impostor = brute_force(ds, cond)
        assert pair_set(pairs, cond, 1) == genuine
        assert pair_set(pairs, cond, 0) == impostor
        assert int((pairs.condition == cond).sum()) == len(genuine) + len(impostor)
    assert (pairs.fold == 0).all()


def test_a_masked_image_never_meets_its_own_twin():
    ds = dataset(twins=True)
    pairs = build_dense_pairs(DenseVerificationTask(1, ("UMR-MP",), None), ds)
    keys = [s.key for s in ds.samples]
    met = {(keys[r], keys[p]) for r, p in zip(pairs.ref, pairs.probe, strict=True)}
    assert not {(f"t/{k}", k) for k in keys if not k.startswith("t/")} & met
    assert ("000/00.png", "000/03.png") in met  # another unmasked image of the same person


def test_impostor_sample_is_seeded_exact_in_size_and_a_subset():
    ds = dataset(n_ids=8)
    task = DenseVerificationTask(3, ALL, 50)
    one, again = build_dense_pairs(task, ds), build_dense_pairs(task, dataset(n_ids=8))
    assert build_dense_pairs(task, ds) is one  # drawn once per dataset
    other = build_dense_pairs(DenseVerificationTask(4, ALL, 50), ds)
    assert one.sha256 == again.sha256 and np.array_equal(one.ref, again.ref)
    assert other.sha256 != one.sha256
    for cond in ALL:
        genuine, impostor = brute_force(ds, cond)
        drawn = pair_set(one, cond, 0)
        assert len(drawn) == 50 and drawn <= impostor
        assert pair_set(one, cond, 1) == genuine  # genuine pairs are never sampled


def test_impostor_sample_is_uniform():
    """Over 400 seeds, each of the 24 impostor pairs of a condition is drawn half the time."""
    ds = dataset(n_ids=4, unmasked=1, masked=2)  # UMR-MP: 4 x 8 - 8; MR-MP: C(8, 2) - 4
    hits = {cond: {} for cond in ("UMR-MP", "MR-MP")}
    for seed in range(400):
        pairs = build_dense_pairs(DenseVerificationTask(seed, ("UMR-MP", "MR-MP"), 12), ds)
        for cond, counts in hits.items():
            for pair in pair_set(pairs, cond, 0):
                counts[pair] = counts.get(pair, 0) + 1
    for counts in hits.values():
        # each pair: Binomial(400, 1/2), mean 200, sd 10; 4 sd either side
        assert len(counts) == 24 and all(160 < v < 240 for v in counts.values()), counts


def test_too_few_impostors_is_a_clear_error():
    with pytest.raises(ProtocolError, match="only 12 impostor pairs exist, 13 asked for"):
        build_dense_pairs(DenseVerificationTask(1, ("UMR-MP",), 13),
                          dataset(n_ids=4, unmasked=1, masked=1))


def test_blocked_scores_equal_pairwise_dot_products():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((300, 16)).astype(np.float32)
    ref, probe = rng.integers(0, 300, 5000), rng.integers(0, 300, 5000)
    expected = np.einsum("ij,ij->i", emb[ref].astype(np.float64), emb[probe].astype(np.float64))
    for block in (1, 7, 1024):
        np.testing.assert_allclose(pair_scores(emb, ref, probe, block), expected, atol=1e-5)


@pytest.fixture()
def dense_protocol(tiny_protocol: Path) -> Path:
    data = yaml.safe_load(tiny_protocol.read_text())
    data["tasks"] = {"verification": data["tasks"]["verification"],
                     "verification_dense": {"seed": 7, "impostors": 2000}}
    data["metrics"]["verification_dense"] = {"far_targets": [0.01, 0.001, 0.0001],
                                             "bootstrap": 20}
    tiny_protocol.write_text(yaml.safe_dump(data, sort_keys=False))
    return tiny_protocol


def test_dense_task_end_to_end(dense_protocol, tmp_path, capsys):
    proto = load_protocol(dense_protocol)
    assert proto.tasks["verification_dense"] == DenseVerificationTask(7, ALL, 2000)
    out = tmp_path / "results"
    result = evaluate("pixels", proto, out_dir=out, progress=False).to_dict()
    dense = result["metrics"]["verification_dense"]
    # 20 identities x 4 unmasked + 4 masked: genuine 20 x C(4, 2), 20 x 16, 20 x C(4, 2)
    assert result["counts"]["dense_pairs"] == {"UMR-UMP": 2120, "UMR-MP": 2320, "MR-MP": 2120}
    assert result["counts"]["pairs"] == {c: 80 for c in ALL}  # the folded task is untouched
    for cond, n_genuine in (("UMR-UMP", 120), ("UMR-MP", 320), ("MR-MP", 120)):
        entry = dense[cond]
        assert (entry["n_genuine"], entry["n_impostor"]) == (n_genuine, 2000)
        assert entry["accuracy"] is None
        tars = {t["target"]: t for t in entry["tar_at_far"]}
        assert tars[0.001]["reliable"] and "coarse" in tars[0.001]["warning"]  # 2 false accepts
        assert not tars[0.0001]["reliable"]  # 0.2 false accepts
    assert set(result["metrics"]["verification_dense_by_family"]) == {"UMR-MP", "MR-MP"}
    assert result["protocol"]["lists"]["verification_dense"] != \
        result["protocol"]["lists"]["verification"]

    # the side file holds every pair and reproduces the numbers without the model
    assert result["files"]["dense_scores"] == "pixels__tiny.dense-scores.npz"
    side = np.load(out / result["files"]["dense_scores"])
    assert list(side["conditions"]) == list(ALL)
    assert side["score"].dtype == np.float32  # float32 embeddings: float32 holds them exactly
    settings = VerificationSettings.from_dict(proto.metrics["verification_dense"])
    groups = np.unique([k.split("/")[1] for k in side["keys"]], return_inverse=True)[1]
    for c_index, cond in enumerate(ALL):
        sel = side["condition"] == c_index
        again = verification_report(side["score"][sel], side["label"][sel], None, settings,
                                    groups=groups[side["probe"][sel]])
        assert {**again, "status": "ok"} == dense[cond]
    assert read_result(out / "pixels__tiny.json")["metrics"]["verification_dense"] == dense
    console = summary_table(result)
    assert "verification_dense  every genuine pair, 2,000 impostor pairs per condition\n" \
        "condition     AUC   EER %   TAR@0.01  TAR@0.001 TAR@0.0001\n" in console
    capsys.readouterr()


def test_dense_task_reaches_the_report_tables(dense_protocol, tmp_path, capsys):
    """Its own tables, beside (not mixed into) the 10-fold task's of the same condition."""
    out = tmp_path / "results"
    result = evaluate("pixels", load_protocol(dense_protocol), out_dir=out,
                      progress=False).to_dict()
    assert main(["report", str(out), "--no-plots", "--out", str(tmp_path / "report")]) == 0
    tables = (tmp_path / "report" / "tables.md").read_text()
    for task, title in (("verification", "Verification"),
                        ("verification_dense", "Dense verification")):
        eer = [100 * result["metrics"][task][c]["eer"]["value"] for c in ALL]
        row = tables.split(f"### {title}: EER (%)")[1].split("| pixels |")[1].split("\n")[0]
        assert [float(cell.split()[0].strip("*")) for cell in row.split("|")[:3]] == [
            round(e, 2) for e in eer]
    assert "### Dense verification: TAR@FAR=1e-4 (%)" in tables
    assert "### Dense verification: Accuracy" not in tables
    capsys.readouterr()


def test_dense_section_is_validated(tiny_protocol):
    data = yaml.safe_load(tiny_protocol.read_text())
    data["tasks"]["verification_dense"] = {"seed": 1, "impostors": 0}
    tiny_protocol.write_text(yaml.safe_dump(data))
    with pytest.raises(ProtocolError, match="impostors"):
        load_protocol(tiny_protocol)


@pytest.mark.slow
def test_synthmask_v2_dense_lists_have_the_documented_sizes():
    """The v2 layout (1,000 identities x 5 unmasked + 5 masked) under the v2 dense task: the
    genuine and impostor counts docs/protocols.md states."""
    task = load_protocol("synthmask").tasks["verification_dense"]
    pairs = build_dense_pairs(task, dataset(n_ids=1000, unmasked=5, masked=5))
    for cond, n_genuine in (("UMR-UMP", 10_000), ("UMR-MP", 25_000), ("MR-MP", 10_000)):
        sel = pairs.condition == cond
        assert (int(pairs.label[sel].sum()), int((~pairs.label[sel].astype(bool)).sum())) == (
            n_genuine, 5_000_000)


def test_a_bad_dense_score_file_is_named_with_what_is_wrong(tmp_path):
    from meerbench.errors import DatasetError
    from meerbench.tasks.verification_dense import read_dense_scores

    good = {"keys": np.array(["a", "b", "c"]), "identities": np.array(["x", "x", "y"]),
            "conditions": np.array(["UMR-UMP"]), "ref": np.array([0, 0], np.int32),
            "probe": np.array([1, 2], np.int32), "label": np.array([1, 0], np.uint8),
            "condition": np.array([0, 0], np.uint8), "score": np.array([0.5, 0.1], np.float32)}
    path = tmp_path / "m__p.dense-scores.npz"
    np.savez_compressed(path, **good)
    read = read_dense_scores(path)
    assert read.probe_identity.tolist() == [0, 1] and read.label.tolist() == [True, False]
    for change, message in (
            ({"identities": None}, "lacks array\\(s\\) identities"),
            ({"probe": np.array([1, 3], np.int32)}, "'probe' holds values outside \\[0, 3\\)"),
            ({"label": np.array([1], np.uint8)}, "label do not match"),
            ({"condition": np.array([0, 1], np.uint8)}, "'condition' holds values outside")):
        arrays = {k: v for k, v in {**good, **change}.items() if v is not None}
        np.savez_compressed(path, **arrays)
        with pytest.raises(DatasetError, match=f"{path.name}.*{message}"):
            read_dense_scores(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a dense score file"):
        read_dense_scores(path)


def test_dense_pairs_are_drawn_once_and_read_back_from_the_store(monkeypatch):
    """A second dataset object with the same samples reads the stored list (equal arrays, dtypes
    and sha256); another identity label draws again."""
    from meerbench.protocol import sampling

    task = DenseVerificationTask(3, ALL, 50)
    first = build_dense_pairs(task, dataset(twins=True))
    drawn = []
    original = sampling._dense_pairs
    monkeypatch.setattr(sampling, "_dense_pairs",
                        lambda *a: drawn.append(1) or original(*a))
    again = build_dense_pairs(task, dataset(twins=True))
    assert drawn == [] and again.sha256 == first.sha256
    for name in ("ref", "probe", "label", "fold", "condition"):
        a, b = getattr(first, name), getattr(again, name)
        assert a.dtype == b.dtype and np.array_equal(a, b)

    other = dataset(twins=True)
    other.samples[0] = dataclasses.replace(other.samples[0], identity="someone-else")
    redrawn = build_dense_pairs(task, other)
    assert drawn == [1] and redrawn.sha256 != first.sha256
    build_dense_pairs(DenseVerificationTask(4, ALL, 50), dataset(twins=True))  # another seed
    assert drawn == [1, 1]
