"""meerbench side by side with the tools users would otherwise run, on identical inputs.

Each :class:`Pair` computes a result with meerbench's public metric functions and with a peer
package, and ``agree`` checks that the two match under the tolerance it states (raising
AssertionError otherwise) and returns the differences it measured. The agreement tests
(tests/test_peer_agreement.py) run every pair on small inputs; the peer benchmarks
(tests/benchmarks/test_bench_peers.py) time them at realistic sizes. Peers are imported inside
the pair functions, so this module imports without any of them; ``Pair.package`` names the one a
test must skip without.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from meerbench.metrics import auc, eer, roc, tar_at_far, topk_similarity
from meerbench.metrics.identification import (
    cmc,
    detection_identification_rate,
    dir_at_fpir,
    false_alarm_rate,
    outcomes_from_scores,
)
from meerbench.metrics.restoration import frechet_distance, psnr, ssim

Inputs = dict[str, Any]
FAR_TARGETS = (1e-1, 1e-2, 1e-3, 1e-4)
FPIR_TARGETS = (1e-1, 1e-2)


@dataclass(frozen=True)
class Pair:
    """One comparison: meerbench's function, the peer's, and the agreement check."""

    name: str
    package: str  # import name of the peer; tests skip when it is absent
    kind: str  # which inputs it takes: a key of INPUTS
    ours: Callable[[Inputs], Any]
    peer: Callable[[Inputs], Any]
    agree: Callable[[Any, Any, Inputs], dict[str, float]]
    tolerance: str


# ----------------------------------------------------------------------------- inputs


def verification_inputs(n: int, seed: int = 0) -> Inputs:
    """n cosine scores, 10% genuine, float32-rounded as embeddings give them (so ties occur)."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.1
    scores = np.where(labels, rng.normal(0.5, 0.15, n), rng.normal(0.05, 0.1, n))
    scores = np.clip(scores, -1, 1).astype(np.float32).astype(np.float64)
    return {"scores": scores, "labels": labels, "targets": FAR_TARGETS}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gallery_inputs(n_probes: int, n_gallery: int, dim: int = 512, k: int = 10,
                   seed: int = 0) -> Inputs:
    """L2-normalised float32 probes and gallery (one item per identity, 90% of probes mated)."""
    rng = np.random.default_rng(seed)
    gallery = _unit(rng.standard_normal((n_gallery, dim), dtype=np.float32))
    mate = rng.integers(0, n_gallery, n_probes)
    mated = rng.random(n_probes) < 0.9
    centres = np.where(mated[:, None], gallery[mate],
                       _unit(rng.standard_normal((n_probes, dim), dtype=np.float32)))
    probes = _unit(centres + np.float32(0.07) * rng.standard_normal((n_probes, dim),
                                                                   dtype=np.float32))
    return {"probes": probes, "gallery": gallery, "k": k,
            "probe_ids": np.where(mated, mate, -1 - np.arange(n_probes)),
            "gallery_ids": np.arange(n_gallery)}


def list_inputs(n_probes: int, n_gallery: int, dim: int = 512, seed: int = 0) -> Inputs:
    """bob.measure's CMC input from a gallery world: per probe (non-mate scores, mate scores or
    None), float64 cosines of the float32 embeddings."""
    world = gallery_inputs(n_probes, n_gallery, dim, seed=seed)
    sim = (world["probes"] @ world["gallery"].T).astype(np.float64)
    lists = []
    for row, probe_id in zip(sim, world["probe_ids"], strict=True):
        is_mate = world["gallery_ids"] == probe_id
        lists.append((row[~is_mate], row[is_mate] if is_mate.any() else None))
    return {"cmc_scores": lists, "fpir_targets": FPIR_TARGETS, "max_rank": 20}


