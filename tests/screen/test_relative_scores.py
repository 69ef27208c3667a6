"""The peer-relative screening scores (alignscope.screen.relative): hand-built cases whose
values follow from the docstrings by hand, float64 brute force (alignscope._reference) on
random data, and compute_scores' errors for their inputs."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope import _reference as ref
from alignscope.screen import compute_scores, relative
from alignscope.screen.relative import (
    REFERENCE_K,
    ROUNDS,
    TRIM,
    alignment_residual,
    purification_shift,
    relative_alignment,
    view_residual,
)

# Hand-built values are sums of a few float64 roundings.
EXACT = 1e-12


def _neighbour_sets_are_well_separated(x, k):
    """The k-th and (k+1)-th nearest cosine distances of every row differ by far more than the
    float32 rounding of the engine's search, so it must find the float64 sort's neighbours."""
    d = np.sort(ref.cosine_distances(x) + np.diag(np.full(x.shape[0], np.inf)), axis=1)
    return k >= x.shape[0] - 1 or np.min(d[:, k] - d[:, k - 1]) > 1e-5


def _concept_pairs(alignments, foreign=()):
    """Captions and images of concepts with chosen CLIP scores.

    ``alignments[c]`` lists the CLIP scores a of concept c's pairs. Caption (c, m) is the unit
    vector along e_c + 0.05 e_(C+m): captions of a concept are near-identical, concepts are
    (nearly) orthogonal, so each caption's nearest captions are its concept's. Its image is
    a y + sqrt(1 - a^2) u with u a unit vector orthogonal to every caption, so cos(x, y) = a
    up to rounding; for (c, m, other) in ``foreign`` u is e_other instead: an image of another
    concept under the caption of c (a dirty-label pair).
    """
    concepts, members = len(alignments), max(len(a) for a in alignments)
    d = concepts + members + 1
    foreign = {(c, m): other for c, m, other in foreign}
    text, image = [], []
    for c, scores in enumerate(alignments):
        for m, a in enumerate(scores):
            y = np.zeros(d)
            y[c], y[concepts + m] = 1.0, 0.05
            y /= np.linalg.norm(y)
            u = np.zeros(d)
            u[foreign.get((c, m), d - 1)] = 1.0
            text.append(y)
            image.append(a * y + np.sqrt(1.0 - a * a) * u)
    return np.array(image), np.array(text)


def test_relative_alignment_scores_a_foreign_image_against_its_concept():
    # Concept 1's pairs all score 0.04 (a concept CLIP matches poorly); the last pair of
    # concept 2 carries concept 0's image and scores 0.05. The raw CLIP score flags concept 1;
    # compared with the nearest captions, every benign pair scores 0 and the foreign image
    # 0.32 - 0.05 (the one row above the 90% quantile is left out of its peers' reference).
    alignments = [[0.3] * 5, [0.04] * 5, [0.32] * 4 + [0.05]]
    image, text = _concept_pairs(alignments, foreign=[(2, 4, 0)])
    assert np.argmin(np.einsum("ij,ij->i", image, text)) != 14  # the raw score misses it
    got = relative_alignment(image, text, k=4)
    want = np.zeros(15)
    want[14] = 0.32 - 0.05
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT)
    assert np.argmax(got) == 14


def test_relative_alignment_leaves_the_top_share_out_of_the_reference():
    # 20 pairs, 4 concepts of 5, k = 4 (a caption's peers are its concept's other 4); two
    # dirty-label pairs (0.02 in concept 0, 0.0 in concept 1) are the top 10% in every round.
    alignments = [
        [0.30, 0.30, 0.32, 0.36, 0.02],
        [0.25, 0.25, 0.25, 0.25, 0.00],
        [0.28] * 5,
        [0.28] * 5,
    ]
    image, text = _concept_pairs(alignments, foreign=[(0, 4, 2), (1, 4, 3)])
    got = relative_alignment(image, text, k=4)
    assert TRIM == 0.1 and ROUNDS == 2  # the hand computation below assumes them
    # Round 0 (medians): concept 0 scores 0.01, 0.01, -0.02, -0.06, 0.29; concept 1 0, 0.25.
    # The 90% quantile (0.01 + 0.1 * 0.24) leaves the two dirty pairs out; the means of the
    # rest are the final references (the trimmed set does not change in round 2).
    want = np.zeros(20)
    want[0] = want[1] = (0.30 + 0.32 + 0.36) / 3 - 0.30
    want[2] = (0.30 + 0.30 + 0.36) / 3 - 0.32
    want[3] = (0.30 + 0.30 + 0.32) / 3 - 0.36
    want[4] = (0.30 + 0.30 + 0.32 + 0.36) / 4 - 0.02
    want[9] = 0.25
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT)
    # The dirty pair is a peer of rows 0..3: left in, it would pull their reference down by
    # a quarter of 0.3 (a mean) or leave only the median (0.01 for rows 0 and 1).
    untrimmed = (0.30 + 0.32 + 0.36 + 0.02) / 4 - 0.30
    assert abs(got[0] - untrimmed) > 0.05 and abs(got[0] - 0.01) > 0.01
    assert list(np.argsort(-got)[:2]) == [4, 9]


@pytest.mark.parametrize(("n", "k"), [(150, 5), (150, REFERENCE_K), (60, 500)])
def test_relative_alignment_matches_brute_force(pairs, n, k):
    image, text, _ = pairs(n, 12, seed=1)
    got = relative_alignment(image, text, k=k)
    want = ref.relative_alignment_definition(image, text, min(k, n - 1))
    assert _neighbour_sets_are_well_separated(text, min(k, n - 1))
    # The trimming matters on this data: an untrimmed mean of the same peers is far off.
    x, y = ref.unit_rows(image), ref.unit_rows(text)
    agree = np.einsum("ij,ij->i", x, y)
    plain = agree[ref.nearest_others(text, min(k, n - 1))].mean(axis=1) - agree
    assert np.abs(plain - want).max() > 1e-3
    assert got.shape == (n,) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("n", "k"), [(150, 5), (150, REFERENCE_K)])
def test_alignment_residual_matches_brute_force(pairs, n, k):
    image, text, _ = pairs(n, 12, seed=2)
    assert _neighbour_sets_are_well_separated(text, k)
    got = alignment_residual(image, text, k=k)
    want_score, want_spread, want_peers = ref.alignment_residual_definition(image, text, k)
    np.testing.assert_allclose(got.score, want_score, rtol=0, atol=EXACT)
    np.testing.assert_allclose(got.spread, want_spread, rtol=0, atol=EXACT)
    np.testing.assert_array_equal(got.peers, want_peers)
    assert want_peers.min() < k  # the trim left some peers out on this data
    np.testing.assert_array_equal(got.score, relative_alignment(image, text, k=k))
    want_z = ref.studentized_alignment_definition(image, text, k)
    np.testing.assert_allclose(got.studentized(), want_z, rtol=1e-10, atol=0)


def test_studentized_alignment_ranks_by_the_peers_spread():
    # Two concepts of 10 (k = 9: a caption's peers are its concept's other 9). Concept 0's CLIP
    # scores scatter by +-0.01 about 0.30, concept 1's by +-0.10; each has one pair below the
    # rest: 0.26 in the tight concept, 0.19 in the wide one. In raw units the wide concept's
    # pairs are furthest below their peers (about 0.1, against 0.04), but they are about one
    # of their peers' spreads below them and the tight concept's low pair several.
    alignments = [[0.31, 0.29] * 4 + [0.30, 0.26], [0.40, 0.20] * 4 + [0.30, 0.19]]
    image, text = _concept_pairs(alignments)
    got = alignment_residual(image, text, k=9)
    assert np.argmax(got.score) >= 10
    assert np.argmax(got.studentized()) == 9
    want_score, want_spread, want_peers = ref.alignment_residual_definition(image, text, 9)
    np.testing.assert_allclose(got.score, want_score, rtol=0, atol=EXACT)
    np.testing.assert_allclose(got.spread, want_spread, rtol=0, atol=EXACT)
    np.testing.assert_array_equal(got.peers, want_peers)
    # Row 9's peers (0.31, 0.29 four times each, 0.30) stay trusted in every round (their
    # scores are within 0.01 of 0, far from the top two rows of twenty): reference 0.30,
    # spread sqrt(8 * 0.01^2 / 9), 9 peers; the typical (median) spread counts as a tenth.
    spread = np.sqrt(8 * 0.01**2 / 9)
    assert got.score[9] == pytest.approx(0.30 - 0.26, abs=EXACT)
    assert got.spread[9] == pytest.approx(spread, abs=EXACT) and got.peers[9] == 9
    typical = np.median(want_spread)
    want = 0.04 / np.sqrt((9 * spread**2 + typical**2) / 10)
    assert got.studentized()[9] == pytest.approx(want, rel=1e-9)


def test_studentized_alignment_stays_finite_when_peers_agree_exactly():
    # Concept 0's first five pairs all score 0.3, so the sixth's peers never vary (spread 0);
    # pooled with the typical spread as one more peer, its s is typical / sqrt(6), and the
    # sixth pair, 0.1 below peers that never vary, leads the studentized ranking.
    alignments = [[0.3] * 5 + [0.2], [0.40, 0.20, 0.40, 0.20, 0.30, 0.30]]
    image, text = _concept_pairs(alignments)
    got = alignment_residual(image, text, k=5)
    z = got.studentized()
    assert got.spread[5] == 0.0 and got.peers[5] == 5
    typical = np.median(got.spread[got.spread > 0])
    assert typical > 0 and np.isfinite(z).all()
    assert np.argmax(z) == 5
    assert z[5] == pytest.approx(got.score[5] * np.sqrt(6) / typical, rel=1e-9)


def test_studentized_alignment_when_most_peers_are_duplicates():
    # Three concepts whose six pairs all score alike (spread 0 for most rows) and one that
    # scatters: the typical spread is the median of the positive spreads, not 0, so the pair
    # 0.1 below its identical peers gets a finite z = 0.1 * sqrt(6) / typical.
    alignments = [[0.3] * 5 + [0.2], [0.25] * 6, [0.35] * 6, [0.40, 0.20, 0.40, 0.20, 0.30, 0.30]]
    image, text = _concept_pairs(alignments)
    got = alignment_residual(image, text, k=5)
    assert np.median(got.spread) == 0.0  # the case: most rows' peers never vary
    positive = got.spread[got.spread > 0]
    z = got.studentized()
    assert np.isfinite(z).all() and np.argmax(z) == 5
    assert z[5] == pytest.approx(got.score[5] * np.sqrt(6) / np.median(positive), rel=1e-9)
    assert z[5] < 100  # comparable with the scattering concept's, not 1e300


def _clusters(concepts, members, d, seed):
    """(concepts * members, d) CLIP images in tight, well separated clusters."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:concepts] * 1.0
    return np.repeat(centres, members, axis=0) + 0.01 * rng.normal(size=(concepts * members, d))


