"""Screening decisions: the threshold at a target FPR (exact on hand-built scores with ties and
fpr * n at integer boundaries, the definition in alignscope._reference, the Beta upper bound
against closed forms, scipy and its coverage), the few-shot model (rank features against
their definition, the fit against its optimality conditions and an independent optimiser,
invariance to monotone rescaling, recovery of a planted rule), and `screen --target-fpr
--reference-clean` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignscope import _reference as ref
from alignscope.cli import main
from alignscope.io import write_store
from alignscope.screen import few_shot, threshold_at_fpr
from alignscope.screen.decisions import fpr_upper_bound, rank_features, read_row_ids

# --- threshold_at_fpr ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "fpr", "value", "n_above"),
    [
        # 10 distinct: 2 may lie above, so the 3rd largest
        (np.arange(1.0, 11.0), 0.2, 8.0, 2),
        # 0.1 * 10 = 1 exactly: one above
        (np.arange(1.0, 11.0), 0.1, 9.0, 1),
        # 0.19 * 10 = 1.9: still one
        (np.arange(1.0, 11.0), 0.19, 9.0, 1),
        # three tie at the top and only two may lie above: the tie is the threshold, and
        # nothing is flagged (">" never splits a tie)
        (np.array([0, 0, 1, 1, 1, 1, 2, 3, 3, 3.0]), 0.2, 3.0, 0),
        # two tie at the top and two may lie above: the next value, both flagged
        (np.array([0, 0, 1, 1, 1, 1, 2, 2, 3, 3.0]), 0.2, 2.0, 2),
        # a tie straddling the cut: the 3rd largest (1) ties with the 4th to 6th
        (np.array([0, 0, 1, 1, 1, 1, 2, 5, 7, 9.0]), 0.2, 5.0, 2),
        (np.array([0, 0, 1, 1, 1, 1, 1, 1, 7, 9.0]), 0.2, 1.0, 2),
        # 0.29 * 100 = 28.999999999999996 and 0.07 * 100 = 7.000000000000001: the share decides
        (np.arange(100.0), 0.29, 70.0, 29),
        (np.arange(100.0), 0.07, 92.0, 7),
        # negative scores, order not sorted
        (np.array([-0.5, -3.0, -0.1, -2.0, -1.0]), 0.4, -1.0, 2),
    ],
)
def test_threshold_on_hand_built_scores(values, fpr, value, n_above):
    cut = threshold_at_fpr(values, fpr)
    assert cut.value == value
    assert cut.n_above == n_above == int((values > value).sum())
    assert cut.value == ref.fpr_threshold_definition(values, fpr)
    assert (cut.basis, cut.n_reference, cut.fpr_upper_bound) == ("score-distribution", None, None)
    np.testing.assert_array_equal(cut.flags(values), values > value)


@pytest.mark.parametrize("seed", range(4))
def test_threshold_is_the_definition_with_heavy_ties(seed):
    """Scores rounded to a few values (heavy ties) at rates whose fpr * n lands on, just
    under and just over integers."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 120))
    values = np.round(rng.normal(size=n), 1)
    for fpr in (0.05, 0.1, 0.29, 0.07, 3 / n, 3 / n - 1e-12, 0.5):
        want = ref.fpr_threshold_definition(values, fpr)
        assert threshold_at_fpr(values, fpr).value == want, (n, fpr)


def test_reference_rows_alone_set_the_threshold():
    """Only the trusted rows count: the other rows (here far higher) do not move it, and a
    mask, indices and repeated indices give the same threshold."""
    rng = np.random.default_rng(5)
    score = rng.normal(size=300)
    trusted = rng.choice(300, 120, replace=False)
    score[np.setdiff1d(np.arange(300), trusted)] += 10.0
    mask = np.zeros(300, dtype=bool)
    mask[trusted] = True
    cut = threshold_at_fpr(score, 0.05, reference=trusted)
    assert cut.value == ref.fpr_threshold_definition(score[trusted], 0.05)
    assert (cut.basis, cut.n_reference, cut.n_above) == ("reference-clean", 120, 6)
    assert threshold_at_fpr(score, 0.05, reference=mask) == cut
    assert threshold_at_fpr(score, 0.05, reference=np.r_[trusted, trusted[:7]]) == cut
    assert threshold_at_fpr(score, 0.05, reference=list(trusted)) == cut