def image_inputs(n: int, size: int = 112, seed: int = 0) -> Inputs:
    """n uint8 RGB targets (smooth gradients plus texture) and restorations off by up to +-20."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 160, size)
    base = (ramp[None, :, None, None] + ramp[None, None, :, None]) / 2
    target = np.clip(base + rng.integers(0, 96, (n, size, size, 3)), 0, 255).astype(np.uint8)
    restored = np.clip(target + rng.integers(-20, 21, target.shape), 0, 255).astype(np.uint8)
    return {"restored": restored, "target": target}


def feature_stats_inputs(dims: int, n: int, seed: int = 0) -> Inputs:
    """Mean and covariance of two feature sets (n > dims: full-rank covariances)."""
    rng = np.random.default_rng(seed)
    out = {}
    for side, shift in (("a", 0.0), ("b", 0.1)):
        mix = np.eye(dims) + rng.standard_normal((dims, dims)) / (dims / 11)
        f = rng.standard_normal((n, dims)) @ mix + shift
        out[f"mu_{side}"], out[f"sigma_{side}"] = f.mean(axis=0), np.cov(f, rowvar=False)
    return out


# ----------------------------------------------------------------------------- checks


def _max_abs(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _close(what: str, ours: Any, peer: Any, atol: float) -> float:
    diff = _max_abs(ours, peer)
    assert np.shape(ours) == np.shape(peer), f"{what}: shapes {np.shape(ours)} {np.shape(peer)}"
    assert diff <= atol, f"{what}: max |meerbench - peer| = {diff:.3g} > {atol:g}"
    return diff


def _equal(what: str, ours: Any, peer: Any) -> float:
    assert np.array_equal(np.asarray(ours), np.asarray(peer)), f"{what}: not identical"
    return 0.0


def _relative(what: str, ours: float, peer: float, rtol: float) -> float:
    rel = abs(ours - peer) / max(abs(peer), 1e-300)
    assert rel <= rtol, f"{what}: relative difference {rel:.3g} > {rtol:g}"
    return rel


# ----------------------------------------------------------------------------- verification


def _our_roc(x: Inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    curve = roc(x["scores"], x["labels"])
    return curve.far, curve.tar, curve.thresholds


def _sklearn_roc(x: Inputs) -> tuple[np.ndarray, ...]:
    from sklearn.metrics import roc_curve

    return roc_curve(x["labels"], x["scores"], drop_intermediate=False)


def _agree_roc(ours: tuple, peer: tuple, x: Inputs) -> dict[str, float]:
    """Every ROC point (FAR, TAR, threshold) identical."""
    for what, a, b in zip(("far", "tar", "thresholds"), ours, peer, strict=True):
        _equal(f"ROC {what}", a, b)
    return {"points": float(ours[0].size), "max_abs_diff": 0.0}


def _our_auc(x: Inputs) -> float:
    return auc(x["scores"], x["labels"])


def _sklearn_auc(x: Inputs) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(x["labels"], x["scores"]))


def _agree_auc(ours: float, peer: float, x: Inputs) -> dict[str, float]:
    return {"rel_diff": _relative("AUC", ours, peer, 1e-12)}


def _our_tar_nearest(x: Inputs) -> list[float]:
    return [t.tar for t in tar_at_far(x["scores"], x["labels"], x["targets"], "nearest")]


def _sklearn_tar_nearest(x: Inputs) -> list[float]:
    """The IJB-C evaluation idiom: roc_curve (dropping intermediate points), flipped, TPR at the
    FPR point nearest each target."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(x["labels"], x["scores"])
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    return [float(tpr[np.argmin(np.abs(fpr - target))]) for target in x["targets"]]


def _agree_exact_list(ours: list[float], peer: list[float], x: Inputs) -> dict[str, float]:
    return {"max_abs_diff": _equal("values", ours, peer)}


def _torch_scores(x: Inputs) -> tuple[Any, Any]:
    """Cosines mapped to [0, 1] by (s + 1) / 2 (exact in float64), so torchmetrics does not apply
    its sigmoid to out-of-range scores; the map is monotone and leaves ROC, AUC and EER as they
    are."""
    import torch

    return torch.from_numpy((x["scores"] + 1.0) / 2.0), torch.from_numpy(x["labels"].astype(int))


def _torchmetrics_roc(x: Inputs) -> tuple[np.ndarray, np.ndarray]:
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, _ = binary_roc(*_torch_scores(x), thresholds=None)
    return fpr.numpy(), tpr.numpy()


def _agree_roc_rates(ours: tuple, peer: tuple, x: Inputs) -> dict[str, float]:
    """torchmetrics returns rates as float32: equal to within float32 rounding (1e-7)."""
    return {"far_max_abs_diff": _close("ROC far", ours[0], peer[0], 1e-7),
            "tar_max_abs_diff": _close("ROC tar", ours[1], peer[1], 1e-7),
            "points": float(ours[0].size)}


def _agree_float32(ours: float, peer: float, x: Inputs) -> dict[str, float]:
    """torchmetrics computes rates in float32 whatever the input dtype: 1e-6."""
    return {"abs_diff": _close("value", ours, peer, 1e-6)}


def _torchmetrics_auc(x: Inputs) -> float:
    from torchmetrics.functional.classification import binary_auroc

    return float(binary_auroc(*_torch_scores(x), thresholds=None))


def _our_eer(x: Inputs) -> float:
    return eer(x["scores"], x["labels"], "min_gap").value