def test_view_residual_whitens_the_style_direction():
    # Second view: concept one-hot + style (sd 0.3) + texture (sd 0.01). Row 3 moves 0.1 along
    # the texture (10 of its sd), row 13 moves 0.6 along the style (2 sd): a bigger shift, but
    # one CLIP neighbours' views vary by routinely.
    concepts, members = 6, 10
    image = _clusters(concepts, members, 8, seed=0)
    rng = np.random.default_rng(1)
    n = concepts * members
    view = np.zeros((n, concepts + 2))
    view[np.arange(n), np.arange(n) // members] = 1.0
    view[:, :concepts] += 0.01 * rng.normal(size=(n, concepts))
    view[:, concepts] = 0.3 * rng.normal(size=n)
    view[:, concepts + 1] = 0.01 * rng.normal(size=n)
    view[3, concepts + 1] += 0.1
    view[13, concepts] += 0.6
    got = view_residual(image, view, k=members - 1)
    # A plain residual norm ranks the style shift higher; the whitened one does the reverse.
    v = ref.unit_rows(view)
    near = ref.nearest_others(image, members - 1)
    plain = np.linalg.norm(v - v[near].mean(axis=1), axis=1)
    assert plain[13] > plain[3]
    assert got[3] > got[13] and np.argmax(got) == 3


@pytest.mark.parametrize("k", [3, 10])
def test_view_residual_matches_brute_force(pairs, k):
    image, _, second = pairs(120, 12, seed=7)
    view = second[:, :6]
    assert _neighbour_sets_are_well_separated(image, k)
    got = view_residual(image, view, k=k)
    want = ref.view_residual_definition(image, view, k)
    assert got.shape == (120,) and got.dtype == np.float64
    # The engine adds a ridge of 1e-6 of the mean variance to S; here S is well conditioned.
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Closed form: with S the residuals' covariance about zero, mean_i r_i' S^-1 r_i =
    # trace(S^-1 S) = d2 exactly (a centred or N - 1 covariance gives something else).
    assert abs(got.mean() - view.shape[1]) < 1e-4


def test_purification_shift_is_relative_to_clip_peers():
    # Concept 0's latents move 1% under purification, concept 1's 20% (a texture purification
    # changes a lot); row 2 (concept 0) moves 10%: ten times its peers, half of concept 1.
    concepts, members = 2, 8
    image = _clusters(concepts, members, 6, seed=2)
    rng = np.random.default_rng(3)
    n = concepts * members
    latent = rng.normal(size=(n, 16)) * rng.uniform(0.5, 3.0, size=(n, 1))
    direction = rng.normal(size=(n, 16))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    ratio = np.repeat([0.01, 0.2], members)
    ratio[2] = 0.1
    purified = latent + ratio[:, None] * np.linalg.norm(latent, axis=1, keepdims=True) * direction
    got = purification_shift(image, latent, purified, k=members - 1)
    want = np.zeros(n)
    want[2] = np.log(10.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT)
    raw = np.log(np.linalg.norm(purified - latent, axis=1) / np.linalg.norm(latent, axis=1))
    assert np.argmax(raw) >= members  # the raw shift ranks concept 1 first


@pytest.mark.parametrize("k", [4, 7])
def test_purification_shift_matches_brute_force(pairs, k):
    image, _, second = pairs(100, 12, seed=11)
    rng = np.random.default_rng(12)
    purified = second + rng.uniform(0.01, 0.5, size=(100, 1)) * rng.normal(size=second.shape)
    assert _neighbour_sets_are_well_separated(image, k)
    got = purification_shift(image, second, purified, k=k)
    want = ref.purification_shift_definition(image, second, purified, k)
    assert got.shape == (100,) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_purification_shift_stays_finite_when_purification_changes_nothing():
    image = _clusters(2, 4, 5, seed=4)
    latent = np.random.default_rng(5).normal(size=(8, 3))
    got = purification_shift(image, latent, latent.copy(), k=3)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("fn", [relative_alignment, view_residual])
def test_one_sample_has_no_peers(fn):
    x = np.ones((1, 4))
    with pytest.raises(ValueError) as err:
        fn(x, x)
    assert str(err.value) == "neighbour scores need at least two samples"


def _views(n=20):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)), rng.normal(size=(n, 6)), rng.normal(size=(n, 4))


