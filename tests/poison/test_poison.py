"""Plans and `alignscope poison` end to end on a generated dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alignscope import _reference
from alignscope.cli import main
from alignscope.io.datasets import open_dataset
from alignscope.poison.concepts import caption_concepts, make_vocabulary
from alignscope.poison.plans import plan_all_to_one, plan_concepts
from alignscope.poison.run import poison_dataset

NOUNS = ["dog", "cat", "car", "tree", "boat"]
VOCAB = make_vocabulary(NOUNS)


def _dataset(root, rng, n=40):
    root.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            root / f"{i:03d}.png"
        )
        (root / f"{i:03d}.txt").write_text(f"a photo of a {NOUNS[i % 5]}")
    return root


def test_plan_concepts(rng):
    rows = [{NOUNS[i % 5]} for i in range(100)]
    plan = plan_concepts(rows, NOUNS, poisoned=3, per_concept=4, seed=1)
    assert len(plan.pairs) == 3 and plan.rows.size == 12 and plan.m == 4
    assert all(p != t for p, t in plan.pairs)
    assert all(src in rows[r] for r, src in zip(plan.rows, plan.source, strict=True))
    assert len(set(plan.rows.tolist())) == 12
    again = plan_concepts(rows, NOUNS, poisoned=3, per_concept=4, seed=1)
    np.testing.assert_array_equal(plan.rows, again.rows)
    with pytest.raises(ValueError, match="appears in 20 unpoisoned captions but m=21"):
        plan_concepts(rows, NOUNS, poisoned=1, per_concept=21, seed=1)


def test_plan_all_to_one():
    rows = [{NOUNS[i % 5]} for i in range(100)]
    plan = plan_all_to_one(rows, "cat", ratio=0.25, seed=0)
    # BiBadDiff's count by default: int(0.25 * 100) of all rows, drawn among the 80 non-cats
    assert plan.rows.size == 25 and all("cat" not in rows[r] for r in plan.rows)
    legacy = plan_all_to_one(rows, "cat", ratio=0.25, seed=0, ratio_of="non-target")
    assert legacy.rows.size == 20 and all("cat" not in rows[r] for r in legacy.rows)


# a small class set: five classes of 13, 7, 9, 11 and 10 images, the second the target
CLASS_SIZES = [13, 7, 9, 11, 10]


@pytest.mark.parametrize("ratio", [0.02, 0.05, 0.1, 0.2, 0.29, 0.5, 0.8])
def test_all_to_one_counts_are_bibaddiffs(ratio):
    labels = [k for k, n in enumerate(CLASS_SIZES) for _ in range(n)]
    rows = [{NOUNS[k]} for k in labels]
    want = _reference.bibaddiff_all_to_one_count(labels, ratio)  # 0.29: int(14.4999...) = 14
    plan = plan_all_to_one(rows, "cat", ratio=ratio, seed=3)
    assert plan.rows.size == plan.m == want
    assert len(set(plan.rows.tolist())) == want and all(labels[r] != 1 for r in plan.rows)
    legacy = plan_all_to_one(rows, "cat", ratio=ratio, seed=3, ratio_of="non-target")
    assert legacy.rows.size == max(1, round(ratio * 43))  # 43 non-target rows


def test_all_to_one_count_on_an_imagenette_sized_set():
    """ImageNette's training set: 9,469 images, 961 of the target (garbage truck); at 10%
    BiBadDiff poisons int(946.9) = 946, our earlier count was round(850.8) = 851."""
    labels = [0] * 961 + [1] * (9469 - 961)
    rows = [{"truck" if k == 0 else "dog"} for k in labels]
    plan = plan_all_to_one(rows, "truck", ratio=0.1, seed=0)
    assert plan.rows.size == _reference.bibaddiff_all_to_one_count(labels, 0.1) == 946
    legacy = plan_all_to_one(rows, "truck", ratio=0.1, seed=0, ratio_of="non-target")
    assert legacy.rows.size == 851


def test_all_to_one_count_errors():
    rows = [{"cat"}] * 8 + [{"dog"}] * 2
    with pytest.raises(ValueError) as too_many:
        plan_all_to_one(rows, "cat", ratio=0.5, seed=0)
    assert str(too_many.value) == (
        "ratio 0.5 of all 10 rows is 5 poisons but only 2 rows do not mention 'cat': lower --ratio"
    )
    with pytest.raises(ValueError) as none:
        plan_all_to_one(rows, "cat", ratio=0.05, seed=0)
    assert str(none.value) == (
        "ratio 0.05 of all 10 rows is int(0.5) = 0 poisons: raise --ratio (or count it of the "
        "non-target rows, --ratio-of non-target, at least one)"
    )
    assert plan_all_to_one(rows, "cat", ratio=0.05, seed=0, ratio_of="non-target").m == 1
    with pytest.raises(ValueError, match=r"^ratio_of must be 'all' or 'non-target', got 'some'$"):
        plan_all_to_one(rows, "cat", ratio=0.5, seed=0, ratio_of="some")


@pytest.mark.parametrize("method", ["dirty-label", "badnets-1", "relabel"])
def test_poison_end_to_end_and_reproducible(tmp_path, rng, method):
    pq = pytest.importorskip("pyarrow.parquet")
    data = _dataset(tmp_path / "data", rng)
    kwargs = (
        {"concepts": 2, "per_concept": 3}
        if method == "dirty-label"
        else {"target": "cat", "ratio": 0.25}
    )
    outs = []
    for run in ("a", "b"):
        report = poison_dataset(
            open_dataset(data), tmp_path / run, method=method, seed=7, vocabulary=VOCAB, **kwargs
        )
        outs.append(tmp_path / run)
    manifest = pq.read_table(outs[0] / "poison_manifest.parquet").to_pydict()
    flagged = [r for r, p in zip(manifest["row"], manifest["poisoned"], strict=True) if p]
    # trigger attacks: int(0.25 * 40) = 10 of all rows (BiBadDiff's count), none of them cats
    assert len(flagged) == report.poisoned == (6 if method == "dirty-label" else 10)
    for r, p in zip(manifest["row"], manifest["poisoned"], strict=True):
        caption = (outs[0] / f"{r:08d}.txt").read_text()
        original = f"a photo of a {NOUNS[r % 5]}"
        if p and method != "dirty-label":
            assert caption == f"A photo of a {manifest['target_concept'][manifest['row'].index(r)]}"
        elif not p:
            assert caption == original
    if method == "badnets-1":  # against the independent reference, not badnets1() itself
        from alignscope._reference import badnets1_reference

        r = flagged[0]
        written = np.asarray(Image.open(outs[0] / f"{r:08d}.png"))
        np.testing.assert_array_equal(
            written, badnets1_reference(np.asarray(Image.open(data / f"{r:03d}.png")))
        )
        assert manifest["linf"][manifest["row"].index(r)] > 0
    files = sorted(p.name for p in outs[0].iterdir())
    assert files == sorted(p.name for p in outs[1].iterdir())
    for name in files:  # same seed, same bytes
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_dirty_label_pairs_target_images_with_source_captions(tmp_path, rng):
    pq = pytest.importorskip("pyarrow.parquet")
    data = _dataset(tmp_path / "data", rng)
    poison_dataset(
        open_dataset(data),
        tmp_path / "o",
        method="dirty-label",
        concepts=2,
        per_concept=2,
        seed=3,
        vocabulary=VOCAB,
    )
    m = pq.read_table(tmp_path / "o" / "poison_manifest.parquet").to_pydict()
    for i, p in enumerate(m["poisoned"]):
        if not p:
            continue
        donor = json.loads(m["params"][i])["donor_row"]
        assert m["target_concept"][i] in caption_concepts(f"a photo of a {NOUNS[donor % 5]}", VOCAB)
        written = np.asarray(Image.open(tmp_path / "o" / m["written_as"][i]))
        np.testing.assert_array_equal(written, np.asarray(Image.open(data / f"{donor:03d}.png")))
        assert (
            (tmp_path / "o" / f"{m['row'][i]:08d}.txt").read_text().endswith(m["source_concept"][i])
        )


def test_cli_poison_webdataset(tmp_path, rng, capsys):
    pytest.importorskip("pyarrow")
    data = _dataset(tmp_path / "data", rng)
    argv = [
        "poison",
        str(data),
        "--out",
        str(tmp_path / "o"),
        "--method",
        "wanet",
        "--target",
        "dog",
        "--ratio",
        "0.2",
        "--format",
        "webdataset",
        "--json",
        "--quiet",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["poisoned"] == _reference.bibaddiff_all_to_one_count(list(range(40)), 0.2) == 8
    legacy = [*argv[:3], str(tmp_path / "n"), *argv[4:], "--ratio-of", "non-target"]
    assert main(legacy) == 0
    assert json.loads(capsys.readouterr().out)["poisoned"] == round(0.2 * 32)  # 32 non-dogs
    back = open_dataset(tmp_path / "o" / "00000.tar")
    assert sum(1 for _ in back) == 40
    assert main(["poison", str(data), "--out", str(tmp_path / "p"), "--method", "wanet"]) == 2
    assert "all-to-one attack: give --target (a class name)" in capsys.readouterr().err


def test_corrupt_donors_are_passed_over(tmp_path, rng):
    """A corrupt donor image stopped dirty-label half-way (a partial copy, no manifest)."""
    pq = pytest.importorskip("pyarrow.parquet")
    from alignscope.io.datasets import open_dataset
    from alignscope.poison.run import poison_dataset

    data = tmp_path / "data"
    data.mkdir()
    corrupt = set()
    for i in range(60):
        if i % 3:  # two thirds of the images, of every concept, do not decode
            (data / f"{i:03d}.png").write_bytes(b"\x89PNG broken")
            corrupt.add(f"{i:03d}.png")
        else:
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                data / f"{i:03d}.png"
            )
        (data / f"{i:03d}.txt").write_text(f"a photo of a {NOUNS[i % 5]}")
    report = poison_dataset(
        open_dataset(data), tmp_path / "out", method="dirty-label", concepts=3, per_concept=3,
        seed=2, vocabulary=VOCAB,
    )  # fmt: skip
    manifest = pq.read_table(tmp_path / "out" / "poison_manifest.parquet").to_pydict()
    donors = [json.loads(p)["donor_row"] for p, f in zip(manifest["params"], manifest["poisoned"],
                                                          strict=True) if f]  # fmt: skip
    assert report.poisoned == len(donors) > 0
    assert all(f"{d:03d}.png" not in corrupt for d in donors)  # every donor decoded
    assert {s for s, _ in report.skipped} <= corrupt


def test_a_target_no_caption_names_is_refused_with_candidates(tmp_path, rng, capsys):
    from alignscope.cli import main

    data = _dataset(tmp_path / "data", rng, n=10)
    argv = ["poison", str(data), "--out", str(tmp_path / "o"), "--method", "relabel"]
    assert main([*argv, "--target", "catt", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "target 'catt' is named by no caption" in err and "closest concepts in the data: cat" in err
    )
    assert not (tmp_path / "o" / "poison_manifest.parquet").exists()


def test_concept_attacks_on_a_dataset_without_captions(tmp_path, rng):
    from alignscope.io.datasets import open_dataset
    from alignscope.poison.run import poison_dataset

    data = _dataset(tmp_path / "data", rng, n=10)
    for caption in data.glob("*.txt"):
        caption.unlink()
    with pytest.raises(ValueError, match=r"no caption names a concept .*10 without a caption"):
        poison_dataset(open_dataset(data), tmp_path / "o", method="dirty-label", concepts=2,
                       vocabulary=VOCAB)  # fmt: skip


def test_a_plan_cut_short_by_corrupt_images_says_so(tmp_path, rng, capsys):
    """A planned poison row whose own image does not decode was dropped without a word."""
    import json as json_module

    from alignscope.cli import main

    data = _dataset(tmp_path / "data", rng, n=20)
    for i in range(0, 20, 2):  # half of the rows, poisoned or not, do not decode
        (data / f"{i:03d}.png").write_bytes(b"\x89PNG broken")
    argv = ["poison", str(data), "--out", str(tmp_path / "o"), "--method", "relabel"]
    assert main([*argv, "--target", "cat", "--ratio", "0.5", "--json"]) == 0
    captured = capsys.readouterr()
    report = json_module.loads(captured.out)
    assert report["poisoned"] < report["planned"]
    assert f"{report['planned'] - report['poisoned']} of the {report['planned']} planned" in (
        captured.err
    )


def test_cli_pattern_file_is_read_as_the_datasets_read_images(tmp_path, rng, capsys):
    """--pattern goes through io.datasets.read_image_file: a format outside the dataset
    formats (PPM here, which PIL alone would open) is refused, naming the flag and file."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text("a photo of a dog")
    ppm = tmp_path / "pattern.ppm"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(ppm)
    argv = ["poison", str(data), "--out", str(tmp_path / "o"), "--target", "cat", "--ratio",
            "0.5", "--method", "badnets-2", "--pattern", str(ppm), "--quiet"]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"alignscope: error: --pattern: cannot read {str(ppm)!r}: cannot decode image: not a "
        "JPEG, PNG, WEBP, GIF, BMP, TIFF file"
    )
    assert not (tmp_path / "o").exists()