def _torchmetrics_eer(x: Inputs) -> float:
    from torchmetrics.functional.classification import binary_eer

    return float(binary_eer(*_torch_scores(x), thresholds=None))


def _bob_eer(x: Inputs) -> float:
    import bob.measure

    return float(bob.measure.eer(x["scores"][~x["labels"]], x["scores"][x["labels"]]))


def _agree_eer(ours: float, peer: float, x: Inputs) -> dict[str, float]:
    return {"abs_diff": _close("EER", ours, peer, 1e-12)}


def _our_tar_floor(x: Inputs) -> list[tuple[float, float]]:
    return [(t.far, t.tar) for t in tar_at_far(x["scores"], x["labels"], x["targets"], "floor")]


def _bob_tar_far_threshold(x: Inputs) -> list[tuple[float, float]]:
    """bob.measure's TAR@FAR: far_threshold on the impostor scores, then farfrr there."""
    import bob.measure

    neg, pos = x["scores"][~x["labels"]], x["scores"][x["labels"]]
    out = []
    for target in x["targets"]:
        far, frr = bob.measure.farfrr(neg, pos, bob.measure.far_threshold(neg, pos, target))
        out.append((float(far), 1.0 - float(frr)))
    return out


def _agree_tar_floor(ours: list, peer: list, x: Inputs) -> dict[str, float]:
    """Same achieved FAR; meerbench's TAR is bob's plus the genuine pairs scoring between bob's
    threshold (an impostor score) and the next impostor score below it, which ``floor`` also
    accepts without any further false accept."""
    neg = np.sort(x["scores"][~x["labels"]])
    pos = x["scores"][x["labels"]]
    gaps = []
    for (far, tar), (bob_far, bob_tar) in zip(ours, peer, strict=True):
        assert far == bob_far, f"achieved FAR {far} vs bob {bob_far}"
        cut = neg.size - round(far * neg.size)  # impostors rejected at both thresholds
        gained = 0.0  # no impostor accepted: both accept exactly the scores above all impostors
        if cut < neg.size:
            below = neg[cut - 1] if cut > 0 else -np.inf
            gained = np.count_nonzero((pos > below) & (pos < neg[cut])) / pos.size
        assert abs(tar - (bob_tar + gained)) < 1e-12, f"TAR {tar} vs bob {bob_tar} + {gained}"
        gaps.append(tar - bob_tar)
    return {"far_abs_diff": 0.0, "max_tar_gain_over_bob": float(max(gaps))}


# ----------------------------------------------------------------------------- identification


def _our_topk(x: Inputs) -> tuple[np.ndarray, np.ndarray]:
    return topk_similarity(x["probes"], x["gallery"], x["k"])


def _faiss_topk(x: Inputs) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(x["gallery"].shape[1])
    index.add(x["gallery"])
    return index.search(x["probes"], x["k"])


def _agree_topk(ours: tuple, peer: tuple, x: Inputs) -> dict[str, float]:
    """Scores within 1e-5 rank by rank; where the gallery index differs, the peer's item scores
    within 1e-5 of meerbench's at that rank (computed in float64): a near-tie, not a miss."""
    (s_ours, i_ours), (s_peer, i_peer) = ours, peer
    score_diff = _close("top-k scores", s_ours, s_peer, 1e-5)
    rows, cols = np.nonzero(i_ours != i_peer)
    p64 = x["probes"][rows].astype(np.float64)
    peer_exact = np.einsum("nd,nd->n", p64, x["gallery"][i_peer[rows, cols]].astype(np.float64))
    tie_gap = _close("differing top-k items", s_ours[rows, cols], peer_exact, 1e-5) if rows.size \
        else 0.0
    return {"score_max_abs_diff": score_diff, "index_agreement": 1.0 - rows.size / i_ours.size,
            "differing_items_score_gap": tie_gap}


def _our_identification(x: Inputs) -> dict[str, Any]:
    lists = x["cmc_scores"]
    outcomes = outcomes_from_scores([pos for _, pos in lists], [neg for neg, _ in lists])
    return {"cmc": cmc(outcomes.rank, x["max_rank"]),
            "dir": [(d.threshold, d.dir, d.fpir)
                    for d in dir_at_fpir(outcomes, x["fpir_targets"])],
            "at_0_5": (detection_identification_rate(outcomes.best_mate, outcomes.rank, 0.5),
                       false_alarm_rate(outcomes.nonmated_max, 0.5))}


