"""The combined ranking (alignscope.screen.combine and compute_scores' "combined"): exact
upper tails and concentrations on constructed tables, rank invariance, float64 brute force
(alignscope._reference), the weights compute_scores reports, and the input errors."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope import _reference as ref
from alignscope.screen import compute_scores
from alignscope.screen.combine import TOP_SHARE, combined_score, concentration, upper_tail
from alignscope.screen.relative import alignment_residual, exact_knn
from alignscope.screen.scores import _distinct_neighbours
from alignscope.search.rows import Rows
from alignscope.synth import realistic_world


def test_upper_tail_counts_ties_as_at_least_as_high():
    got = upper_tail(np.array([3.0, 1.0, 3.0, 2.0, 5.0, 3.0]))
    np.testing.assert_array_equal(got, np.array([4, 6, 4, 5, 1, 4]) / 6)


def test_upper_tail_matches_definition_with_heavy_ties():
    score = np.round(np.random.default_rng(0).normal(size=200), 1)  # ~60 distinct values
    assert len(np.unique(score)) < 100
    np.testing.assert_array_equal(upper_tail(score), ref.upper_tail_definition(score))


@pytest.mark.parametrize(
    ("score", "message"),
    [
        (np.zeros((2, 3)), "a score must be a non-empty 1-D array, got shape (2, 3)"),
        (np.zeros(0), "a score must be a non-empty 1-D array, got shape (0,)"),
        (np.array([0.0, np.nan]), "a score contains NaN or inf; it cannot be ranked"),
        (np.array([0.0, np.inf]), "a score contains NaN or inf; it cannot be ranked"),
    ],
)
def test_upper_tail_rejects_what_cannot_be_ranked(score, message):
    with pytest.raises(ValueError) as err:
        upper_tail(score)
    assert str(err.value) == message


def _table(n, k, rows):
    """(n, k) neighbour table: rows[i] for the listed rows, the k rows after i (mod n) for the
    rest (only the top rows' entries matter)."""
    table = np.array([[(i + j) % n for j in range(1, k + 1)] for i in range(n)])
    for i, neighbours in rows.items():
        table[i] = neighbours
    return table


def _random_table(rng, n, k):
    """(n, k) neighbour table of distinct random other rows."""
    return np.array([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])


def test_concentration_of_a_clique_scattered_rows_and_chance():
    n, top = 100, 0.1  # the 10 highest scores: rows 90..99
    score = np.arange(n, dtype=float)
    tops = list(range(90, 100))
    clique = _table(n, 9, {i: [j for j in tops if j != i] for i in tops})
    scattered = _table(n, 9, {i: list(range(9)) for i in tops})
    # Each top row has exactly one top row among its 10 neighbours: the share chance gives.
    chance = _table(n, 10, {i: [tops[(t + 1) % 10], *range(9)] for t, i in enumerate(tops)})
    assert concentration(score, [clique], top) == pytest.approx(1 / top, rel=1e-12)
    assert concentration(score, [scattered], top) == 0.0
    assert concentration(score, [chance], top) == pytest.approx(1.0, rel=1e-12)
    # The max over tables; no table means no evidence either way.
    assert concentration(score, [scattered, chance], top) == pytest.approx(1.0, rel=1e-12)
    assert concentration(score, [], top) == 1.0


def test_concentration_divides_by_the_share_of_rows_actually_taken():
    # N = 60 at 2%: ceil(1.2) = 2 top rows (rows 0 and 1). A clique of them gives 1 over their
    # share 2/60 = 30; over the nominal 2% it would be 50 and no longer read 1 at chance.
    score = -np.arange(60, dtype=float)
    clique = _table(60, 1, {0: [1], 1: [0]})
    assert concentration(score, [clique]) == pytest.approx(30.0, rel=1e-12)
    assert TOP_SHARE == 0.02


def test_concentration_of_a_random_table_is_near_one():
    rng = np.random.default_rng(1)
    n, k = 5000, 20
    table = _random_table(rng, n, k)
    score = rng.normal(size=n)
    # 100 top rows x 20 neighbours: about 40 hits by chance, sd about 6.
    assert 0.7 < concentration(score, [table]) < 1.3


def test_concentration_matches_definition_with_ties():
    rng = np.random.default_rng(2)
    n = 300
    score = np.round(rng.normal(size=n), 1)
    # Plant a clique among a few of the top rows so the value is not ~1 by accident.
    order = np.argsort(-score, kind="stable")
    tables = [_random_table(rng, n, 8)]
    tables.append(tables[0].copy())
    tables[1][order[:3], :2] = [[order[1], order[2]], [order[0], order[2]], [order[0], order[1]]]
    for top in (0.02, 0.05, 0.013):
        want = ref.concentration_definition(score, tables, top)
        assert concentration(score, tables, top) == pytest.approx(want, rel=1e-12)


def _rank_inputs(n, seed):
    """Three scores with ties and two random neighbour tables (k = 6)."""
    rng = np.random.default_rng(seed)
    scores = {
        "a": np.round(rng.normal(size=n), 2),
        "b": rng.standard_t(3, size=n),
        "c": np.round(rng.uniform(size=n), 1),
    }
    tables = [_random_table(rng, n, 6) for _ in range(2)]
    # Make "a"'s top rows each other's neighbours so its weight leads and the others are < 1.
    top = np.argsort(-scores["a"], kind="stable")[:4]
    tables[0][top, :3] = [[j for j in top if j != i] for i in top]
    return scores, tables


@pytest.mark.parametrize(
    "transform",
    [np.exp, lambda x: 3.5 * x - 7.0, lambda x: x**3],
    ids=["exp", "affine", "cube"],
)
def test_combined_is_invariant_to_increasing_rescaling(transform):
    scores, tables = _rank_inputs(200, seed=3)
    # Precondition: the transforms keep every order and every tie of these scores in float64.
    for v in scores.values():
        t = transform(v)
        assert np.array_equal(np.argsort(v, kind="stable"), np.argsort(t, kind="stable"))
        assert np.array_equal(v[:, None] == v[None, :], t[:, None] == t[None, :])
    want, want_weights = combined_score(scores, tables)
    for name in scores:
        moved = {**scores, name: transform(scores[name])}
        got, weights = combined_score(moved, tables)
        assert weights == want_weights
        assert np.array_equal(np.argsort(-got, kind="stable"), np.argsort(-want, kind="stable"))
        np.testing.assert_array_equal(got, want)


def test_combined_matches_definition():
    scores, tables = _rank_inputs(200, seed=4)
    got, weights = combined_score(scores, tables)
    top, total, want_weights = ref.combined_terms(scores, tables)
    assert set(weights) == set(want_weights)
    for name in weights:
        assert weights[name] == pytest.approx(want_weights[name], rel=1e-12)
    assert want_weights["a"] == 1.0 and min(want_weights.values()) < 0.9
    # combined = max term + c * sum term, one constant c > 0 small enough to stay below the
    # smallest gap between distinct max terms on this data (a pure tie break).
    c = (got - top)[np.argmax(total)] / total.max()
    np.testing.assert_allclose(got, top + c * total, rtol=0, atol=1e-12)
    gaps = np.diff(np.unique(top))
    assert 0 < c * total.max() < gaps.min()
    # The ranking is the max term, ties broken by the sum term.
    assert np.array_equal(np.argsort(-got, kind="stable"), np.lexsort((-total, -top)))


def test_combined_weighs_an_input_by_its_structure_array():
    scores, tables = _rank_inputs(200, seed=7)
    # "b"'s structure array puts the rows that lead "a" on top: b then weighs as much as a,
    # while b's own top rows (and so its ranking terms) are unchanged.
    structure = {"b": scores["a"] + 0.001 * scores["b"]}
    got, weights = combined_score(scores, tables, structure)
    top, total, want_weights = ref.combined_terms(scores, tables, structure)
    _, _, plain = ref.combined_terms(scores, tables)
    assert plain["b"] < 0.9 and want_weights["b"] == pytest.approx(1.0)
    for name in scores:
        assert weights[name] == pytest.approx(want_weights[name], rel=1e-12)
    assert np.array_equal(np.argsort(-got, kind="stable"), np.lexsort((-total, -top)))


@pytest.mark.parametrize("transform", [np.exp, lambda x: x**3], ids=["exp", "cube"])
def test_combined_with_structure_is_invariant_to_increasing_rescaling(transform):
    scores, tables = _rank_inputs(200, seed=8)
    structure = {"c": np.random.default_rng(9).normal(size=200)}
    want, want_weights = combined_score(scores, tables, structure)
    for name in scores:
        got, weights = combined_score({**scores, name: transform(scores[name])}, tables, structure)
        assert weights == want_weights
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("structure", "message"),
    [
        ({"z": np.zeros(5)}, "structure names 'z', which is not an input score (a, b)"),
        (
            {"a": np.zeros(4)},
            "the structure array of 'a' has shape (4,), its score (5,)",
        ),
        ({"b": np.array([0, 1, np.nan, 2, 3])}, "the structure array of 'b' contains NaN or inf"),
    ],
)
def test_combined_structure_errors(structure, message):
    scores = {"a": np.arange(5.0), "b": np.arange(5.0)[::-1]}
    with pytest.raises(ValueError) as err:
        combined_score(scores, None, structure)
    assert str(err.value) == message


