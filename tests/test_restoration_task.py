"""The restoration task: a model that restores is scored against the unmasked twins."""

import numpy as np

from meerbench.engine.evaluate import evaluate
from meerbench.models.classical import PixelsModel


class GreyFill(PixelsModel):
    """Fills the occluded region with mid grey: a crude but real restorer."""

    restoration_given = "true-map"

    def can_restore(self) -> bool:
        return True

    def restore(self, images, mask_maps):
        out = images.copy()
        out[mask_maps] = 128
        return out


def test_restoring_model_gets_restoration_metrics(tiny_protocol, tmp_path):
    result = evaluate(GreyFill("grey-fill"), str(tiny_protocol), out_dir=tmp_path,
                      progress=False).to_dict()
    rest = result["metrics"]["restoration"]
    assert rest["n_images"] == 80  # 20 identities x 4 masked images
    assert rest["psnr"]["mean"] > rest["psnr_masked_region"]["mean"]  # outside the mask is exact
    assert rest["identity_similarity"]["recognizer"] == "fisherfaces"
    assert rest["fid"]["value"] is None and not rest["fid"]["available"]
    assert np.isfinite(rest["ssim"]["mean"])
    assert rest["given"] == "true-map"


def test_non_restoring_model_is_skipped_with_reason(tiny_protocol, tmp_path):
    result = evaluate("pixels", str(tiny_protocol), out_dir=tmp_path, progress=False).to_dict()
    assert result["metrics"]["restoration"] == {"status": "skipped",
                                                "reason": "pixels does not restore faces"}


def test_inpaint_then_recognize_is_a_model_with_restoration_metrics(tiny_protocol, tmp_path):
    result = evaluate("inpaint-telea+fisherfaces", str(tiny_protocol), out_dir=tmp_path,
                      progress=False).to_dict()
    assert result["model"]["name"] == "inpaint-telea+fisherfaces"
    rest = result["metrics"]["restoration"]
    assert rest["n_images"] == 80 and rest["psnr_masked_region"]["mean"] > 5
    assert rest["lpips"]["value"] is None and rest["lpips"]["available"] is False
    assert rest["given"] == "true-map"  # declared by RestoreThenRecognize, the tiny data has maps
    plain = evaluate("fisherfaces", str(tiny_protocol), out_dir=None, progress=False).to_dict()
    umr_mp = result["metrics"]["verification"]["UMR-MP"]["auc"]["value"]
    assert umr_mp != plain["metrics"]["verification"]["UMR-MP"]["auc"]["value"]
    same = result["metrics"]["verification"]["UMR-UMP"]["auc"]["value"]
    assert same == plain["metrics"]["verification"]["UMR-UMP"]["auc"]["value"]


def test_unknown_restorer_lists_known_ones():
    import pytest

    from meerbench.errors import UnknownNameError
    from meerbench.models import load_model

    with pytest.raises(UnknownNameError, match="inpaint-ns, inpaint-telea"):
        load_model("inpaint-fast+fisherfaces")


def test_restoration_samples_and_per_family_metrics_are_written(tiny_protocol, tmp_path):
    result = evaluate(GreyFill("grey-fill"), str(tiny_protocol), out_dir=tmp_path,
                      progress=False).to_dict()
    with np.load(tmp_path / result["files"]["restoration_samples"]) as npz:
        assert npz["restored"].shape == npz["truth"].shape == (8, 112, 112, 3)
        assert len(npz["keys"]) == 8
    by_family = result["metrics"]["verification_by_family"]
    assert "UMR-UMP" not in by_family and set(by_family) <= {"UMR-MP", "MR-MP"}
    assert by_family and all(f in ("surgical", "cloth", "n95", "kn95", "fabric")
                             for cond in by_family.values() for f in cond)


