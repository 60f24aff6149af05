"""Accuracy regression of the shipped reference checkpoints (issue 6).

Every checkpoint under baselines/ loads with its sha256 checked against its card, and
re-evaluating it on synthmask reproduces the metrics recorded in reports/results/ within 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from meerbench.engine.evaluate import evaluate
from meerbench.io import sha256_file
from meerbench.models import load_model

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ("arcface-s", "arcface-s-maskaug", "from-s", "meer-s")


def headline(result: dict) -> dict[str, float]:
    """The numbers a paper quotes, flattened: accuracy, AUC, EER, TAR@FAR, rank-1, DIR."""
    out = {}
    for cond, m in result["metrics"]["verification"].items():
        out[f"{cond}/accuracy"] = m["accuracy"]["mean"]
        out[f"{cond}/auc"] = m["auc"]["value"]
        out[f"{cond}/eer"] = m["eer"]["value"]
        out.update({f"{cond}/tar@{t['target']}": t["tar"] for t in m["tar_at_far"]})
    ident = result["metrics"]["identification"]
    out["rank1"] = ident["rank"]["1"]
    out.update({f"dir@{d['fpir_target']}": d["dir"] for d in ident["dir_at_fpir"]})
    return out


@pytest.mark.parametrize("name", REFERENCE)
def test_checkpoint_matches_its_card(name):
    folder = ROOT / "baselines" / name
    card = yaml.safe_load((folder / "card.yaml").read_text())
    assert sha256_file(folder / "model.safetensors") == card["weights"]["sha256"]
    assert (folder / "model.sha256").read_text().split()[0] == card["weights"]["sha256"]
    assert (folder / "model.safetensors").stat().st_size <= 25 * 2**20
    assert card["schema"] == 2 and card["architecture"] == "meer"
    model = load_model(name)
    contract = {k: v for k, v in model.cfg.to_dict().items() if k != "weights"}
    assert json.loads(json.dumps(contract)) == card["contract"]


@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCE)
def test_reevaluation_reproduces_recorded_metrics(name, tmp_path):
    recorded = json.loads((ROOT / "reports" / "results" / f"{name}__synthmask.json").read_text())
    fresh = evaluate(name, "synthmask@1", out_dir=tmp_path, progress=False).to_dict()
    assert fresh["protocol"]["lists"] == recorded["protocol"]["lists"]
    assert fresh["model"]["weights_sha256"] == recorded["model"]["weights_sha256"]
    was, now = headline(recorded), headline(fresh)
    assert was.keys() == now.keys()
    moved = {k: (was[k], now[k]) for k in was if abs(was[k] - now[k]) > 1e-6}
    assert not moved, f"{name} on synthmask moved: {moved}"
