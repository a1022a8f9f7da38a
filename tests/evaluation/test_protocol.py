"""The evaluation protocol: figures agree with the attacks that made them."""

from __future__ import annotations

import math

import pytest
import torch

import dlsec
from dlsec.attacks import PGD
from dlsec.errors import ConfigError, ModelError
from dlsec.evaluation import Protocol, evaluate


@pytest.fixture(scope="module")
def result(request):
    robust = request.getfixturevalue("robust_model_session")
    data = request.getfixturevalue("digits_test")
    return evaluate(robust, data.x[:100], data.y[:100], norm="linf", eps=0.1, model_name="tiny", data_name="digits")


def test_cascade_is_monotone_and_ends_at_robust_accuracy(result) -> None:
    accs = [s.robust_accuracy for s in result.attacks]
    assert accs == sorted(accs, reverse=True)
    assert accs[-1] == result.robust_accuracy
    assert [s.name for s in result.attacks] == ["apgd-ce", "apgd-t", "square"]
    assert result.attacks[0].attacked == round(result.clean_accuracy * result.n)
    for prev, s in zip(result.attacks, result.attacks[1:], strict=False):
        assert s.attacked == prev.attacked - prev.broken


def test_cascade_at_least_as_strong_as_pgd(robust_model, digits_test, result) -> None:
    x, y = digits_test.x[:100], digits_test.y[:100]
    pgd = PGD(norm="linf", eps=0.1, steps=100, restarts=2)(robust_model, x, y)
    assert result.robust_accuracy <= pgd.robust_accuracy
    assert result.robust_accuracy < result.clean_accuracy - 0.05


def test_distances_consistent_with_robust_accuracy(result) -> None:
    d = torch.tensor(result.distances)
    assert len(d) == result.n
    # Every point FMN broke within eps is a witness the cascade should also find (up to a point or two).
    fmn_robust = float((d > result.eps).float().mean())
    assert result.robust_accuracy <= fmn_robust + 0.02
    # Distances include the cascade's own adversarial examples, so the curve cannot claim more at eps.
    assert fmn_robust <= result.robust_accuracy + 1e-9
    assert math.isfinite(result.median_distance) and result.median_distance > 0


def test_json_document_has_the_interface_keys(result) -> None:
    doc = result.to_dict()
    for key in ("clean_accuracy", "robust_accuracy", "n", "eps", "norm", "seconds", "attacks", "flags"):
        assert key in doc
    assert doc["attacks"][0].keys() >= {"name", "robust_accuracy", "seconds"}
    assert doc["flags"] == list(result.flags)


def test_public_evaluate_matches_module_function(robust_model, digits_test) -> None:
    x, y = digits_test.x[:20], digits_test.y[:20]
    a = dlsec.evaluate(robust_model, x, y, norm="l2", eps=0.5, attacks=["fgsm"])
    b = evaluate(robust_model, x, y, norm="l2", eps=0.5, attacks=["fgsm"])
    assert a.robust_accuracy == b.robust_accuracy and a.clean_accuracy == b.clean_accuracy


def test_protocol_validation() -> None:
    with pytest.raises(ConfigError):
        Protocol(norm="l3", eps=0.1)
    with pytest.raises(ConfigError):
        Protocol(norm="linf", eps=-1)
    with pytest.raises(ConfigError, match="unknown attack"):
        Protocol(norm="linf", eps=0.1, attacks=("nope",))
    with pytest.raises(ConfigError, match="not a minimum-norm"):
        Protocol(norm="linf", eps=0.1, min_norm_attack="pgd")


def test_not_a_classifier_rejected(digits_test) -> None:
    from tests.models.factories import not_a_classifier

    with pytest.raises(ModelError, match="not a classifier"):
        evaluate(not_a_classifier(), digits_test.x[:4], digits_test.y[:4], eps=0.1)


def test_stage_presets_carry_their_budgets() -> None:
    from dlsec.evaluation import build_stage

    assert build_stage("apgd-t", "linf", 0.1, 0).n_target_classes == 3
    assert build_stage("apgd-t9", "linf", 0.1, 0).n_target_classes == 9
    assert build_stage("square", "l2", 0.5, 0).queries == 1000
    assert build_stage("square-5000", "l2", 0.5, 0).queries == 5000
    assert build_stage("apgd-dlr", "linf", 0.1, 0).loss == "dlr"
    assert build_stage("pgd", "linf", 0.1, 0).steps == 50
