"""`alignscope demo` and its world (alignscope.synth.demo): Table 1's trends, and why."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignscope.cli import main
from alignscope.synth.demo import demo_world

# Table 1 of the Implosion paper (SD1.5 fine-tuned on 50K LAION-Aesthetics pairs):
# C_P -> (feature AD, structure AD, AD at alpha = 0.8).
TABLE_1 = {
    "dirty": {
        0: (0.514, 0.1493, 0.441),
        100: (0.551, 0.1475, 0.470),
        250: (0.608, 0.1463, 0.515),
        500: (0.703, 0.1440, 0.592),
    },
    "clean": {
        0: (0.514, 0.1493, 0.441),
        100: (0.520, 0.1478, 0.446),
        250: (0.531, 0.1445, 0.453),
        500: (0.547, 0.1369, 0.465),
    },
}
C_P = (0, 100, 250, 500)


def _trends(table: dict[str, dict[int, tuple[float, float, float]]]) -> dict[str, bool]:
    """Table 1's qualitative findings (Sec. 5.2), each True or False for ``table``."""
    found = {}
    for kind, rows in table.items():
        feature, structure, ad = (np.array([rows[cp][i] for cp in C_P]) for i in range(3))
        found[f"{kind}: feature rises"] = bool(np.all(np.diff(feature) > 0))
        found[f"{kind}: structure falls"] = bool(np.all(np.diff(structure) < 0))
        found[f"{kind}: AD rises"] = bool(np.all(np.diff(ad) > 0))
        # "AD increases with C_P, dominated by the increase in feature AD"
        found[f"{kind}: feature dominates"] = bool(
            0.8 * (feature[-1] - feature[0]) > 0.2 * abs(structure[-1] - structure[0])
        )
    found["clean AD below dirty AD"] = all(
        table["clean"][cp][2] < table["dirty"][cp][2] for cp in C_P[1:]
    )
    return found


