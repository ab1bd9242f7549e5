"""The model-release check (trustspace.federated.disclosure) on synthetic class probabilities,
with the real sacroml in its subprocess; the split, the model's digest and encoding, and what
an app and a product declare of per-round metrics."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trustspace.federated import LOGREG_APP
from trustspace.federated.disclosure import (
    MAX_MODEL_BYTES,
    CheckFailed,
    MembershipRule,
    ModelInvalid,
    ReleasePolicy,
    allowed_metrics,
    check,
    declared_metrics,
    decode_model,
    encode_model,
    holdout_split,
    model_digest,
)
from trustspace.registry.products import FederatedOffer
from trustspace.sandbox.fl_jobs import _release_refusal, release_policy

MEMBERS, NONMEMBERS = 200, 50


def _confident(labels: np.ndarray, low: float, high: float,
               rng: np.random.Generator) -> np.ndarray:
    """Rows x [P(0), P(1)] giving the true class a probability within [low, high]."""
    p = rng.uniform(low, high, len(labels))
    return np.where(labels[:, None] == np.arange(2), p[:, None], 1.0 - p[:, None])


def _without_timing(findings: Any) -> dict[str, Any]:
    return {k: v for k, v in findings.items() if k != "seconds"}


def test_an_overfit_model_fails_the_check() -> None:
    rng = np.random.default_rng(1)
    members = _confident(rng.integers(0, 2, MEMBERS), 0.97, 1.0, rng)  # memorised
    nonmembers = rng.dirichlet([1.0, 1.0], NONMEMBERS)  # anything at all
    verdict = check(members, nonmembers, MembershipRule(), seed="urn:uuid:job-1")
    assert not verdict.passed, verdict
    assert verdict.reason.startswith("sacroml 2.0.1 worst-case attack: mean AUC ")
    assert verdict.findings["auc"]["mean"] > 0.9
    assert verdict.findings["significantReps"] == verdict.findings["reps"] == 10
    assert (verdict.findings["members"], verdict.findings["nonMembers"]) == (MEMBERS,
                                                                              NONMEMBERS)


def test_a_model_that_treats_members_and_others_alike_passes_and_the_verdict_repeats() -> None:
    rng = np.random.default_rng(2)
    same = _confident(rng.integers(0, 2, MEMBERS + NONMEMBERS), 0.5, 0.95, rng)
    rule = MembershipRule(holdout=0.2, max_auc=0.65)
    verdict = check(same[:MEMBERS], same[MEMBERS:], rule, seed="urn:uuid:job-2")
    assert verdict.passed, verdict
    assert 0.35 < verdict.findings["auc"]["mean"] <= 0.65
    assert verdict.to_json()["check"] == "membership-inference"
    again = check(same[:MEMBERS], same[MEMBERS:], rule, seed="urn:uuid:job-2")
    assert _without_timing(again.findings) == _without_timing(verdict.findings)


@pytest.mark.parametrize("bad", [np.full((40, 2), np.nan), np.full((40, 2), 1.5),
                                 np.zeros((5, 2)), np.zeros(40)])
def test_probabilities_that_are_not_probabilities_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(CheckFailed):
        check(bad, np.full((40, 2), 0.5), MembershipRule(), seed="s", timeout=5)


def test_the_holdout_is_a_deterministic_share_of_the_rows_per_job() -> None:
    train, holdout = holdout_split(151, 0.2, "urn:uuid:a")
    assert (len(train), len(holdout)) == (121, 30)
    assert sorted([*train, *holdout]) == list(range(151))
    again = holdout_split(151, 0.2, "urn:uuid:a")
    assert (again[0] == train).all() and (again[1] == holdout).all()
    assert not (holdout_split(151, 0.2, "urn:uuid:b")[1] == holdout).all()


def test_the_model_digest_covers_names_dtypes_and_shapes() -> None:
    w = np.arange(6, dtype=np.float64)
    digest = model_digest({"weights": w})
    assert digest.startswith("sm3:") and len(digest) == 68
    assert model_digest({"weights": w.copy()}) == digest
    assert model_digest({"weights": w.reshape(2, 3)}) != digest
    assert model_digest({"w": w}) != digest
    assert model_digest({"weights": w.astype(np.float32)}) != digest


def test_a_model_travels_as_an_npz_and_nothing_else_is_taken() -> None:
    arrays = {"weights": np.linspace(0, 1, 31), "mean": np.ones(30)}
    raw, back = decode_model(encode_model(arrays))
    assert model_digest(back) == model_digest(arrays) and raw[:2] == b"PK"
    pickled = io.BytesIO()
    np.savez(pickled, w=np.array([{"a": 1}], dtype=object))
    big = base64.b64encode(b"\0" * (MAX_MODEL_BYTES + 1)).decode()
    for bad in (base64.b64encode(pickled.getvalue()).decode(), big, "not base64!", 42,
                encode_model({"s": np.array(["text"])})):
        with pytest.raises(ModelInvalid):
            decode_model(bad)


def test_the_logreg_app_declares_its_metrics_and_ships_predict(tmp_path: Path) -> None:
    assert declared_metrics(LOGREG_APP) == {"train-loss", "train-accuracy", "eval-loss",
                                            "eval-accuracy"}
    assert (LOGREG_APP / "predict.py").is_file()
    (tmp_path / "pyproject.toml").write_text("[tool.trustspace]\nmetrics = 'all'\n")
    with pytest.raises(ValueError, match="list of metric names"):
        declared_metrics(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.flwr.app]\npublisher = 'x'\n")
    assert declared_metrics(tmp_path) is None


def test_a_product_releases_what_its_policy_says_and_refuses_the_rest(tmp_path: Path) -> None:
    def policy(release: dict[str, Any]) -> ReleasePolicy:
        offer = FederatedOffer.model_validate_json(json.dumps({"release": release}))
        return release_policy(offer.release)

    everything = ["train-loss", "train-accuracy", "eval-loss", "eval-accuracy"]
    assert _release_refusal(LOGREG_APP, policy({"metrics": everything})) is None
    assert _release_refusal(LOGREG_APP, release_policy(None)) is None
    refused = _release_refusal(LOGREG_APP, policy({"metrics": ["eval-accuracy"]}))
    assert refused == ("the app reports metrics the product does not release: eval-loss, "
                       "train-accuracy, train-loss")
    (tmp_path / "pyproject.toml").write_text("[tool.flwr.app]\npublisher = 'x'\n")
    assert "declares none" in str(_release_refusal(tmp_path, policy({"metrics": []})))
    mia = policy({"membership_inference": {"holdout": 0.3, "max_auc": 0.6}})
    assert mia.membership == MembershipRule(0.3, 0.6) and mia.metrics is None
    assert _release_refusal(LOGREG_APP, mia) is None
    assert "no predict.py" in str(_release_refusal(tmp_path, mia))
    assert policy({"membership_inference": {}}).membership == MembershipRule()


@pytest.mark.parametrize("release", [
    {"metrics": "eval-accuracy"}, {"metrics": ["eval accuracy"]},
    {"membership_inference": {"holdout": 0.9}}, {"membership_inference": {"max_auc": 1.5}},
    {"membership_inference": {"max_auc": "0.6"}}, {"membership_inference": {"auc": 0.6}},
    {"publish": True}])
def test_a_malformed_release_policy_is_refused_with_the_product(release: Any) -> None:
    with pytest.raises(ValueError, match="release"):  # pydantic's ValidationError
        FederatedOffer.model_validate_json(json.dumps({"release": release}))


def test_the_consumer_shows_the_metrics_every_provider_releases() -> None:
    assert allowed_metrics([None, None]) is None
    assert allowed_metrics([["a", "b"], None, ["b", "c"]]) == {"b"}
    assert allowed_metrics([[], ["a"]]) == frozenset()