def test_upper_bound_closed_forms_and_scipy():
    """k = 0 and k = n - 1 have closed forms (Beta(1, n) and Beta(n, 1)); other k against
    scipy's Beta quantile; the bound a reference threshold reports is the one of its k."""
    for n in (1, 7, 100, 5000):
        assert fpr_upper_bound(n, 0) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-12)
        assert fpr_upper_bound(n, n - 1, 0.9) == pytest.approx(0.9 ** (1 / n), rel=1e-12)
        assert fpr_upper_bound(n, n) == 1.0
    beta = pytest.importorskip("scipy.stats").beta
    for n, k, conf in [(100, 1, 0.95), (500, 5, 0.95), (2000, 99, 0.99), (10**6, 10**4, 0.95)]:
        assert fpr_upper_bound(n, k, conf) == pytest.approx(beta.ppf(conf, k + 1, n - k), rel=1e-9)
    cut = threshold_at_fpr(np.arange(1000.0), 0.01, reference=np.arange(500))
    assert cut.fpr_upper_bound == pytest.approx(beta.ppf(0.95, 6, 495), rel=1e-9)


def test_upper_bound_covers_the_realised_rate():
    """Its meaning: over many draws of 200 clean reference scores (uniform, so a rule
    ``score > t`` flags a share 1 - t of clean rows), the realised rate exceeds the 95% bound
    in 5% of the draws (4000 draws: 0.05 +- 0.0034 sd)."""
    rng = np.random.default_rng(0)
    draws = rng.random((4000, 200))
    cuts = [threshold_at_fpr(d, 0.02, reference=np.arange(200)) for d in draws[:3]]
    bound = cuts[0].fpr_upper_bound
    assert all(c.fpr_upper_bound == bound for c in cuts)
    realised = 1.0 - np.sort(draws, axis=1)[:, 200 - 5]  # the 5th largest: 4 may lie above
    assert cuts[0].value == np.sort(draws[0])[195]
    assert abs(np.mean(realised > bound) - 0.05) < 0.015


@pytest.mark.parametrize(
    ("n", "fpr", "reference", "message"),
    [
        (
            200,
            0.01,
            np.arange(50),
            "a threshold at 0.01 FPR needs at least 100 trusted clean rows (n * fpr >= 1), got "
            "50: with fewer it could not flag a single one of them",
        ),
        (
            200,
            0.07,
            np.arange(14),
            "a threshold at 0.07 FPR needs at least 15 trusted clean rows (n * fpr >= 1), got 14",
        ),
        (
            10,
            0.05,
            None,
            "a threshold at 0.05 FPR needs at least 20 rows (n * fpr >= 1), got 10",
        ),
        (10, 0.0, None, "fpr must be in (0, 1), got 0.0"),
        (10, 1.0, None, "fpr must be in (0, 1), got 1.0"),
        (10, float("nan"), None, "fpr must be in (0, 1), got nan"),
        (10, 0.5, np.array([3, 10]), "reference: row 10 is out of range [0, 10)"),
        (10, 0.5, np.array([-1]), "reference: row -1 is out of range [0, 10)"),
        (
            10,
            0.5,
            np.ones(4, dtype=bool),
            "reference: a bool mask must have one entry per row, shape (10,); got (4,)",
        ),
        (
            10,
            0.5,
            np.array([0.5, 1.0]),
            "reference: expected a 1-D sequence of integer row indices or a bool mask; got "
            "dtype float64, shape (2,)",
        ),
    ],
)
def test_threshold_refusals(n, fpr, reference, message):
    with pytest.raises(ValueError) as exc:
        threshold_at_fpr(np.arange(float(n)), fpr, reference=reference)
    assert str(exc.value).startswith(message)
    # 14 rows fall short at 0.07 and 15 are enough: the count in the message is exact
    if fpr == 0.07:
        threshold_at_fpr(np.arange(float(n)), fpr, reference=np.arange(15))


def test_fewest_rows_when_one_over_fpr_rounds_up():
    """1 / (1 / 49) is 49.00000000000001 in floats: 49 rows are enough (1 / 49 <= fpr), and
    the message must not ask for 50."""
    fpr = 1 / 49
    assert threshold_at_fpr(np.arange(49.0), fpr).value == 47.0
    with pytest.raises(ValueError, match=r"needs at least 49 rows \(n \* fpr >= 1\), got 48"):
        threshold_at_fpr(np.arange(48.0), fpr)


