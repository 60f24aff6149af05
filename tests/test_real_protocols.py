"""The real-benchmark protocols, end to end on the tiny fixture copies of their layouts."""

from pathlib import Path

import pytest

from meerbench.cli import main
from meerbench.engine.evaluate import evaluate
from meerbench.protocol import load_protocol

FIXTURES = Path(__file__).parent / "fixtures"
REAL = ["rmfrd", "smfrd", "lfw", "lfw-masked", "mlfw", "mfr2", "calfw", "cplfw", "calfw-masked",
        "cplfw-masked", "lfw-bin", "cfp-fp-bin", "agedb30-bin", "calfw-bin", "cplfw-bin",
        "lfw-bin-masked"]


def test_every_real_protocol_is_listed_with_a_citation():
    for name in REAL:
        proto = load_protocol(name)
        assert proto.citation and proto.description


@pytest.mark.slow
@pytest.mark.parametrize(
    ("protocol", "data", "conditions"),
    [
        ("lfw-masked", "lfw", {"UMR-UMP", "UMR-MP", "MR-MP"}),
        ("mfr2", "mfr2", None),
        ("mlfw", "mlfw", {"MR-MP"}),
        ("rmfrd", "rmfrd", {"UMR-UMP", "UMR-MP", "MR-MP"}),
        ("lfw-bin-masked", "bins", {"UMR-UMP", "UMR-MP", "MR-MP"}),
    ],
)
def test_real_protocol_end_to_end_on_fixture(protocol, data, conditions, tmp_path):
    result = evaluate("fisherfaces", protocol, data=FIXTURES / data, out_dir=tmp_path,
                      progress=False).to_dict()
    assert len(result["protocol"]["lists"]["verification"]) == 64
    ver = result["metrics"]["verification"]
    assert conditions is None or set(ver) == conditions
    scored = [cond for cond in ver.values() if cond.get("status", "ok") == "ok"]
    assert scored
    for cond in scored:
        assert 0 <= cond["auc"]["value"] <= 1
    if protocol.endswith("-masked"):
        masking = result["protocol"]["preparation"]["masking"]
        assert len(masking["manifest_sha256"]) == 64 and masking["masked_images"] > 0
    if protocol == "rmfrd":
        assert result["metrics"]["identification"]["n_probes_nonmated"] > 0
        assert "alignment" in result["protocol"]["preparation"]
    assert (tmp_path / f"fisherfaces__{protocol}.scores.csv").is_file()


def test_missing_real_data_explains_where_to_get_it(capsys, tmp_path):
    code = main(["run", "--protocol", "rmfrd", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "github.com/X-zhangyang/Real-World-Masked-Face-Dataset" in err
    assert "AFDB_masked_face_dataset" in err and "meerbench prepare" in err


def test_prepare_rmfrd_reports_counts_and_writes_hashed_lists(capsys, tmp_path):
    code = main(["prepare", "rmfrd", "--data", str(FIXTURES / "rmfrd"), "--out",
                 str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "(published: 525)" in out and "Differences:" in out
    pairs = (tmp_path / "rmfrd-v1-pairs.csv").read_text().splitlines()
    assert pairs[0] == "condition,fold,ref,probe,label" and len(pairs) > 1
    assert (tmp_path / "rmfrd-v1-gallery.csv").is_file()
    first = (tmp_path / "rmfrd-v1-pairs.csv").read_bytes()
    main(["prepare", "rmfrd", "--data", str(FIXTURES / "rmfrd"), "--out", str(tmp_path),
          "--no-progress"])
    assert (tmp_path / "rmfrd-v1-pairs.csv").read_bytes() == first


def test_prepare_workers_reach_the_aligner(capsys, tmp_path, monkeypatch):
    """``prepare --workers N`` aligns in N processes (default: ``align_dataset``'s idle cores)."""
    from meerbench.data import align

    seen: list[int | None] = []
    original = align.align_dataset

    def spy(*args, workers=None, **kwargs):
        seen.append(workers)
        return original(*args, workers=workers, **kwargs)

    monkeypatch.setattr(align, "align_dataset", spy)
    for extra in (["--workers", "1"], []):
        assert main(["prepare", "rmfrd", "--data", str(FIXTURES / "rmfrd"), "--out",
                     str(tmp_path / str(len(extra))), "--no-progress", *extra]) == 0
    assert seen == [1, None]
    code = main(["prepare", "rmfrd", "--data", str(FIXTURES / "rmfrd"), "--out",
                 str(tmp_path / "x"), "--workers", "0"])
    assert code == 2 and "--workers" in capsys.readouterr().err