def _demo(capsys, kind: str) -> dict[int, tuple[float, float, float]]:
    argv = ["demo", "--n", "5000", "--poisoned", "0,100,250,500", "--kind", kind]
    assert main([*argv, "--threads", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dataset"]["generator"] == "alignscope.synth.demo.demo_world"
    return {r["poisoned_concepts"]: (r["feature"], r["structure"], r["ad"]) for r in data["rows"]}


def test_demo_reproduces_table_1_trends(capsys):
    # N = 5,000 keeps the paper's C = 1,000 concepts and poison ratio (m = 4, rho = C_P * 0.08%).
    demo = {kind: _demo(capsys, kind) for kind in ("dirty", "clean")}
    paper = _trends(TABLE_1)
    assert all(paper.values()), paper  # the predicate encodes what Table 1 shows
    assert _trends(demo) == paper
    # the same benign rows under both kinds, so C_P = 0 agrees exactly
    assert demo["dirty"][0] == demo["clean"][0]
    # the benign row is Table 1's: the world's two calibrated constants aim at it
    assert demo["dirty"][0][0] == pytest.approx(TABLE_1["dirty"][0][0], abs=0.015)
    assert demo["dirty"][0][1] == pytest.approx(TABLE_1["dirty"][0][1], abs=0.005)


def _cosines(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    a = x[rows].astype(np.float64)
    b = x[cols].astype(np.float64)
    return a @ b.T


def test_generated_images_shrink_the_image_text_offset():
    """The mechanism, on Eq. 1's raw distances: natural photos sit farther from each other than
    their captions do (D_img - D_txt > 0 on benign pairs); a dirty-label image, generated from
    "a photo of t", sits closer to the other photos, so its pairs carry a smaller offset."""
    w = demo_world(4000, concepts=200, poisoned_concepts=100, per_concept=8, seed=3)
    benign = np.flatnonzero(~w.poisoned)
    poison = np.flatnonzero(w.poisoned)

    def mean_offset(rows: np.ndarray) -> float:
        d_img = 1.0 - _cosines(w.image_emb, rows, benign)
        d_txt = 1.0 - _cosines(w.text_emb, rows, benign)
        other = w.concept[rows][:, None] != w.concept[benign][None, :]  # cross-concept pairs
        return float((d_img - d_txt)[other].mean())

    benign_offset = mean_offset(benign[:1000])
    poison_offset = mean_offset(poison)
    assert benign_offset > 0.1
    assert poison_offset < 0.6 * benign_offset


def _structure(world) -> float:
    """Eq. 1's structure term, straight from its definition (raw cosine distances)."""
    x = world.image_emb.astype(np.float64)
    y = world.text_emb.astype(np.float64)
    return float(np.abs(x @ x.T - y @ y.T).mean())


def test_without_photo_detail_dirty_label_structure_rises():
    # With photos as simple as captions, only the p/t mismatch is left and the structure term
    # rises with C_P (Theorem 4.2's regime); the default detail is what makes it fall.
    kwargs = {"concepts": 500, "per_concept": 2, "dim": 32, "seed": 1}
    simple = [
        _structure(demo_world(2500, poisoned_concepts=cp, image_detail=0.0, **kwargs))
        for cp in (0, 125, 250)
    ]
    detailed = [
        _structure(demo_world(2500, poisoned_concepts=cp, **kwargs)) for cp in (0, 125, 250)
    ]
    assert simple[0] < simple[1] < simple[2]
    assert detailed[0] > detailed[1] > detailed[2]


def test_poison_rows_nest_and_benign_rows_are_shared():
    small, large, clean = (
        demo_world(3000, concepts=300, poisoned_concepts=cp, kind=kind, dim=16, seed=2)
        for cp, kind in ((50, "dirty"), (120, "dirty"), (120, "clean"))
    )
    assert small.poisoned.sum() == 50 * 2 and large.poisoned.sum() == 120 * 2
    assert np.all(large.poisoned[small.poisoned])  # C_P = 50's poisons are among C_P = 120's
    assert set(small.poisoned_concepts) < set(large.poisoned_concepts)
    np.testing.assert_array_equal(small.target[small.poisoned], large.target[small.poisoned])
    np.testing.assert_array_equal(small.text_emb, large.text_emb)
    np.testing.assert_array_equal(
        small.image_emb[~large.poisoned], large.image_emb[~large.poisoned]
    )
    np.testing.assert_array_equal(clean.poisoned, large.poisoned)
    np.testing.assert_array_equal(
        clean.image_emb[~clean.poisoned], large.image_emb[~clean.poisoned]
    )
    again = demo_world(3000, concepts=300, poisoned_concepts=50, dim=16, seed=2)
    np.testing.assert_array_equal(again.image_emb, small.image_emb)


def test_what_each_poison_shows():
    dirty, clean = (
        demo_world(6000, concepts=60, poisoned_concepts=30, per_concept=10, kind=kind, seed=4)
        for kind in ("dirty", "clean")
    )
    p = dirty.poisoned
    assert np.all(dirty.target[p] != dirty.concept[p]) and np.all(dirty.target[~p] == -1)
    np.testing.assert_array_equal(dirty.image_concept[p], dirty.target[p])
    np.testing.assert_array_equal(clean.image_concept, clean.concept)
    centroids = np.stack(
        [dirty.image_emb[~p & (dirty.concept == c)].mean(axis=0) for c in range(60)]
    )
    # a dirty-label image is an image of t; a clean-label image still looks like p to CLIP
    assert np.all(np.argmax(dirty.image_emb[p] @ centroids.T, axis=1) == dirty.target[p])
    assert np.mean(np.argmax(clean.image_emb[p] @ centroids.T, axis=1) == clean.concept[p]) > 0.95


def test_calibration_targets():
    w = demo_world(20_000, concepts=400, poisoned_concepts=400, per_concept=16, kind="clean")
    score = np.sum(w.image_emb.astype(np.float64) * w.text_emb, axis=1)
    # Sec. 6: dropping the lowest-scoring 50% of clean-label poisons drops 21% of benign pairs
    share = np.mean(score[~w.poisoned] < np.median(score[w.poisoned]))
    assert share == pytest.approx(0.21, abs=0.04)
    # the caption drift keeps a matched pair at the base world's cosine whatever the detail
    for detail in (0.0, 0.4, 0.75):
        plain = demo_world(4000, concepts=200, image_detail=detail, seed=5)
        score = np.sum(plain.image_emb.astype(np.float64) * plain.text_emb, axis=1)
        assert score.mean() == pytest.approx(0.32, abs=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 2}, "dim must be >= 3 (two dimensions hold the modality offsets), got 2"),
        (
            {"image_detail": 1.5},
            "image_detail must be <= 1.10 so a matched pair can keep cosine 0.32; got 1.5",
        ),
        ({"image_detail": -0.1}, "image_detail must be >= 0, got -0.1"),
        ({"clean_shift": 1.2}, "clean_shift must be in [0, 1], got 1.2"),
        ({"kind": "nightshade"}, "kind must be one of ('dirty', 'clean'), got 'nightshade'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as exc:
        demo_world(100, concepts=10, **kwargs)
    assert str(exc.value) == message


def test_non_numeric_detail_is_a_type_error():
    with pytest.raises(TypeError) as exc:
        demo_world(100, concepts=10, image_detail="high")
    assert str(exc.value) == "image_detail must be a number, got str"