def test_threshold_rejects_non_finite_scores():
    with pytest.raises(ValueError, match=r"^score contains NaN or inf$"):
        threshold_at_fpr(np.array([0.0, np.nan, 1.0]), 0.5)


def test_read_row_ids(tmp_path):
    ids = ["a", "b", "c", "b", "x y"]
    listing = tmp_path / "clean.txt"
    listing.write_text("# trusted rows\n\n  c \na\n#b\nx y\na\n", encoding="utf-8")
    assert read_row_ids(listing, ids).tolist() == [0, 2, 4]
    listing.write_text("b\n", encoding="utf-8")  # an id shared by two rows selects both
    assert read_row_ids(listing, ids).tolist() == [1, 3]
    listing.write_text("a\n\n# c\nd\n", encoding="utf-8")
    with pytest.raises(ValueError) as exc:
        read_row_ids(listing, ids)
    assert str(exc.value) == f"{listing}:4: unknown id 'd' (not an id of the store)"
    listing.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(ValueError) as exc:
        read_row_ids(listing, ids)
    assert str(exc.value) == f"{listing}: lists no id"


# --- few_shot --------------------------------------------------------------------------------


def _planted(n, seed):
    """Three scores on different scales and a rule on their rank features: P(poisoned) =
    sigmoid(w . features + b), w = (2, -1, 0). The rule's features are written out here:
    "a" and "b" have no ties, so a row's rank is its position in the sorted order; "c" has
    ties but weight 0. Returns (scores, poisoned, w, b, the rule's (N,) log-odds)."""
    rng = np.random.default_rng(seed)
    raw = {
        "a": rng.normal(size=n),
        "b": np.exp(rng.normal(size=n)),
        "c": np.round(rng.random(size=n), 2),  # ties
    }
    w, b = np.array([2.0, -1.0, 0.0]), -2.0
    logit = np.zeros(n)
    for name, weight in (("a", w[0]), ("b", w[1])):
        cdf = (np.argsort(np.argsort(raw[name])) + 0.5) / n
        logit += weight * np.log(cdf / (1.0 - cdf))
    rule = logit + b
    poisoned = rng.random(n) < 1.0 / (1.0 + np.exp(-rule))
    return raw, poisoned, w, b, rule


def test_rank_features_are_the_logit_of_the_mean_rank_cdf():
    raw, *_ = _planted(150, seed=1)
    names, x = rank_features(raw)
    assert names == ("a", "b", "c")
    np.testing.assert_allclose(x, ref.rank_logit_features(raw), rtol=0, atol=1e-12)


def _objective_gradient(beta, x, y, lam):
    """The penalised negative log-likelihood's gradient, written out."""
    z = beta[0] + x @ beta[1:]
    p = 1.0 / (1.0 + np.exp(-z))
    return np.concatenate([[np.sum(p - y)], x.T @ (p - y) + lam * beta[1:]])


@pytest.mark.parametrize("lam", [0.1, 1.0, 30.0])
def test_fit_is_the_penalised_optimum(lam):
    """Its gradient vanishes at the returned coefficients, and an independent optimiser
    (scipy's BFGS on the objective as written) finds the same point."""
    raw, poisoned, *_ = _planted(200, seed=2)
    poisons, clean = np.flatnonzero(poisoned)[:6], np.flatnonzero(~poisoned)[:25]
    model = few_shot(raw, poisons, clean, regularization=lam)
    x = ref.rank_logit_features(raw)[np.r_[poisons, clean]]
    y = np.r_[np.ones(6), np.zeros(25)]
    beta = np.r_[model.intercept, model.coef]
    assert np.max(np.abs(_objective_gradient(beta, x, y, lam))) < 1e-9
    optimize = pytest.importorskip("scipy.optimize")

    def objective(b):
        z = b[0] + x @ b[1:]
        return np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * lam * np.sum(b[1:] ** 2)

    found = optimize.minimize(
        objective,
        np.zeros(4),
        jac=lambda b: _objective_gradient(b, x, y, lam),
        method="BFGS",
        options={"gtol": 1e-10},
    )
    np.testing.assert_allclose(beta, found.x, rtol=0, atol=1e-6)


