"""The CLI front door (issue 14): model files through ``run --model PATH``, ``--version``,
``--json``, help with defaults, ``metrics --folds-by``, ``weights fetch`` for cards without a URL,
and ``prepare``'s checks before aligning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from meerbench.cli import main
from meerbench.engine.evaluate import IncompleteDataset
from meerbench.errors import ModelError
from meerbench.metrics.scorefiles import load_scores
from meerbench.models import load_model
from meerbench.models.card_schema import cards_dir
from meerbench.models.weights import weights_dir

FIXTURES = Path(__file__).parent / "fixtures"
# torch 2.14 deprecates torch.jit and the TorchScript-based ONNX exporter; both still work.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def tiny_net() -> nn.Module:
    """A small random CNN with 24-d embeddings (inputs of a side divisible by 16)."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(8 * 16, 24)).eval()


def export(folder: Path, side: int) -> dict[str, Path]:
    """The same network as ONNX (dynamic batch) and TorchScript (scripted) files."""
    net = tiny_net()
    files = {"onnx": folder / f"tiny{side}.onnx", "torchscript": folder / f"tiny{side}.ts.pt"}
    torch.onnx.export(net, (torch.randn(1, 3, side, side),), str(files["onnx"]),
                      input_names=["input"], output_names=["embedding"],
                      dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                      dynamo=False)  # the dynamo exporter needs onnxscript
    torch.jit.script(net).save(str(files["torchscript"]))
    return files