def test_per_family_intervals_resample_probe_identities():
    """Pairs of one person are not independent: the per-family intervals, like the per-condition
    ones, must resample probe identities, not pairs."""
    from types import SimpleNamespace

    from meerbench.metrics.verification import VerificationSettings, verification_report
    from meerbench.tasks.verification import score_pairs

    rng = np.random.default_rng(3)
    n_ids, per_id = 12, 40  # 40 pairs per probe identity, one hard and one easy person...
    samples = [SimpleNamespace(identity=f"id{i}", mask_type="cloth") for i in range(n_ids)]
    probe = np.repeat(np.arange(n_ids), per_id)
    label = np.tile(np.arange(per_id) % 2 == 0, n_ids)
    shift = rng.normal(0, 1.5, n_ids)[probe]  # ...so whole identities move together
    scores = np.where(label, 1.0, -1.0) + shift + rng.normal(0, 0.3, probe.size)
    pairs = SimpleNamespace(probe=probe, label=label, fold=probe % 4,
                            condition=np.array(["UMR-MP"] * probe.size, dtype=object))
    settings = {"bootstrap": 200, "seed": 0}
    dataset = SimpleNamespace(samples=samples)
    section = score_pairs(("UMR-MP",), VerificationSettings(**settings), dataset, pairs, scores)
    family = section.by_family["UMR-MP"]["cloth"].values
    condition = section.conditions["UMR-MP"].values
    by_pair = verification_report(scores, label, pairs.fold, VerificationSettings(**settings))
    assert family["eer"] == condition["eer"]
    width = family["eer"]["ci95"][1] - family["eer"]["ci95"][0]
    assert width > 1.5 * (by_pair["eer"]["ci95"][1] - by_pair["eer"]["ci95"][0])


class Undeclared(GreyFill):
    restoration_given = None


def test_what_the_restorer_was_given_is_recorded_validated_and_shown(tiny_protocol, tmp_path):
    """``given`` is the restorer's declaration; a Result without it (a restorer that declares
    nothing, every Result written before the field) reads and shows "not recorded"."""
    import json

    import pytest

    from meerbench.errors import MeerbenchError, ModelError
    from meerbench.models.meer import MeerModel
    from meerbench.report.grid import load_runs
    from meerbench.results import read_result

    assert MeerModel.restoration_given == "masked-image"
    result = evaluate(GreyFill("grey-fill"), str(tiny_protocol), out_dir=tmp_path, progress=False)
    path = tmp_path / f"{result.stem}.json"
    assert load_runs([path])[0].restorer_given == "given: true-map"

    data = json.loads(path.read_text())
    data["metrics"]["restoration"]["given"] = "the-map"
    path.write_text(json.dumps(data))
    with pytest.raises(MeerbenchError, match="field 'metrics.restoration.given'.*'true-map'"):
        read_result(path)
    del data["metrics"]["restoration"]["given"]
    path.write_text(json.dumps(data))
    assert load_runs([path])[0].restorer_given == "given: not recorded"

    quiet = evaluate(Undeclared("quiet-fill"), str(tiny_protocol), out_dir=None, progress=False)
    assert "given" not in quiet.metrics["restoration"]
    wrong = Undeclared("wrong-fill")
    wrong.restoration_given = "oracle"
    with pytest.raises(ModelError, match="restoration_given must be one of true-map"):
        evaluate(wrong, str(tiny_protocol), out_dir=None, progress=False)


def test_shipped_restoration_results_say_what_each_restorer_was_given():
    """Added by hand to the 3 shipped v1 Results, from the code that wrote them: the task passed
    the true maps whenever every image had one (SynthMask's do: their mask-region metrics exist)
    and MeerModel.restore ignores them; the v2 Results were written with the field."""
    from pathlib import Path

    from meerbench.report.grid import load_runs

    runs = load_runs([Path(__file__).parents[1] / "reports" / "results"])
    given = {r.path.stem: r.restorer_given for r in runs if "restoration" in r.result["metrics"]
             and "psnr" in r.result["metrics"]["restoration"]}
    assert given == {"inpaint-telea+fisherfaces__synthmask": "given: true-map",
                     "meer-s__synthmask": "given: masked-image",
                     "meer-s__synthmask-unseen": "given: masked-image",
                     "inpaint-telea+fisherfaces__synthmask.v2": "given: true-map",
                     "meer-s__synthmask.v2": "given: masked-image"}