def test_few_shot_is_invariant_to_monotone_rescaling():
    raw, poisoned, *_ = _planted(300, seed=3)
    poisons, clean = np.flatnonzero(poisoned)[:5], np.flatnonzero(~poisoned)[:20]
    model = few_shot(raw, poisons, clean)
    rescaled = {
        "a": 1e6 * raw["a"] ** 3 - 7.0,
        "b": np.log(raw["b"]),
        "c": 1.0 / (1.0 + np.exp(-40.0 * (raw["c"] - 0.5))),  # a steep sigmoid keeps the ties
    }
    again = few_shot(rescaled, poisons, clean)
    np.testing.assert_array_equal(again.score(), model.score())
    assert model.score().shape == (300,)
    p = model.probability()
    np.testing.assert_allclose(p, 1.0 / (1.0 + np.exp(-model.score())), rtol=1e-12)
    # a mask gives the same model as indices
    mask = np.zeros(300, dtype=bool)
    mask[poisons] = True
    np.testing.assert_array_equal(few_shot(raw, mask, clean).score(), model.score())


def test_few_shot_recovers_a_planted_rule():
    """With every row labelled (N = 4000) the weights approach the planted ones (standard
    error about 0.05 each); with 8 poisons and 30 clean rows the model still ranks the
    unlabelled rows by the planted rule's direction far better than chance."""
    raw, poisoned, w, b, rule = _planted(4000, seed=4)
    model = few_shot(raw, poisoned, ~poisoned)
    np.testing.assert_allclose(model.coef, w, rtol=0, atol=0.2)
    assert model.intercept == pytest.approx(b, abs=0.3)
    poisons, clean = np.flatnonzero(poisoned)[:8], np.flatnonzero(~poisoned)[:30]
    small = few_shot(raw, poisons, clean)
    assert small.coef[0] > 0 > small.coef[1]
    rest = np.ones(4000, dtype=bool)
    rest[poisons] = rest[clean] = False
    # the planted rule's own AUROC is the ceiling; 8 + 30 labels get within 80% of its lift
    ceiling = ref.detection_auroc(rule[rest][::8], poisoned[rest][::8])
    got = ref.detection_auroc(small.score()[rest][::8], poisoned[rest][::8])
    assert got > 0.5 + 0.8 * (ceiling - 0.5)


def test_probabilities_do_not_overflow():
    raw = {"a": np.arange(40.0)}
    model = few_shot(raw, [38, 39, 37], [0, 1, 2, 3], regularization=1e-6)
    assert np.all(np.isfinite(model.probability()))
    assert model.probability()[39] > 0.999 and model.probability()[0] < 1e-3


@pytest.mark.parametrize(
    ("scores", "poisons", "clean", "kwargs", "message"),
    [
        ({}, [0, 1], [2, 3], {}, "scores: give at least one score"),
        (
            {"a": np.zeros(10), "b": np.zeros(9)},
            [0, 1],
            [2, 3],
            {},
            "scores['b']: expected a 1-D array of 10 values, got shape (9,)",
        ),
        (
            {"a": np.zeros((10, 1))},
            [0, 1],
            [2, 3],
            {},
            "scores['a']: expected a non-empty 1-D array, got shape (10, 1)",
        ),
        (
            {"a": np.r_[np.zeros(9), np.inf]},
            [0, 1],
            [2, 3],
            {},
            "scores['a']: contains NaN or inf",
        ),
        ({"a": np.arange(10.0)}, [0], [2, 3], {}, "poisons: needs at least 2 distinct rows, got 1"),
        (
            {"a": np.arange(10.0)},
            [0, 1],
            [2, 2],
            {},
            "clean: needs at least 2 distinct rows, got 1",
        ),
        ({"a": np.arange(10.0)}, [0, 10], [2, 3], {}, "poisons: row 10 is out of range [0, 10)"),
        ({"a": np.arange(10.0)}, [0, 1], [2, -3], {}, "clean: row -3 is out of range [0, 10)"),
        (
            {"a": np.arange(10.0)},
            [0, 1, 2, 3],
            [3, 1, 5],
            {},
            "poisons and clean share rows [1, 3]: a row cannot be both",
        ),
        (
            {"a": np.arange(10.0)},
            ["0", "1"],
            [2, 3],
            {},
            "poisons: expected a 1-D sequence of integer row indices or a bool mask; got "
            "dtype <U1, shape (2,)",
        ),
        (
            {"a": np.arange(10.0)},
            [0, 1],
            [2, 3],
            {"regularization": 0.0},
            "regularization must be > 0, got 0.0",
        ),
    ],
)
def test_few_shot_refusals(scores, poisons, clean, kwargs, message):
    with pytest.raises(ValueError) as exc:
        few_shot(scores, poisons, clean, **kwargs)
    assert str(exc.value) == message