def _bob_identification(x: Inputs) -> dict[str, Any]:
    """bob.measure: cmc over mated probes; DIR and FPIR at far_threshold of the non-mated
    maxima (bob.bio's ``dir`` command) and at a fixed threshold 0.5."""
    import bob.measure

    lists = x["cmc_scores"]
    mated = [pair for pair in lists if pair[1] is not None]
    maxima = np.array([neg.max() for neg, pos in lists if pos is None])
    dirs = []
    for target in x["fpir_targets"]:
        threshold = float(bob.measure.far_threshold(maxima, [], target))
        dirs.append((threshold, bob.measure.detection_identification_rate(lists, threshold),
                     bob.measure.false_alarm_rate(lists, threshold)))
    return {"cmc": bob.measure.cmc(mated)[:x["max_rank"]], "dir": dirs,
            "at_0_5": (bob.measure.detection_identification_rate(lists, 0.5),
                       bob.measure.false_alarm_rate(lists, 0.5))}


def _agree_identification(ours: dict, peer: dict, x: Inputs) -> dict[str, float]:
    """CMC to rank 20, DIR@FPIR (threshold, DIR, FPIR) and DIR/FPIR at 0.5: identical up to
    float rounding of the rates (bob divides counts the same way)."""
    return {"cmc_max_abs_diff": _close("CMC", ours["cmc"], peer["cmc"], 1e-12),
            "dir_max_abs_diff": _close("DIR@FPIR", ours["dir"], peer["dir"], 1e-12),
            "fixed_threshold_abs_diff": _close("DIR/FPIR at 0.5", ours["at_0_5"],
                                               peer["at_0_5"], 1e-12)}


# ----------------------------------------------------------------------------- restoration


def _our_frechet(x: Inputs) -> float:
    return frechet_distance(x["mu_a"], x["sigma_a"], x["mu_b"], x["sigma_b"])


def _pytorch_fid_frechet(x: Inputs) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    return float(calculate_frechet_distance(x["mu_a"], x["sigma_a"], x["mu_b"], x["sigma_b"]))


def _agree_frechet(ours: float, peer: float, x: Inputs) -> dict[str, float]:
    return {"rel_diff": _relative("Frechet distance", ours, peer, 1e-6)}


def _our_psnr(x: Inputs) -> np.ndarray:
    return np.asarray(psnr(x["restored"], x["target"]).per_image, np.float64)


def _our_ssim(x: Inputs) -> np.ndarray:
    return np.asarray(ssim(x["restored"], x["target"]).per_image, np.float64)


def _skimage_psnr(x: Inputs) -> np.ndarray:
    from skimage.metrics import peak_signal_noise_ratio

    return np.array([peak_signal_noise_ratio(t, r, data_range=255)
                     for r, t in zip(x["restored"], x["target"], strict=True)])


def _skimage_ssim(x: Inputs) -> np.ndarray:
    """Matched to BasicSR's: Gaussian weights sigma 1.5 (truncate 3.5: an 11x11 window),
    population covariances, data range 255, per channel; skimage filters with reflect padding
    and crops 5 px, leaving exactly the valid region."""
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(t, r, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=255,
                                           channel_axis=-1)
                     for r, t in zip(x["restored"], x["target"], strict=True)])


TORCH_BATCH = 250  # images per torchmetrics call, as a data loader would feed them


def torch_images(x: Inputs, batch: slice = slice(None)) -> tuple[Any, Any]:
    """restored, target of a batch as float32 NCHW tensors, torchmetrics' usual input. (In
    float64 its SSIM takes ~30x longer on CPU and ~3.7 GB per 50 112-px images: torch's grouped
    float64 convolution falls back to im2col.)"""
    import torch

    return tuple(torch.from_numpy(x[k][batch]).permute(0, 3, 1, 2).float()
                 for k in ("restored", "target"))


def _batched(fn: Callable[[Any, Any], Any], x: Inputs) -> np.ndarray:
    n = len(x["target"])
    return np.concatenate([fn(*torch_images(x, slice(i, i + TORCH_BATCH))).double().numpy()
                           for i in range(0, n, TORCH_BATCH)])


def _torchmetrics_psnr(x: Inputs) -> np.ndarray:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return _batched(lambda a, b: peak_signal_noise_ratio(a, b, data_range=255.0,
                                                         reduction="none", dim=(1, 2, 3)), x)