def test_onnx_and_torchscript_files_run_end_to_end(capsys, tiny_protocol, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    files = export(tmp_path, 64)
    out = tmp_path / "results"
    results, scores = {}, {}
    for kind, path in files.items():
        code, stdout, err = run_cli(
            capsys, "run", "--model", str(path), "--protocol", str(tiny_protocol), "--out",
            str(out), "--input-size", "64", "--mean", "0.5", "--precision", "fp32", "--json",
            "--no-progress")
        assert code == 0, err
        written = out / f"{path.stem}__tiny.json"
        results[kind] = json.loads(stdout)  # stdout holds the Result JSON and nothing else
        assert results[kind] == json.loads(written.read_text())
        scores[kind] = load_scores(out / f"{path.stem}__tiny.scores.csv").scores
    assert results["onnx"]["model"]["name"] == "tiny64"
    assert results["torchscript"]["model"]["name"] == "tiny64.ts"
    for result in results.values():
        contract = result["model"]["contract"]
        assert contract["input_size"] == [64, 64] and contract["embedding_dim"] == 24  # measured
        assert contract["mean"] == [0.5] * 3 and contract["alignment"] == "arcface-112"
        ver = result["metrics"]["verification"]
        assert set(ver) == {"UMR-UMP", "UMR-MP", "MR-MP"}
        assert result["counts"]["pairs"] == {"UMR-UMP": 80, "UMR-MP": 80, "MR-MP": 80}
        assert 0.5 < ver["UMR-UMP"]["auc"]["value"] <= 1  # a random CNN still sees identity
    # two runtimes, one network: the same scores pair by pair, hence the same numbers
    np.testing.assert_allclose(scores["onnx"], scores["torchscript"], atol=1e-5)
    assert np.ptp(scores["onnx"]) > 0.01
    onnx_auc = results["onnx"]["metrics"]["verification"]["UMR-MP"]["auc"]["value"]
    ts_auc = results["torchscript"]["metrics"]["verification"]["UMR-MP"]["auc"]["value"]
    assert onnx_auc == pytest.approx(ts_auc, abs=1e-3)


def test_torchscript_with_the_arcface_defaults_embeds_like_the_network(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.script(tiny_net()).save(str(path))
    model = load_model(str(path))
    assert model.name == "tiny"
    cfg = model.cfg
    assert (cfg.input_size, cfg.channels, cfg.mean, cfg.std, cfg.flip_fusion, cfg.embedding_dim) \
        == ((112, 112), "RGB", (0.5,) * 3, (0.5,) * 3, "none", 24)
    images = torch.randint(0, 256, (3, 112, 112, 3), dtype=torch.uint8)
    x = cfg.preprocess(images)
    with torch.no_grad():
        assert torch.allclose(model.forward(x), tiny_net()(x), atol=1e-5)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_plain_checkpoint_with_arch(tmp_path, suffix):
    from meerbench.models.mobilefacenet import mobilefacenet

    torch.manual_seed(0)
    net = mobilefacenet(64).eval()
    state = {f"module.{k}": v.contiguous() for k, v in net.state_dict().items()}
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        pytest.importorskip("safetensors")
        from safetensors.torch import save_file

        save_file(state, path)
    model = load_model(str(path), arch="mobilefacenet", name="mbf-test")
    assert model.name == "mbf-test" and model.cfg.embedding_dim == 64  # from the output layer
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(model.forward(x), net(x))
    with pytest.raises(ModelError, match=r"does not match IResNet.*--arch"):
        load_model(str(path), arch="iresnet18")


def test_card_file_and_trained_folder_are_models(tmp_path):
    assert load_model(str(cards_dir() / "pixels.yaml")).name == "pixels"
    folder = load_model(str(cards_dir() / "meer-s"))
    assert folder.name == "meer-s"
    assert folder.weights_hash() == load_model("meer-s").weights_hash()


def expect_error(capsys, *args: str, match: str) -> str:
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and err.startswith("meerbench: error: ") and err.count("\n") == 1, err
    assert match in err, err
    return err


def test_model_path_errors_name_the_file_and_the_accepted_kinds(capsys, tmp_path):
    out = str(tmp_path / "out")
    odd = tmp_path / "model.h5"
    odd.write_bytes(b"\x89HDF")
    err = expect_error(capsys, "run", "--model", str(odd), "--out", out, match=str(odd))
    assert "Accepted: a model card" in err and "ONNX" in err and "--arch iresnet18|" in err
    expect_error(capsys, "run", "--model", str(tmp_path / "gone.onnx"), "--out", out,
                 match=f"Model file not found: {tmp_path / 'gone.onnx'}")
    state = tmp_path / "weights.pth"
    torch.save(nn.Linear(2, 2).state_dict(), state)
    expect_error(capsys, "run", "--model", str(state), "--out", out,
                 match=f"{state} is not a TorchScript file; a plain checkpoint")
    expect_error(capsys, "run", "--model", str(tmp_path), "--out", out,
                 match=f"{tmp_path} is a folder without card.yaml")
    expect_error(capsys, "run", "--model", "pixels", "--arch", "iresnet50", "--out", out,
                 match="--arch: for a model file given to --model; 'pixels' is a registered")
    expect_error(capsys, "run", "--model", str(cards_dir() / "pixels.yaml"), "--mean", "0.4",
                 "--out", out, match="is a model card: it gives the architecture and contract, "
                                     "so drop --mean")
    script = tmp_path / "flat.pt"  # a network for 112x112 inputs only
    torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 8))).save(str(script))
    expect_error(capsys, "run", "--model", str(script), "--weights", str(state), "--out", out,
                 match="holds its own weights")
    expect_error(capsys, "run", "--model", str(script), "--input-size", "32x48", "--out", out,
                 match=f"{script} fails on a blank (2, 3, 32, 48) batch")
    expect_error(capsys, "run", "--model", str(script), "--mean", "0.5", "0.5", "--out", out,
                 match="field 'contract.mean': expected 3 number(s) for channels RGB")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_version_list_json_and_help_with_defaults(capsys):
    import importlib.metadata

    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out == f"meerbench {importlib.metadata.version('meerbench')}\n"
    code, out, _ = run_cli(capsys, "list", "protocols", "--json")
    rows = json.loads(out)
    assert code == 0 and all(set(row) == {"name", "description"} for row in rows)
    assert "synthmask" in {row["name"] for row in rows}
    code, out, _ = run_cli(capsys, "run", "--help")
    text = " ".join(out.split())
    for shown in ("--batch-size BATCH_SIZE images per forward pass", "(default: 64)",
                  "--precision {auto,fp32,bf16,fp16}", "(default: auto)", "(default: 2048)",
                  "--workers WORKERS", "(default: 0)", "--device DEVICE", "(default: meer)",
                  "(default: synthmask)", "(default: results)", "--arch", "(default: 112)"):
        assert shown in text, shown
    assert "(default: None)" not in text and "(default: False)" not in text


def write_sorted_scores(path: Path, with_ids: bool) -> None:
    """400 pairs of 20 identities, sorted by label: every identity has genuine and impostor
    pairs as probe."""
    rng = np.random.default_rng(0)
    rows = []
    for label in (0, 1):
        for i in range(200):
            probe = f"id{i % 20:02d}"
            ref = probe if label else f"id{(i % 20 + 1 + i // 20) % 20:02d}"
            score = rng.normal(0.6 if label else 0.2, 0.15)
            rows.append(f"{ref},{probe},{label},{score:.6f}" if with_ids else
                        f"{label},{score:.6f}")
    header = "ref_id,probe_id,label,score" if with_ids else "label,score"
    path.write_text("\n".join([header, *rows]) + "\n")