# --- screen --target-fpr --reference-clean ---------------------------------------------------

N = 120


def _ids(rows):
    return [f"pair-{i:03d}" for i in rows]


@pytest.fixture(scope="module")
def world(tmp_path_factory, pairs):
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("screen_fpr")
    image, text, _ = pairs(N, 12, seed=8)
    write_store(root / "store", image, text, metadata={"id": _ids(range(N))}, dtype=np.float32)
    truth = np.random.default_rng(8).random(N) < 0.2
    np.save(root / "truth.npy", truth)
    k_distance = ref.screening_scores(image, text, scores=("k_distance",), k=10)["k_distance"]
    return {"root": root, "truth": truth, "k_distance": k_distance}


def _screen(world, out, *options):
    argv = ["screen", str(world["root"] / "store"), "--out", str(world["root"] / out)]
    return main([*argv, "--scores", "k_distance", *options])


def test_target_fpr_from_reference_clean(world, capsys):
    """The threshold of the listed trusted rows' reference k-distances; rows above it removed;
    summary.json's removal, the realised FPR, keep.txt and the report's sentence."""
    truth, score = world["truth"], world["k_distance"]
    trusted = np.flatnonzero(~truth)[::2]  # half the clean rows
    listing = world["root"] / "clean.txt"
    lines = ["# trusted by hand", "", *(f"  {i}" for i in _ids(trusted[::-1]))]
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    want = ref.fpr_threshold_definition(score[trusted], 0.05)
    gaps = np.abs(score - want)
    assert np.all((gaps == 0) | (gaps > 1e-5))  # float32 engine: no row within 1e-5 of the cut
    fpr = ["--target-fpr", "0.05", "--reference-clean", str(listing), "--manifest"]
    assert _screen(world, "ref", *fpr, str(world["root"] / "truth.npy"), "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    removed = score > want
    k = int(np.floor(0.05 * trusted.size))
    removal = dict(summary["removal"])
    assert removal.pop("threshold") == pytest.approx(want, abs=1e-6)
    assert removal.pop("fpr_upper_bound") == pytest.approx(fpr_upper_bound(trusted.size, k))
    assert removal == {
        "rule": "target_fpr",
        "fpr": 0.05,
        "basis": "reference-clean",
        "n_reference": int(trusted.size),
        "confidence": 0.95,
        "removed": int(removed.sum()),
        "kept": N - int(removed.sum()),
        "poisons_removed": int((removed & truth).sum()),
        "benign_removed": int((removed & ~truth).sum()),
        "realised_fpr": float(np.mean(removed[~truth])),
    }
    assert json.loads((world["root"] / "ref" / "summary.json").read_text()) == summary
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(world["root"] / "ref" / "scores.parquet").to_pydict()
    assert table["removed"] == removed[table["row"]].tolist()
    keep = (world["root"] / "ref" / "keep.txt").read_text(encoding="utf-8")
    assert keep == "".join(f"{i}\n" for i in _ids(np.flatnonzero(~removed)))
    report = (world["root"] / "ref" / "report.html").read_text(encoding="utf-8")
    bound = 100 * fpr_upper_bound(trusted.size, k)
    assert (
        f"removed the pairs scoring above {summary['removal']['threshold']:g}, the threshold at "
        f"5% FPR estimated from {trusted.size} trusted clean rows (with 95% confidence the FPR "
        f"is at most {bound:.2g}%): {int(removed.sum())} removed"
    ) in report


def test_target_fpr_from_the_score_distribution(world, capsys):
    """Without a reference: the quantile of all rows; no bound; the printed line."""
    score = world["k_distance"]
    want = ref.fpr_threshold_definition(score, 0.1)
    gaps = np.abs(score - want)
    assert np.all((gaps == 0) | (gaps > 1e-5))
    assert _screen(world, "dist", "--target-fpr", "0.1") == 0
    out = world["root"] / "dist"
    summary = json.loads((out / "summary.json").read_text())
    removal = dict(summary["removal"])
    assert removal.pop("threshold") == pytest.approx(want, abs=1e-6)
    assert removal == {
        "rule": "target_fpr",
        "fpr": 0.1,
        "basis": "score-distribution",
        "n_reference": None,
        "fpr_upper_bound": None,
        "confidence": 0.95,
        "removed": 12,
        "kept": N - 12,
    }
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0] == (
        f"threshold at 0.1 FPR: {summary['removal']['threshold']:.6g} (from the distribution "
        "of all rows)"
    )
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "the threshold at 10% FPR estimated from the scores of all rows" in report
    # another rate into the same folder is another run: refused, naming the setting
    assert _screen(world, "dist", "--target-fpr", "0.2") == 2
    err = capsys.readouterr().err
    assert "holds the output of another run" in err and "target_fpr" in err