def test_combined_without_neighbour_tables_weighs_inputs_equally():
    scores, _ = _rank_inputs(100, seed=5)
    got, weights = combined_score(scores)
    assert weights == {"a": 1.0, "b": 1.0, "c": 1.0}
    top, total, _ = ref.combined_terms(scores)
    assert np.array_equal(np.argsort(-got, kind="stable"), np.lexsort((-total, -top)))


def test_one_input_ranks_exactly_like_it():
    score = np.round(np.random.default_rng(6).normal(size=150), 1)
    got, weights = combined_score({"only": score})
    assert weights == {"only": 1.0}
    assert np.array_equal(np.argsort(-got, kind="stable"), np.argsort(-score, kind="stable"))
    assert np.array_equal(got[:, None] == got[None, :], score[:, None] == score[None, :])


def test_tie_break_never_reorders_distinct_max_terms():
    # n = 173, four top rows per score, k = 3. Score "a" (weight 1): row 2 is ranked 3rd, row 3
    # 4th. Score "b": row 3 ranked 2nd, row 2 last. "a"'s top rows fill 11 of their 12 slots in
    # table 0 with each other, "b"'s 10 of 12 in table 1: w_b = 10/11. Max terms: row 2
    # log(173/3) = 4.054668, row 3 (10/11) log(173/2) = 4.054666 (2.6e-6 lower); the sum terms
    # differ by log(173/4) = 3.77, scaled 1/(4 n K log n) = 1.4e-4, i.e. by 5e-4.
    n = 173
    a = -np.arange(n, dtype=float)  # rows 0, 1, 2, 3 lead
    b = -np.arange(n, dtype=float) - 10.0
    b[[4, 3, 5, 6]] = [4.0, 3.0, 2.0, 1.0]
    b[2] = -1000.0
    table0 = _table(n, 3, {0: [1, 2, 100], 1: [0, 2, 3], 2: [0, 1, 3], 3: [0, 1, 2]})
    table1 = _table(n, 3, {3: [4, 5, 100], 4: [3, 5, 6], 5: [3, 4, 6], 6: [3, 4, 101]})
    top, total, weights = ref.combined_terms({"a": a, "b": b}, [table0, table1])
    assert weights["b"] == pytest.approx(10 / 11, rel=1e-12)
    assert 0 < top[2] - top[3] < 1e-5 and total[3] > total[2]
    got, _ = combined_score({"a": a, "b": b}, [table0, table1])
    assert got[2] > got[3]


