"""The restoration task: a model that restores is scored against the unmasked twins."""

import numpy as np

from meerbench.engine.evaluate import evaluate
from meerbench.models.classical import PixelsModel


class GreyFill(PixelsModel):
    """Fills the occluded region with mid grey: a crude but real restorer."""

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


def test_non_restoring_model_is_skipped_with_reason(tiny_protocol, tmp_path):
    result = evaluate("pixels", str(tiny_protocol), out_dir=tmp_path, progress=False).to_dict()
    assert result["metrics"]["restoration"] == {"skipped": "pixels does not restore faces"}


def test_inpaint_then_recognize_is_a_model_with_restoration_metrics(tiny_protocol, tmp_path):
    result = evaluate("inpaint-telea+fisherfaces", str(tiny_protocol), out_dir=tmp_path,
                      progress=False).to_dict()
    assert result["model"]["name"] == "inpaint-telea+fisherfaces"
    rest = result["metrics"]["restoration"]
    assert rest["n_images"] == 80 and rest["psnr_masked_region"]["mean"] > 5
    assert rest["lpips"]["value"] is None and rest["lpips"]["available"] is False
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
