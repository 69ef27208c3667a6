"""Screening scores on the synthetic benchmark, metrics against hand-computed values, and
`alignscope screen` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignscope.cli import main
from alignscope.io import write_store
from alignscope.screen import (
    auprc,
    auroc,
    compute_scores,
    evaluate_scores,
    tpr_at_fpr,
    tradeoff_curve,
)
from alignscope.synth import concept_world

ALL = ("alignment", "d_s", "ad_xy", "concept_consistency", "cross_view", "k_distance", "lid")


@pytest.fixture(scope="module")
def worlds():
    return {
        kind: concept_world(
            6000,
            concepts=100,
            poisoned_concepts=30,
            per_concept=10,
            kind=kind,
            dim=32,
            seed=1,
            latent_view=True,
        )
        for kind in ("dirty", "clean")
    }


def _aurocs(world):
    table = compute_scores(
        world.image_emb, world.text_emb, scores=ALL, second_view=world.latent_emb
    )
    return {name: m["auroc"] for name, m in evaluate_scores(table.scores, world.poisoned).items()}


def test_dirty_label_poisons_are_caught_by_alignment(worlds):
    a = _aurocs(worlds["dirty"])
    assert a["alignment"] >= 0.95
    assert a["concept_consistency"] >= 0.95


def test_clean_label_poisons_evade_alignment_but_not_cross_view(worlds):
    a = _aurocs(worlds["clean"])
    assert 0.4 <= a["alignment"] <= 0.6  # the paper's finding (Fig. 9): near chance
    assert 0.4 <= a["d_s"] <= 0.6
    assert a["cross_view"] >= 0.9


def test_metrics_against_hand_computed_values():
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    truth = np.array([True, False, True, False, False, True])
    # poisons outrank benign in 3 + 2 + 0 = 5 of 9 pairs
    assert auroc(score, truth) == pytest.approx(5 / 9)
    # precision at each poison: 1/1, 2/3, 3/6
    assert auprc(score, truth) == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert auroc(np.ones(4), np.array([True, False, False, True])) == 0.5  # ties count half
    # FPR 0: threshold above every benign score (0.8) -> only 0.9 is flagged
    assert tpr_at_fpr(score, truth, 0.0) == pytest.approx(1 / 3)
    curve = tradeoff_curve(score, truth, points=4)  # remove 0, 1/3, 2/3, all poisons
    assert curve["benign_removed"] == pytest.approx([0.0, 0.0, 1 / 3, 1.0])


def test_bad_ground_truth():
    with pytest.raises(ValueError, match="both poisoned and benign"):
        auroc(np.ones(3), np.zeros(3, dtype=bool))


def test_cli_screen_end_to_end(tmp_path, worlds, capsys):
    pytest.importorskip("matplotlib")
    pq = pytest.importorskip("pyarrow.parquet")
    w = worlds["clean"]
    write_store(tmp_path / "store", w.image_emb, w.text_emb, shard_rows=2500)
    np.save(tmp_path / "latent.npy", w.latent_emb)
    np.savez(tmp_path / "truth.npz", poisoned=w.poisoned)
    argv = [
        "screen",
        str(tmp_path / "store"),
        "--out",
        str(tmp_path / "o"),
        "--scores",
        "cross_view,alignment",
        "--second-view",
        str(tmp_path / "latent.npy"),
        "--manifest",
        str(tmp_path / "truth.npz"),
        "--remove-fraction",
        "0.05",
        "--json",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["metrics"]["cross_view"]["auroc"] >= 0.9
    assert summary["removal"]["removed"] == 300
    assert summary["removal"]["poisons_removed"] + summary["removal"]["benign_removed"] == 300
    out = tmp_path / "o"
    table = pq.read_table(out / "scores.parquet").to_pydict()
    assert table["rank"][:3] == [1, 2, 3] and table["cross_view"] == sorted(
        table["cross_view"], reverse=True
    )
    keep = (out / "keep.txt").read_text().split()
    assert len(keep) == 6000 - 300
    assert {p.name for p in (out / "plots").iterdir()} == {
        "cdf_cross_view.png",
        "cdf_alignment.png",
        "tradeoff.png",
    }
    assert "Most suspicious pairs" in (out / "report.html").read_text()


def test_cli_screen_errors(tmp_path, capsys):
    assert main(["screen", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    write_store(tmp_path / "s", x, x)
    assert (
        main(
            ["screen", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--scores", "cross_view"]
        )
        == 2
    )
    assert "cross_view needs --second-view" in capsys.readouterr().err
    assert (
        main(["screen", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--scores", "magic"])
        == 2
    )
    assert "unknown score 'magic'" in capsys.readouterr().err


def test_screen_a_dataset_poisoned_by_alignscope(tmp_path, rng, tiny_open_clip, tiny_sscd, capsys):
    """poison -> embed (tiny CLIP + SSCD) -> screen with every score and the poison manifest."""
    pytest.importorskip("matplotlib")
    pq = pytest.importorskip("pyarrow.parquet")
    from PIL import Image

    from alignscope.embed import SSCDEncoder, embed_dataset, load_clip
    from alignscope.io.datasets import open_dataset
    from alignscope.poison.concepts import make_vocabulary
    from alignscope.poison.run import poison_dataset

    data = tmp_path / "data"
    data.mkdir()
    nouns = ["dog", "cat", "car", "boat"]
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            data / f"{i:02d}.png"
        )
        (data / f"{i:02d}.txt").write_text(f"a photo of a {nouns[i % 4]}")
    poison_dataset(
        open_dataset(data),
        tmp_path / "poisoned",
        method="dirty-label",
        concepts=2,
        per_concept=2,
        seed=5,
        vocabulary=make_vocabulary(nouns),
    )
    embed_dataset(
        open_dataset(tmp_path / "poisoned"),
        tmp_path / "store",
        clip=load_clip(tiny_open_clip),
        sscd=SSCDEncoder(tiny_sscd["torchscript"], "sscd-square"),
        progress=False,
    )
    argv = [
        "screen",
        str(tmp_path / "store"),
        "--out",
        str(tmp_path / "o"),
        "--scores",
        ",".join(ALL),
        "--second-view",
        "sscd",
        "--manifest",
        str(tmp_path / "poisoned" / "poison_manifest.parquet"),
        "--remove-fraction",
        "0.25",
        "--k",
        "3",
        "--json",
        "--images",  # thumbnails come only from a dataset the user names
        str(tmp_path / "poisoned"),
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["metrics"]) == set(ALL)
    manifest = pq.read_table(tmp_path / "poisoned" / "poison_manifest.parquet").to_pydict()
    truth = np.zeros(24, dtype=bool)
    truth[np.asarray(manifest["row"])[np.asarray(manifest["poisoned"])]] = True
    scores = pq.read_table(tmp_path / "o" / "scores.parquet").to_pydict()
    removed = np.asarray(scores["removed"])
    flagged = np.asarray(scores["poisoned"])
    np.testing.assert_array_equal(flagged, truth[np.asarray(scores["row"])])  # ids line up
    assert summary["removal"]["removed"] == 6 == int(removed.sum())
    assert summary["removal"]["poisons_removed"] == int((removed & flagged).sum())
    assert summary["removal"]["benign_removed"] == int((removed & ~flagged).sum())
    assert len((tmp_path / "o" / "keep.txt").read_text().split()) == 18
    assert "data:image/png;base64," in (tmp_path / "o" / "report.html").read_text()


def test_a_store_without_captions_is_refused_for_caption_scores(tmp_path, capsys):
    """A captionless dataset was embedded, scored (feature AD 0.0000) and screened silently."""
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    write_store(tmp_path / "s", x, np.tile(x[:1], (30, 1)))  # one text row for every image
    argv = ["screen", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*argv, "--scores", "alignment"]) == 2
    assert "every text embedding is the same" in capsys.readouterr().err
    assert main([*argv, "--scores", "k_distance,lid"]) == 0  # image-only scores still run