@pytest.mark.parametrize("name", ["purification", "view_residual"])
def test_view_scores_need_the_second_view(name):
    image, text, _ = _views()
    with pytest.raises(ValueError) as err:
        compute_scores(image, text, scores=(name,))
    assert str(err.value) == f"{name} needs a second image view (second_view=)"


@pytest.mark.parametrize("purified_rows", [None, 19])
def test_purification_needs_purified_latents_of_the_latents_shape(purified_rows):
    image, text, second = _views()
    purified = None if purified_rows is None else second[:purified_rows]
    with pytest.raises(ValueError) as err:
        compute_scores(
            image, text, scores=("purification",), second_view=second, purified_view=purified
        )
    assert str(err.value) == (
        "purification needs the purified latents (purified_view=) of the shape of "
        "second_view: embed with --vae, which writes both"
    )


def test_second_view_rows_must_match_the_images():
    image, text, second = _views()
    with pytest.raises(ValueError) as err:
        compute_scores(image, text, scores=("view_residual",), second_view=second[:15])
    assert str(err.value) == "second_view has 15 rows, image_emb 20"


def test_relative_alignment_rejects_unpaired_text_rows():
    image, text, _ = _views()
    with pytest.raises(ValueError) as err:
        compute_scores(image, text[:15], scores=("relative_alignment",))
    assert str(err.value) == (
        "image_emb has 20 rows but text_emb has 15; row i of both must describe the same pair"
    )