def test_another_reference_file_is_another_run(world, tmp_path, capsys):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("\n".join(_ids(range(0, 40))) + "\n")
    second.write_text("\n".join(_ids(range(1, 41))) + "\n")
    assert _screen(world, "refs", "--target-fpr", "0.05", "--reference-clean", str(first)) == 0
    assert _screen(world, "refs", "--target-fpr", "0.05", "--reference-clean", str(second)) == 2
    err = capsys.readouterr().err
    assert "holds the output of another run" in err and "reference_clean" in err
    # the same ids in another order (and with a comment) are the same run: resumed
    first.write_text("# same rows\n" + "\n".join(_ids(range(39, -1, -1))) + "\n")
    assert _screen(world, "refs", "--target-fpr", "0.05", "--reference-clean", str(first)) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--target-fpr", "0.1", "--threshold", "0.5"],
            "give --threshold or --target-fpr, not both",
        ),
        (
            ["--target-fpr", "0.1", "--remove-fraction", "0.1"],
            "give --remove-fraction or --target-fpr, not both",
        ),
        (
            ["--target-fpr", "0.1", "--remove-fraction", "0.1", "--threshold", "1"],
            "give one of --remove-fraction, --threshold and --target-fpr, not all",
        ),
        (["--target-fpr", "1.5"], "--target-fpr must be in (0, 1), got 1.5"),
        (["--target-fpr", "0"], "--target-fpr must be in (0, 1), got 0.0"),
        (["--reference-clean", "{r}/clean.txt"], "--reference-clean needs --target-fpr"),
        (
            ["--target-fpr", "0.1", "--reference-clean", "{r}/missing.txt"],
            "--reference-clean: '{r}/missing.txt' does not exist",
        ),
        (
            ["--target-fpr", "0.1", "--reference-clean", "{r}/unknown.txt"],
            "--reference-clean: {r}/unknown.txt:3: unknown id 'pair-999' (not an id of the store)",
        ),
        (
            ["--target-fpr", "0.1", "--reference-clean", "{r}/clean.txt"],
            "a threshold at 0.1 FPR needs at least 10 trusted clean rows (n * fpr >= 1), got 3: "
            "with fewer it could not flag a single one of them",
        ),
        (
            ["--target-fpr", "0.01"],
            "a threshold at 0.01 FPR needs at least 100 rows (n * fpr >= 1), got 20: with "
            "fewer it could not flag a single one of them",
        ),
    ],
)
def test_bad_fpr_options_exit_2(tmp_path, options, message, capsys):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    write_store(
        tmp_path / "s", rng.normal(size=(20, 4)), rng.normal(size=(20, 4)),
        metadata={"id": _ids(range(20))},
    )  # fmt: skip
    (tmp_path / "clean.txt").write_text("pair-000\npair-001\npair-002\npair-001\n")
    (tmp_path / "unknown.txt").write_text("pair-000\n# pair-999\npair-999\n")
    argv = ["screen", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--scores", "alignment"]
    assert main([*argv, *(o.format(r=tmp_path) for o in options)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"alignscope: error: {message.format(r=tmp_path)}\n"
    assert not (tmp_path / "o" / "summary.json").exists()
