"""meerbench agrees with the tools users know, on small identical inputs (tests/peers.py).

Each pair runs meerbench's public metric function and the peer package on the same data and
checks the agreement under the tolerance the pair states; a pair whose package is not installed
is skipped with the reason. The same pairs are timed at realistic sizes in
tests/benchmarks/test_bench_peers.py.
"""

from __future__ import annotations

import pytest
from peers import INPUTS, PAIRS, Pair, torch_images

SMALL = {
    "verification": {"n": 6000, "seed": 3},
    "gallery": {"n_probes": 300, "n_gallery": 3000, "dim": 64, "seed": 1},
    "lists": {"n_probes": 300, "n_gallery": 1000, "dim": 32, "seed": 5},
    "images": {"n": 20, "size": 48, "seed": 2},
    "stats": {"dims": 64, "n": 200, "seed": 4},
}


def _require(pair: Pair) -> None:
    pytest.importorskip(pair.package, reason=f"{pair.name}: peer package {pair.package!r} is not "
                                             "installed (pip install -e '.[bench]')")


@pytest.mark.parametrize("name", list(PAIRS))
def test_meerbench_agrees_with_peer(name: str) -> None:
    pair = PAIRS[name]
    _require(pair)
    inputs = INPUTS[pair.kind](**SMALL[pair.kind])
    measured = pair.agree(pair.ours(inputs), pair.peer(inputs), inputs)
    assert measured  # the check returns what it measured; a mismatch has already raised


def test_agreement_check_catches_a_different_rule() -> None:
    """The checks have teeth: sklearn's default roc_curve (intermediate points dropped) and
    torchmetrics' own SSIM mean (reflect-padded border included) are different definitions."""
    pytest.importorskip("sklearn")
    roc_pair = PAIRS["sklearn-roc_curve"]
    inputs = INPUTS["verification"](**SMALL["verification"])
    from sklearn.metrics import roc_curve

    dropped = roc_curve(inputs["labels"], inputs["scores"])
    with pytest.raises(AssertionError, match="ROC"):
        roc_pair.agree(roc_pair.ours(inputs), dropped, inputs)
    pytest.importorskip("torchmetrics")
    from torchmetrics.functional.image import structural_similarity_index_measure

    images = INPUTS["images"](**SMALL["images"])
    whole = structural_similarity_index_measure(*torch_images(images), sigma=1.5,
                                                data_range=255.0, reduction="none").numpy()
    ssim_pair = PAIRS["torchmetrics-ssim"]
    with pytest.raises(AssertionError, match="SSIM"):
        ssim_pair.agree(ssim_pair.ours(images), whole, images)