def _embeddings(n, seed, d=24):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, d))
    text = image + rng.normal(size=(n, d))
    second = image + 0.8 * rng.normal(size=(n, d))
    purified = second + rng.uniform(0.01, 0.5, size=(n, 1)) * rng.normal(size=(n, d))
    # Dirty-label pairs: rows 0..5 carry images of row 10's concept under their own captions,
    # so relative_alignment's top rows are each other's image neighbours (weight 1) while
    # the other inputs' top rows are scattered.
    image[:6] = image[10] + 0.3 * rng.normal(size=(6, d))
    second[:6] = image[:6] + 0.8 * rng.normal(size=(6, d))
    return image, text, second, purified


def _well_separated(x, k):
    """The k-th and (k+1)-th nearest cosine distances of every row differ by far more than
    the engine's float32 rounding, so its neighbour sets are the float64 sort's."""
    d = np.sort(ref.cosine_distances(x) + np.diag(np.full(x.shape[0], np.inf)), axis=1)
    return np.min(d[:, k] - d[:, k - 1]) > 1e-5


def test_compute_scores_reports_the_combined_weights():
    image, text, second, purified = _embeddings(200, seed=3)
    k = 10
    assert all(_well_separated(x, k) for x in (image, text, second))
    assert _well_separated(text, 50)  # relative_alignment's reference neighbours
    table = compute_scores(
        image, text, scores=("combined",), second_view=second, purified_view=purified, k=k
    )
    inputs = {
        "relative_alignment": ref.relative_alignment_definition(image, text, 50),
        "view_density": ref.view_density_definition(image, second, k),
        "cross_view": ref.screen_cross_view(image, second, k),
        "purification": ref.purification_shift_definition(image, second, purified, k),
    }
    graphs = [ref.nearest_others(image, k), ref.nearest_others(text, k)]
    # relative_alignment is weighed by its studentized residual (screen.relative).
    studentized = ref.studentized_alignment_definition(image, text, 50)
    top, total, weights = ref.combined_terms(inputs, graphs, {"relative_alignment": studentized})
    assert len({round(w, 2) for w in weights.values()}) >= 2  # weights that differ
    assert table.methods["combined"] == "min-p of " + ", ".join(
        f"{name} (weight {w:.2f})" for name, w in weights.items()
    )
    assert list(table.scores) == [
        "combined",
        "relative_alignment",
        "cross_view",
        "view_density",
        "purification",
    ]
    assert np.array_equal(
        np.argsort(-table.scores["combined"], kind="stable"), np.lexsort((-total, -top))
    )


