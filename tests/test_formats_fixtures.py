"""The committed fixture tree is small, deterministic and current; the readers are registered."""

from pathlib import Path

import pytest
from fixtures_build import FIXTURES, build

from meerbench.data.dataset import DatasetSpec
from meerbench.data.formats import open_dataset
from meerbench.errors import DatasetError
from meerbench.registry import DATASETS

READERS = ("lfw", "mfr2", "mlfw", "calfw", "cplfw", "rmfrd", "smfrd", "insightface-bin")


def files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def test_fixture_tree_is_deterministic_current_and_small(tmp_path):
    first, second = files(build(tmp_path / "a")), files(build(tmp_path / "b"))
    assert first.keys() == second.keys()
    assert all(first[k].read_bytes() == second[k].read_bytes() for k in first)
    committed = files(FIXTURES)
    assert committed.keys() == first.keys(), "stale fixtures: run python tests/fixtures_build.py"
    for key, path in first.items():
        if path.suffix == ".txt":  # pair and label files; images may differ across libjpeg builds
            assert committed[key].read_bytes() == path.read_bytes(), f"stale fixture {key}"
    assert sum(p.stat().st_size for p in committed.values()) < 5_000_000


@pytest.mark.parametrize("name", READERS)
def test_readers_are_registered_and_say_where_the_data_comes_from(name, tmp_path):
    assert name in DATASETS and DATASETS.entry(name).description
    reader = DATASETS.get(name)()
    assert reader.needs_root and "http" in reader.about
    with pytest.raises(DatasetError, match="not found") as err:
        open_dataset(DatasetSpec(name, name, {}), tmp_path / "absent")
    assert reader.about in str(err.value)