def test_metrics_folds_by_identity_or_order(capsys, tmp_path):
    from meerbench.cli import score_folds

    named, bare = tmp_path / "named.csv", tmp_path / "bare.csv"
    write_sorted_scores(named, with_ids=True)
    write_sorted_scores(bare, with_ids=False)

    folds = score_folds(load_scores(named), 10, None, str(named))  # identity by default
    table = load_scores(named)
    for i, identity in enumerate(sorted(set(table.probe_ids))):  # dealt round-robin
        assert set(folds[table.probe_ids == identity]) == {i % 10}
    code, out, err = run_cli(capsys, "metrics", "--scores", str(named), "--json",
                             "--bootstrap", "0")
    assert code == 0 and err == ""
    identity_acc = json.loads(out)["verification"]["all"]["accuracy"]["mean"]

    code, out, err = run_cli(capsys, "metrics", "--scores", str(named), "--folds-by", "order",
                             "--json", "--bootstrap", "0")
    assert code == 0 and f"warning: {named}: 10 of 10 folds hold pairs of one class" in err
    assert json.loads(out)["verification"]["all"]["accuracy"]["mean"] != identity_acc

    code, _, err = run_cli(capsys, "metrics", "--scores", str(bare), "--bootstrap", "0")
    assert code == 0 and f"{bare}: 10 of 10 folds hold pairs of one class" in err
    assert "--folds-by identity" in err
    expect_error(capsys, "metrics", "--scores", str(bare), "--folds-by", "identity",
                 match=f"{bare}: --folds-by identity needs identities")


def test_weights_fetch_without_url_says_which_file_goes_where(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path / "home"))
    target = weights_dir() / "arcface-r50-ms1mv3.pth"
    code, out, _ = run_cli(capsys, "weights", "fetch", "arcface-r50")
    text = " ".join(out.split())
    assert code == 1  # nothing there yet: a manual step is needed
    assert "no direct download URL" in text and "1drv.ms" in text
    assert "folder ms1mv3_arcface_r50_fp16, file backbone.pth" in text  # the card's notes
    assert f"save as: {target}" in text
    assert "meerbench run --model arcface-r50 --weights PATH" in text
    target.parent.mkdir(parents=True)
    target.write_bytes(b"placed")
    code, out, _ = run_cli(capsys, "weights", "fetch", "arcface-r50")
    assert code == 0 and f"weights present at {target}" in out


def copy_rmfrd(dest: Path, identities: int) -> Path:
    """The first ``identities`` people of the RMFRD fixture, in its layout."""
    src = FIXTURES / "rmfrd" / "self-built-masked-face-recognition-dataset"
    for tree in ("AFDB_face_dataset", "AFDB_masked_face_dataset"):
        for person in sorted((src / tree).iterdir())[:identities]:
            shutil.copytree(person, dest / src.name / tree / person.name)
    return dest


def test_prepare_checks_the_lists_before_aligning_and_leaves_no_folder(capsys, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path / "home"))
    data = copy_rmfrd(tmp_path / "few", 4)
    out = tmp_path / "lists" / "rmfrd"
    expect_error(capsys, "prepare", "rmfrd", "--data", str(data), "--out", str(out),
                 "--no-progress", match="10 folds need at least 20")
    assert not (tmp_path / "lists").exists()
    assert not (tmp_path / "home" / "prepared").exists()  # failed before aligning anything
    expect_error(capsys, "prepare", "rmfrd", "--data", str(tmp_path / "absent"), "--out",
                 str(out), match=str(tmp_path / "absent"))
    assert not (tmp_path / "lists").exists()


def test_prepare_warns_on_an_incomplete_download_and_counts_fallbacks(capsys, tmp_path):
    with pytest.warns(IncompleteDataset, match=r"found 25 of 525 published identities \(5%\); "
                                               r"48 of 5,000 published masked images"):
        code, out, _ = run_cli(capsys, "prepare", "rmfrd", "--data", str(FIXTURES / "rmfrd"),
                               "--out", str(tmp_path), "--no-progress")
    assert code == 0
    assert "INCOMPLETE download? found 25 of 525 published identities (5%)" in out
    line = next(x for x in out.splitlines() if "centre-crop fallback (no face found)" in x)
    aligned = int(line.split("aligned with dlib: ")[1].split(";")[0].replace(",", ""))
    fallback, total = line.split("found): ")[1].split(" (")[0].split(" of ")
    assert aligned + int(fallback) == int(total) == 97  # every fixture image, counted once
    if int(fallback):
        assert "centre-cropped: " in out