def test_compute_scores_weighs_relative_alignment_by_its_studentized_residual():
    """On a small realistic world with clean-label poisons the caption score's raw top rows
    gather in the concepts whose CLIP scores scatter most; studentized they gather less, so
    the view scores gain weight against it."""
    w = realistic_world(3000, poisoned_concepts=15, per_concept=8, kind="clean", seed=0)
    table = compute_scores(
        w.image_emb, w.text_emb, scores=("combined",), second_view=w.latent_emb, k=10
    )
    inputs = {
        name: table.scores[name] for name in ("relative_alignment", "view_density", "cross_view")
    }
    graphs = [
        _distinct_neighbours(Rows(w.image_emb), 10, exact_knn, "image"),
        _distinct_neighbours(Rows(w.text_emb), 10, exact_knn, "text"),
    ]
    residual = alignment_residual(w.image_emb, w.text_emb)
    np.testing.assert_array_equal(residual.score, inputs["relative_alignment"])
    want, weights = combined_score(inputs, graphs, {"relative_alignment": residual.studentized()})
    _, raw = combined_score(inputs, graphs)
    np.testing.assert_array_equal(table.scores["combined"], want)
    assert table.methods["combined"] == "min-p of " + ", ".join(
        f"{name} (weight {value:.2f})" for name, value in weights.items()
    )
    assert weights["relative_alignment"] == raw["relative_alignment"] == 1.0
    assert weights["view_density"] > raw["view_density"] + 0.1


def test_compute_scores_combined_of_captions_alone_ranks_like_relative_alignment():
    image, text, _, _ = _embeddings(200, seed=3)
    table = compute_scores(image, text, scores=("combined",))
    assert table.methods["combined"] == "min-p of relative_alignment (weight 1.00)"
    assert np.array_equal(
        np.argsort(-table.scores["combined"], kind="stable"),
        np.argsort(-table.scores["relative_alignment"], kind="stable"),
    )


def test_compute_scores_combined_needs_captions_or_a_second_view():
    image = np.random.default_rng(0).normal(size=(20, 6))
    with pytest.raises(ValueError) as err:
        compute_scores(image, scores=("combined",))
    assert str(err.value) == (
        "the combined score needs text embeddings, a second image view, or both"
    )


def test_combined_score_input_errors():
    with pytest.raises(ValueError) as err:
        combined_score({})
    assert str(err.value) == "the combined score needs at least one input score"
    with pytest.raises(ValueError) as err:
        combined_score({"a": np.zeros(5), "b": np.zeros(4)})
    assert str(err.value) == "input scores differ in length"


def test_combined_rejects_unpaired_text_rows():
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(20, 6)), rng.normal(size=(15, 6))
    with pytest.raises(ValueError) as err:
        compute_scores(image, text, scores=("combined",))
    assert str(err.value) == (
        "image_emb has 20 rows but text_emb has 15; row i of both must describe the same pair"
    )


def test_concentration_skips_missing_neighbours():
    rng = np.random.default_rng(4)
    n, k = 150, 6
    table = rng.integers(0, n, size=(n, k))
    table[rng.random((n, k)) < 0.3] = -1  # duplicates removed: missing entries
    table[:3] = -1  # rows with no neighbour at all
    score = rng.normal(size=n)
    score[:3] = 10.0  # the rows without neighbours are among the top
    got = concentration(score, [table], top=0.05)
    assert got == pytest.approx(ref.concentration_definition(score, [table], top=0.05), abs=1e-12)
    assert concentration(score, [np.full((n, k), -1)]) == 1.0  # no neighbours anywhere


def test_repeated_captions_do_not_count_as_neighbours():
    """75 captions, each repeated by 4 rows: a caption score is constant within a caption, so
    its top rows share captions and, without dropping duplicates, fill each other's caption
    neighbourhoods; as distinct neighbours they are other captions' rows. A caption repeated
    beyond the 2k nearest leaves its rows without neighbours (-1)."""
    from alignscope.screen.scores import _distinct_neighbours

    rng = np.random.default_rng(8)
    captions = rng.normal(size=(75, 16))
    text = np.repeat(captions, 4, axis=0).astype(np.float32)
    near = _distinct_neighbours(text, 5)
    assert near.shape == (300, 5) and (near >= 0).all()
    same = np.repeat(np.arange(75), 4)
    assert not (same[near] == same[:, None]).any()  # no neighbour shares the caption
    score = same.astype(float)  # the top 2% (6 rows): captions 74 and 73
    assert concentration(score, [ref.nearest_others(text, 5)]) > 20  # duplicates as neighbours
    assert concentration(score, [near]) < 5
    crowded = np.repeat(captions[:3], 100, axis=0).astype(np.float32)
    assert (_distinct_neighbours(crowded, 5) == -1).all()
