"""Detection metrics with heavy ties in asymmetric orders, against hand-counted values and the
brute-force enumerations of alignscope._reference (every poison x benign pair, every
threshold)."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope import _reference as ref
from alignscope.screen import auprc, auroc, evaluate_scores, tpr_at_fpr, tradeoff_curve

T, F = True, False
FPRS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.29, 0.5, 0.58, 1.0)


@pytest.mark.parametrize(
    ("score", "truth", "want"),
    [
        # All tied: every pair counts one half, whatever the order of the rows. Ordinal ranks
        # would give 0 for poisons listed first and 1 for poisons listed last.
        ([1, 1, 1, 1], [T, T, F, F], 0.5),
        ([1, 1, 1, 1], [F, F, T, T], 0.5),
        ([7, 7, 7, 7, 7], [T, F, F, F, F], 0.5),
        # poisons {0, 0, 1} vs benign {1, 1}: 4 pairs lose, 2 tie -> 1/6
        ([0, 0, 1, 1, 1], [T, T, T, F, F], 1 / 6),
        # poisons {1, 0} vs benign {1, 1}: 2 ties, 2 losses -> 1/4
        ([1, 1, 1, 0], [T, F, F, T], 1 / 4),
        # scores clipped to [0, 1]: poisons {1, 1, 0} vs benign {0, 0, 1}: 4 wins, 4 ties
        ([1, 0, 1, 0, 0, 1], [T, F, T, F, T, F], 6 / 9),
    ],
)
def test_auroc_counts_ties_as_one_half(score, truth, want):
    assert ref.detection_auroc(np.array(score), np.array(truth)) == pytest.approx(want)
    assert auroc(np.array(score, dtype=float), np.array(truth)) == pytest.approx(want)


@pytest.mark.parametrize(
    ("score", "truth", "want"),
    [
        # All tied: a single group whose precision is 2/4, whatever the row order (ungrouped
        # ranks would give 1 with the poisons first, (1/3 + 2/4) / 2 with them last).
        ([1, 1, 1, 1], [T, T, F, F], 0.5),
        ([1, 1, 1, 1], [F, F, T, T], 0.5),
        # poison at 1 flags {2, 1, 1, 1}: 1/4; poison at 0 flags everything: 2/5
        ([2, 1, 1, 1, 0], [F, T, F, F, T], (1 / 4 + 2 / 5) / 2),
        ([0, 1, 1, 2, 1], [T, F, T, F, F], (1 / 4 + 2 / 5) / 2),
        # clipped scores: poisons at 1 flag {1, 1, 1}: 2/3 each; poison at 0 flags all: 3/6
        ([1, 0, 1, 0, 0, 1], [T, F, T, F, T, F], (2 / 3 + 2 / 3 + 1 / 2) / 3),
    ],
)
def test_auprc_groups_tied_scores(score, truth, want):
    assert ref.detection_auprc(np.array(score), np.array(truth)) == pytest.approx(want)
    assert auprc(np.array(score, dtype=float), np.array(truth)) == pytest.approx(want)


@pytest.mark.parametrize(
    ("score", "truth", "fpr", "want"),
    [
        # benign {3, 2, 1}, poison {2}, 1/3 FPR: the rule "> 2" flags one benign sample; the
        # poison ties with the threshold and is not flagged (">= 2" would flag 2/3 of benign).
        ([3, 2, 1, 2], [F, F, F, T], 1 / 3, 0.0),
        ([3, 2, 1, 2], [F, F, F, T], 2 / 3, 1.0),
        # benign {3, 1}, poisons {3, 2}: FPR 0 allows "> 3" only
        ([3, 3, 2, 1], [T, F, T, F], 0.0, 0.0),
        ([3, 3, 2, 1], [T, F, T, F], 0.49, 0.0),
        ([3, 3, 2, 1], [T, F, T, F], 0.5, 1.0),
        # all tied: no rule flags a poison without flagging every benign sample
        ([1, 1, 1, 1], [T, T, F, F], 0.99, 0.0),
        ([1, 1, 1, 1], [T, T, F, F], 1.0, 1.0),
    ],
)
def test_tpr_at_fpr_flags_strictly_above_the_threshold(score, truth, fpr, want):
    assert ref.detection_tpr_at_fpr(np.array(score), np.array(truth), fpr) == want
    assert tpr_at_fpr(np.array(score, dtype=float), np.array(truth), fpr) == want


def test_tpr_at_fpr_allows_exactly_fpr_of_benign():
    """29 of 100 benign samples is 29%: allowed at FPR 0.29 although 0.29 * 100 rounds to
    28.999999999999996 in floating point."""
    benign = np.arange(100, dtype=float)  # the 29 highest are 71..99
    score = np.append(benign, 70.5)
    truth = np.append(np.zeros(100, dtype=bool), True)
    assert ref.detection_tpr_at_fpr(score, truth, 0.29) == 1.0
    assert tpr_at_fpr(score, truth, 0.29) == 1.0
    assert tpr_at_fpr(score, truth, 0.28) == 0.0


def test_tradeoff_removes_ties_with_the_last_poison():
    # removing the poison at 2 removes the benign sample tied with it (">=")
    curve = tradeoff_curve(np.array([2.0, 2.0, 1.0]), np.array([T, F, F]), points=2)
    assert curve == {"poison_removed": [0.0, 1.0], "benign_removed": [0.0, 0.5]}
    assert ref.detection_tradeoff(np.array([2, 2, 1]), np.array([T, F, F]), points=2) == curve


def test_tradeoff_points_are_exact_fractions_of_the_poisons():
    """With 10 poisons the 70% point removes 7 poisons, not 8 (0.7000000000000001 * 10 rounds
    up under ceil)."""
    # poisons at 20, 18, ..., 2 and a benign sample just below each: removing j poisons takes
    # j - 1 benign samples
    poisons = np.arange(20, 0, -2, dtype=float)
    score = np.concatenate([poisons, poisons - 1])
    truth = np.arange(20) < 10
    curve = tradeoff_curve(score, truth)
    want = ref.detection_tradeoff(score, truth)
    assert want["benign_removed"][70] == 6 / 10
    assert curve["benign_removed"] == pytest.approx(want["benign_removed"], abs=1e-15)
    assert curve["poison_removed"] == pytest.approx(want["poison_removed"], abs=1e-15)


def _assert_all_metrics_match(score, truth, points=101):
    assert auroc(score, truth) == pytest.approx(ref.detection_auroc(score, truth), abs=1e-12)
    assert auprc(score, truth) == pytest.approx(ref.detection_auprc(score, truth), abs=1e-12)
    for fpr in FPRS:
        assert tpr_at_fpr(score, truth, fpr) == ref.detection_tpr_at_fpr(score, truth, fpr), fpr
    got, want = tradeoff_curve(score, truth, points), ref.detection_tradeoff(score, truth, points)
    assert got["poison_removed"] == pytest.approx(want["poison_removed"], abs=1e-15)
    assert got["benign_removed"] == pytest.approx(want["benign_removed"], abs=1e-15)


def test_random_tied_integer_scores_match_brute_force():
    """Few distinct values, few rows, any order: ties everywhere, at every threshold."""
    rng = np.random.default_rng(2024)
    for _ in range(300):
        n = int(rng.integers(2, 25))
        truth = rng.random(n) < rng.uniform(0.1, 0.9)
        truth[rng.integers(n)] = True
        truth[rng.integers(n)] = False
        if truth.all() or not truth.any():
            continue
        levels = int(rng.choice([1, 2, 3, 6]))
        score = rng.integers(0, levels, size=n).astype(float)
        _assert_all_metrics_match(score, truth, points=int(rng.choice([2, 11, 101])))


def test_clipped_scores_with_many_exact_zeros_and_ones_match_brute_force():
    """As the paper profile's D_img:txt: a continuum in between, heavy ties at 0 and at 1."""
    rng = np.random.default_rng(7)
    truth = rng.random(200) < 0.2
    score = np.clip(rng.normal(0.5, 0.6, 200) + 0.3 * truth, 0.0, 1.0)
    assert (score == 0).sum() >= 20 and (score == 1).sum() >= 20
    _assert_all_metrics_match(score, truth)


def test_evaluate_scores_reports_every_metric_of_every_score():
    rng = np.random.default_rng(8)
    truth = rng.random(80) < 0.25
    scores = {
        "a": np.clip(rng.normal(0.5, 0.5, 80), 0, 1),
        "b": rng.integers(0, 4, 80).astype(float),
    }
    got = evaluate_scores(scores, truth)
    assert list(got) == ["a", "b"]
    for name, values in scores.items():
        want = ref.detection_metrics(values, truth)
        assert set(got[name]) == set(want)
        assert set(got[name]["tradeoff"]) == {"poison_removed", "benign_removed"}
        for key in ("auroc", "auprc"):
            assert got[name][key] == pytest.approx(want[key], abs=1e-12)
        for key in ("tpr_at_1pct_fpr", "tpr_at_5pct_fpr"):
            assert got[name][key] == want[key]
        for key in ("poison_removed", "benign_removed"):
            assert len(got[name]["tradeoff"][key]) == 101
            assert got[name]["tradeoff"][key] == pytest.approx(want["tradeoff"][key], abs=1e-15)
