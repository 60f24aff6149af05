"""The command line as a user meets it: listings, a tiny end-to-end run, and every user error."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from meerbench.cli import main
from meerbench.tasks.verification import VERIFICATION
from tests.conftest import TINY


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_protocols_models_datasets(capsys):
    code, out, _ = run_cli(capsys, "list", "protocols")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert {"synthmask", "synthmask-unseen", "synthmask-train"} <= set(names)
    assert "INVALID" not in out
    _, out, _ = run_cli(capsys, "list", "models")
    assert {"pixels", "eigenfaces", "fisherfaces"} <= {line.split()[0] for line in out.splitlines()}
    _, out, _ = run_cli(capsys, "list", "datasets")
    assert "synthface" in out and "manifest" in out


def test_tiny_run_writes_result_and_scores_then_reuses_cache(capsys, tiny_protocol, tmp_path,
                                                            monkeypatch):
    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path / "home"))  # a cold cache in any test order
    out_dir = tmp_path / "results"
    code, out, _ = run_cli(capsys, "run", "--model", "fisherfaces", "--protocol",
                           str(tiny_protocol), "--out", str(out_dir), "--no-progress")
    assert code == 0, out
    assert "UMR-MP" in out and "rank-1" in out
    result = json.loads((out_dir / "fisherfaces__tiny.json").read_text())
    assert result["schema"] == "meerbench.result/1"
    assert set(result["metrics"]["verification"]) == {"UMR-UMP", "UMR-MP", "MR-MP"}
    assert result["counts"]["pairs"] == {"UMR-UMP": 80, "UMR-MP": 80, "MR-MP": 80}
    assert result["protocol"]["lists"]["verification"]
    assert result["model"]["fit"]["train"] == "synthface-tiny-train"
    assert result["provenance"]["torch_version"] and not result["timings"]["embed_cache_hit"]
    scores = (out_dir / "fisherfaces__tiny.scores.csv").read_text().splitlines()
    assert scores[0] == "ref,probe,ref_id,probe_id,label,score,fold,condition"
    assert len(scores) == 241

    code, _, _ = run_cli(capsys, "run", "--model", "fisherfaces", "--protocol", str(tiny_protocol),
                         "--out", str(out_dir), "--no-progress")
    again = json.loads((out_dir / "fisherfaces__tiny.json").read_text())
    assert code == 0 and again["timings"]["embed_cache_hit"] and again["model"]["fit"]["cached"]
    assert again["metrics"] == result["metrics"]

    code, out, _ = run_cli(capsys, "report", str(out_dir))
    assert code == 0 and "| fisherfaces |" in out and "tiny v1 UMR-MP" in out


def folder_protocol(tmp_path: Path) -> Path:
    proto = {**TINY, "id": "folder-test", "train": None,
             "dataset": {"format": "folder", "name": "faces", "options": {}},
             "tasks": {"verification": {"seed": 1, "folds": 2, "pairs_per_fold": 4,
                                        "conditions": ["UMR-UMP"]}}}
    path = tmp_path / "folder.yaml"
    path.write_text(yaml.safe_dump(proto))
    return path


def write_folder_dataset(root: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(6):
        (root / f"person{i}").mkdir(parents=True)
        for j in range(3):
            img = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / f"person{i}" / f"{j}.png")


def expect_error(capsys, *args, match: str, out_dir: Path | None = None):
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert err.startswith("meerbench: error: ") and err.count("\n") == 1, err
    assert match in err, err
    if out_dir is not None:
        assert not out_dir.exists() or not any(out_dir.iterdir())
    return err


def test_user_errors_exit_2_with_one_paragraph_and_no_partial_files(capsys, tmp_path):
    out = tmp_path / "out"
    err = expect_error(capsys, "run", "--model", "fisherface", "--out", str(out),
                       match="Unknown model 'fisherface'")
    assert "Did you mean 'fisherfaces'?" in err
    expect_error(capsys, "run", "--protocol", "synthmsk", "--out", str(out),
                 match="Did you mean 'synthmask'?")

    bad = {**TINY, "tasks": {"verification": {"seed": 1, "fold": 2, "pairs_per_fold": 4}}}
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(yaml.safe_dump(bad))
    expect_error(capsys, "run", "--protocol", str(bad_path), "--out", str(out),
                 match="unknown field 'tasks.verification.fold'")

    proto = folder_protocol(tmp_path)
    expect_error(capsys, "run", "--model", "pixels", "--protocol", str(proto), "--data",
                 str(tmp_path / "absent"), "--out", str(out), match=str(tmp_path / "absent"))

    data = tmp_path / "faces"
    write_folder_dataset(data)
    corrupt = data / "person3" / "1.png"
    corrupt.write_bytes(b"not an image at all")
    expect_error(capsys, "run", "--model", "pixels", "--protocol", str(proto), "--data",
                 str(data), "--out", str(out), "--no-progress", match=str(corrupt),
                 out_dir=out)

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    expect_error(capsys, "run", "--model", "pixels", "--protocol", str(proto), "--data",
                 str(data), "--out", str(blocker / "results"), match="Cannot create output")


def test_model_that_needs_fitting_without_train_split_is_explained(capsys, tmp_path):
    data = tmp_path / "faces"
    write_folder_dataset(data)
    expect_error(capsys, "run", "--model", "fisherfaces", "--protocol",
                 str(folder_protocol(tmp_path)), "--data", str(data), "--out",
                 str(tmp_path / "o"), "--no-progress", match="declares no 'train' dataset")


@pytest.mark.slow
def test_main_job_on_synthmask_from_the_console_script(tmp_path):
    """The README's main job, as a new user runs it: generation, fit, embedding, all tasks."""
    exe = shutil.which("meerbench", path=str(Path(sys.executable).parent))
    assert exe, "console script not installed"
    cmd = [exe, "run", "--model", "fisherfaces", "--protocol", "synthmask@1", "--out",
           str(tmp_path / "results")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "it/s" in first.stderr or "img/s" in first.stderr  # progress bars were shown
    assert "UMR-MP" in first.stdout
    result = json.loads((tmp_path / "results" / "fisherfaces__synthmask.json").read_text())
    assert result["counts"]["pairs"] == {"UMR-UMP": 6000, "UMR-MP": 6000, "MR-MP": 6000}
    ident = result["metrics"]["identification"]
    assert ident["n_probes_mated"] == 2500 and ident["n_probes_nonmated"] == 500
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    again = json.loads((tmp_path / "results" / "fisherfaces__synthmask.json").read_text())
    assert second.returncode == 0 and again["timings"]["embed_cache_hit"]
    assert again["metrics"] == result["metrics"]


def test_metrics_cli_recomputes_a_run_from_its_score_file(capsys, tiny_protocol, tmp_path):
    out_dir = tmp_path / "results"
    assert main(["run", "--model", "pixels", "--protocol", str(tiny_protocol), "--out",
                 str(out_dir), "--no-progress"]) == 0
    capsys.readouterr()
    result = json.loads((out_dir / "pixels__tiny.json").read_text())
    code, out, _ = run_cli(capsys, "metrics", "--scores", str(out_dir / "pixels__tiny.scores.csv"),
                           "--json", "--far", "0.1", "0.01", "--bootstrap", "50")
    assert code == 0
    section = VERIFICATION.read(result["metrics"])  # the same numbers; the Result adds status
    assert json.loads(out)["verification"] == {c: s.values for c, s in section.conditions.items()}
    code, out, _ = run_cli(capsys, "metrics", "--scores", str(out_dir / "pixels__tiny.scores.csv"))
    assert code == 0 and "UMR-MP" in out and "TAR@0.001" in out


def test_metrics_cli_bad_score_files(capsys, tmp_path):
    nan = tmp_path / "nan.csv"
    nan.write_text("score,label\n0.5,1\nnan,0\n0.1,0\n")
    expect_error(capsys, "metrics", "--scores", str(nan), match="nan.csv:3: score")
    bad = tmp_path / "bad.txt"
    bad.write_text("alice alice k1 0.9\nbob alice k2 oops\n")
    expect_error(capsys, "metrics", "--scores", str(bad), match="bad.txt:2: score")


def test_mask_command_is_reproducible(capsys, tmp_path):
    src = Path(__file__).parent / "fixtures" / "calfw"
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert main(["mask", str(src), "--out", str(tmp_path / name), "--seed", seed,
                     "--landmarks", "template", "--no-progress"]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert files and all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    manifest = "masking_manifest.csv"
    assert (tmp_path / "a" / manifest).read_text() == (tmp_path / "b" / manifest).read_text()
    assert (tmp_path / "a" / manifest).read_text() != (tmp_path / "c" / manifest).read_text()
    expect_error(capsys, "mask", str(src), "--out", str(tmp_path / "d"), "--families", "foo",
                 match="unknown occluder families ['foo']")


def test_plain_run_is_the_main_job():
    from meerbench.cli import build_parser

    args = build_parser().parse_args(["run"])
    assert (args.model, args.protocol) == ("meer", "synthmask")