def _torchmetrics_ssim(x: Inputs) -> np.ndarray:
    """Gaussian 11x11, sigma 1.5, data range 255 on float32 NCHW. torchmetrics reflect-pads by 5
    and averages the whole map; to match BasicSR's valid region its full map is cropped by 5 px
    here before the mean (its own mean differs by about 1e-3)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    def valid_mean(a: Any, b: Any) -> Any:
        _, full = structural_similarity_index_measure(
            a, b, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=255.0,
            reduction="none", return_full_image=True)
        return full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))

    return _batched(valid_mean, x)


def _agree_psnr(ours: np.ndarray, peer: np.ndarray, x: Inputs) -> dict[str, float]:
    return {"max_abs_diff_db": _close("PSNR per image", ours, peer, 1e-6)}


def _agree_psnr_float32(ours: np.ndarray, peer: np.ndarray, x: Inputs) -> dict[str, float]:
    """torchmetrics in float32 (inputs and its data_range tensor): 1e-4 dB."""
    return {"max_abs_diff_db": _close("PSNR per image", ours, peer, 1e-4)}


def _agree_ssim_float32(ours: np.ndarray, peer: np.ndarray, x: Inputs) -> dict[str, float]:
    """torchmetrics in float32: 1e-5 (its uncropped mean differs by ~1e-3)."""
    return {"max_abs_diff": _close("SSIM per image", ours, peer, 1e-5)}


def _agree_ssim(ours: np.ndarray, peer: np.ndarray, x: Inputs) -> dict[str, float]:
    return {"max_abs_diff": _close("SSIM per image", ours, peer, 1e-6)}


# ----------------------------------------------------------------------------- the pairs


INPUTS: dict[str, Callable[..., Inputs]] = {
    "verification": verification_inputs, "gallery": gallery_inputs, "lists": list_inputs,
    "images": image_inputs, "stats": feature_stats_inputs,
}

PAIRS = {p.name: p for p in [
    Pair("sklearn-roc_curve", "sklearn", "verification", _our_roc, _sklearn_roc, _agree_roc,
         "identical FAR, TAR and thresholds (drop_intermediate=False)"),
    Pair("sklearn-roc_auc_score", "sklearn", "verification", _our_auc, _sklearn_auc,
         _agree_auc, "relative 1e-12"),
    Pair("sklearn-tar_at_far-nearest", "sklearn", "verification", _our_tar_nearest,
         _sklearn_tar_nearest, _agree_exact_list, "identical TAR at 1e-1..1e-4 (rule nearest)"),
    Pair("torchmetrics-binary_roc", "torchmetrics", "verification", _our_roc, _torchmetrics_roc,
         _agree_roc_rates, "FAR and TAR within 1e-7 at every point (it returns float32)"),
    Pair("torchmetrics-binary_auroc", "torchmetrics", "verification", _our_auc,
         _torchmetrics_auc, _agree_float32, "absolute 1e-6 (it computes in float32)"),
    Pair("torchmetrics-binary_eer", "torchmetrics", "verification", _our_eer, _torchmetrics_eer,
         _agree_float32, "absolute 1e-6 (rule min_gap; it computes in float32)"),
    Pair("bob-eer", "bob.measure", "verification", _our_eer, _bob_eer, _agree_eer,
         "absolute 1e-12 (rule min_gap)"),
    Pair("bob-far_threshold", "bob.measure", "verification", _our_tar_floor,
         _bob_tar_far_threshold, _agree_tar_floor,
         "identical achieved FAR; TAR = bob's + the genuine pairs between bob's threshold and "
         "the next impostor score, exactly (rule floor)"),
    Pair("bob-cmc-dir", "bob.measure", "lists", _our_identification, _bob_identification,
         _agree_identification, "CMC, DIR@FPIR threshold/DIR/FPIR, DIR and FPIR at 0.5: 1e-12"),
    Pair("faiss-IndexFlatIP", "faiss", "gallery", _our_topk, _faiss_topk, _agree_topk,
         "scores 1e-5; differing indices only at near-ties within 1e-5"),
    Pair("pytorch_fid-frechet", "pytorch_fid", "stats", _our_frechet, _pytorch_fid_frechet,
         _agree_frechet, "relative 1e-6"),
    Pair("skimage-psnr", "skimage", "images", _our_psnr, _skimage_psnr, _agree_psnr,
         "1e-6 dB per image"),
    Pair("skimage-ssim", "skimage", "images", _our_ssim, _skimage_ssim, _agree_ssim,
         "1e-6 per image (matched window and padding)"),
    Pair("torchmetrics-psnr", "torchmetrics", "images", _our_psnr, _torchmetrics_psnr,
         _agree_psnr_float32, "1e-4 dB per image (float32 input)"),
    Pair("torchmetrics-ssim", "torchmetrics", "images", _our_ssim, _torchmetrics_ssim,
         _agree_ssim_float32, "1e-5 per image (float32 input; matched window and padding)"),
]}
