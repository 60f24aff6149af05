import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from meerbench.data.dataset import Dataset, Sample
from meerbench.errors import ProtocolError
from meerbench.protocol import (
    CONDITIONS,
    VerificationTask,
    build_gallery,
    build_pairs,
    load_protocol,
    parse_protocol,
)
from meerbench.registry import PROTOCOLS
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def fake_dataset(n_ids=40, unmasked=5, masked=5) -> Dataset:
    samples = [
        Sample(key=f"{i:03d}/{j:02d}.png", path=Path(f"/x/{i:03d}/{j:02d}.png"),
               identity=f"id{i:03d}", masked=j >= unmasked)
        for i in range(n_ids) for j in range(unmasked + masked)
    ]
    return Dataset("fake", Path("/x"), samples[::-1])


def test_builtin_synthmask_protocols_are_registered_and_valid():
    for name in ("synthmask", "synthmask-unseen", "synthmask-train"):
        assert name in PROTOCOLS.names()
        proto = load_protocol(name)
        assert proto.id == name and proto.version >= 1 and len(proto.sha256) == 64
    sm = load_protocol("synthmask")
    verification, identification = sm.tasks["verification"], sm.tasks["identification"]
    assert verification.pairs_per_fold * verification.folds == 6000
    assert identification.gallery_identities == 800
    assert sm.dataset.options["n_identities"] == 1000


@pytest.mark.parametrize("name", ["synthmask", "synthmask-unseen"])
def test_version_1_is_kept_exactly_and_a_bare_name_is_version_2(name):
    """The kept v1 file is the definition the shipped Results were measured on (same sha256)."""
    shipped = json.loads((ROOT / "reports" / "results" / f"meer-s__{name}.json").read_text())
    v1 = load_protocol(f"{name}@1")
    assert (v1.id, v1.version, v1.sha256) == (name, 1, shipped["protocol"]["sha256"])
    v2 = load_protocol(name)
    assert (v2.id, v2.version) == (name, 2) and load_protocol(f"{name}@2") == v2
    assert set(v2.tasks) >= {"verification", "verification_dense", "identification"}


def test_v2_is_dense_enough_and_disjoint_from_training():
    for name in ("synthmask", "synthmask-unseen"):
        proto = load_protocol(name)
        test, train = proto.dataset.options, load_protocol("synthmask-train").dataset.options
        test_ids = range(test["first_identity"], test["first_identity"] + test["n_identities"])
        train_ids = range(train["first_identity"], train["first_identity"] + train["n_identities"])
        assert not set(test_ids) & set(train_ids) and test["seed"] == train["seed"]
        dense = proto.tasks["verification_dense"]
        far = min(proto.metrics["verification_dense"]["far_targets"])
        assert far == 1e-5 and far * dense.impostors >= 10  # >= 10 false accepts at 1e-5
        assert dense.impostors >= 5_000_000 and dense.conditions == tuple(CONDITIONS)
        unmasked, masked = test["n_unmasked"] * 1000, test["n_masked"] * 1000
        assert dense.impostors < min(unmasked * (unmasked - 1) // 2, unmasked * masked) * 0.999


def test_unknown_versions_are_errors_naming_what_exists(tmp_path):
    with pytest.raises(ProtocolError, match="synthmask has no version 3: synthmask is version 2; "
                                            "kept: synthmask@1"):
        load_protocol("synthmask@3")
    with pytest.raises(ProtocolError, match="synthmask-train has no version 2"):
        load_protocol("synthmask-train@2")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))  # version 1, registered as if it were version 4
    PROTOCOLS.add("tiny@4", path)
    try:
        with pytest.raises(ProtocolError, match="registered as tiny@4 but holds tiny version 1"):
            load_protocol("tiny@4")
    finally:
        PROTOCOLS.remove("tiny@4")


def test_misspelt_field_names_file_field_and_suggestion(tmp_path):
    bad = {**TINY, "tasks": {"verification": {"seed": 1, "fold": 2, "pairs_per_fold": 40}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ProtocolError) as err:
        load_protocol(str(path))
    msg = str(err.value)
    assert str(path) in msg and "tasks.verification.fold" in msg and "'folds'" in msg


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"version": "one"}, "version"),
        ({"version": 0}, "version"),
        ({"dataset": {"name": "x"}}, "dataset.format"),
        ({"tasks": {}}, "tasks"),
        ({"tasks": {"verification": {"seed": 1, "pairs_per_fold": 41}}}, "pairs_per_fold"),
        ({"tasks": {"verification": {"seed": 1, "pairs_per_fold": 4, "conditions": ["X"]}}},
         "conditions"),
        ({"metrics": {"verification": {"far_targetz": [0.1]}}}, "metrics.verification"),
    ],
)
def test_invalid_fields_are_named(patch, field):
    with pytest.raises(ProtocolError, match=field.replace(".", r"\.")):
        parse_protocol({**TINY, **patch}, "mem.yaml")


def test_user_protocol_by_path(tiny_protocol):
    assert load_protocol(str(tiny_protocol)).id == "tiny"


def test_pairs_are_deterministic_balanced_and_fold_disjoint():
    ds = fake_dataset()
    task = VerificationTask(seed=3, folds=10, pairs_per_fold=20, conditions=tuple(CONDITIONS))
    a, b = build_pairs(task, ds), build_pairs(task, fake_dataset())
    assert a.sha256 == b.sha256
    assert np.array_equal(a.ref, b.ref) and np.array_equal(a.probe, b.probe)
    assert len(a.label) == 3 * 10 * 20 and a.label.sum() == len(a.label) // 2
    ids = np.array([s.identity for s in ds.samples])
    masked = np.array([s.masked for s in ds.samples])
    for cond, (ref_m, probe_m) in CONDITIONS.items():
        sel = a.condition == cond
        assert (masked[a.ref[sel]] == ref_m).all() and (masked[a.probe[sel]] == probe_m).all()
        same = ids[a.ref[sel]] == ids[a.probe[sel]]
        assert np.array_equal(same, a.label[sel] == 1)
    fold_of = {}
    for r, p, f in zip(a.ref, a.probe, a.fold, strict=True):
        for ident in (ids[r], ids[p]):
            assert fold_of.setdefault(ident, f) == f
    c = build_pairs(VerificationTask(4, 10, 20, tuple(CONDITIONS)), ds)
    assert c.sha256 != a.sha256


def test_too_few_images_for_pairs_is_a_clear_error():
    task = VerificationTask(seed=3, folds=2, pairs_per_fold=2000, conditions=("UMR-UMP",))
    with pytest.raises(ProtocolError, match="pairs_per_fold"):
        build_pairs(task, fake_dataset(n_ids=10))


def test_gallery_is_unmasked_and_nonmated_probes_exist():
    proto = parse_protocol(TINY, "mem.yaml")
    ds = fake_dataset(n_ids=20)
    g = build_gallery(proto.tasks["identification"], ds)
    ids = np.array([s.identity for s in ds.samples])
    assert len(g.gallery) == 15 and not any(ds.samples[i].masked for i in g.gallery)
    assert all(ds.samples[i].masked for i in g.probes)
    nonmated = set(ids[g.probes]) - set(ids[g.gallery])
    assert len(nonmated) == 5
    assert build_gallery(proto.tasks["identification"], fake_dataset(n_ids=20)).sha256 == g.sha256