@pytest.mark.parametrize("k", [3, 10])
def test_view_density_matches_brute_force(k):
    rng = np.random.default_rng(11)
    image = rng.normal(size=(120, 8))
    # A view with one dominant (style-like) direction, so whitening changes the neighbours.
    view = rng.normal(size=(120, 6)) * np.array([8.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    got = relative.view_density(image, view, k)
    want = ref.view_density_definition(image, view, k)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # Whitening makes the score blind to any invertible linear map of the view (here: undoing
    # the dominant direction), which a plain cosine k-NN in the view is not.
    mixed = view @ rng.normal(size=(6, 6))
    np.testing.assert_allclose(relative.view_density(image, mixed, k), want, rtol=0, atol=1e-9)


def test_view_density_flags_a_group_tight_only_in_the_second_view():
    """Benign rows whose second view is their CLIP view (spreads agree up to whitening, so
    scores scatter about 0); ten rows
    whose second views sit on one anchor point while their CLIP views stay ordinary score their
    CLIP spread percentile minus ~0 (the tightest second-view spread), and ten near-duplicates
    tight in both views score ~0."""
    rng = np.random.default_rng(5)
    n, d = 200, 8
    image = rng.normal(size=(n, d))
    image[10:20] = image[10] + 1e-3 * rng.normal(size=(10, d))
    view = image.copy()
    view[:10] = rng.normal(size=d) * 3 + 1e-3 * rng.normal(size=(10, d))
    score = relative.view_density(image, view, 5)
    benign = score[20:]
    # Moving ten rows reshuffles some benign neighbourhoods, so benign rows scatter about 0.
    assert abs(benign.mean()) < 0.05 and np.median(np.abs(benign)) < 0.2
    assert np.abs(score[10:20]).max() < 0.1
    assert score[:10].mean() > 0.4
    assert np.mean(score[:10, None] > benign[None, :]) > 0.9  # AUROC of the anchored group
