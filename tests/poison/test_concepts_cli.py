"""The Implosion protocol's concept selection end to end: `poison --concepts K` draws K concepts
at random from the pool of the 500 most frequent, `alignscope concepts DATA` ranks a dataset's
nouns, the evaluation's `vocabulary:N` is the pool plus the next frequent nouns, and dirty-label
images are generated from "a photo of {t}". Expected sets and counts come from how each test
built its captions, never from the code under test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alignscope.cli import main
from alignscope.poison.concepts import GENERIC, MODIFIER_WORDS, load_vocabulary


def _write(root, captions, size=4):
    """An image folder: one tiny image and a sidecar caption per row."""
    root.mkdir()
    for i, caption in enumerate(captions):
        Image.new("RGB", (size, size), (i % 256, i // 256, 0)).save(root / f"{i:04d}.png")
        (root / f"{i:04d}.txt").write_text(caption)
    return root


@pytest.fixture(scope="module")
def pool_world(tmp_path_factory):
    """600 nouns of the packaged vocabulary in comma-separated captions (a comma ends a noun
    phrase, so each listed noun is one concept), up to 4 distinct nouns a caption: nouns 0-49
    in 6 captions each, 50-499 in 5, 500-599 in 1. The 500 most frequent are nouns 0-499 and the 50
    most frequent nouns 0-49, whatever the order of ties. (Five captions a concept leave
    dirty-label an unpoisoned image of every target.)"""
    rng = np.random.default_rng(5)
    singles = [
        n
        for n in load_vocabulary().nouns
        if n.isalpha() and n not in MODIFIER_WORDS and n not in GENERIC
    ]
    nouns = [singles[i] for i in rng.choice(len(singles), size=600, replace=False)]
    counts = {n: 6 if i < 50 else 5 if i < 500 else 1 for i, n in enumerate(nouns)}
    captions = []
    # the rare nouns have captions of their own: no poison of a frequent concept takes the one
    # image of a rare target (with --concept-pool 0 a target is any concept of the data)
    for group in (nouns[:500], nouns[500:]):
        mentions = [n for n in group for _ in range(counts[n])]
        current: list[str] = []
        for j in rng.permutation(len(mentions)):
            if mentions[j] in current or len(current) == 4:
                captions.append(", ".join(current))
                current = []
            current.append(mentions[j])
        captions.append(", ".join(current))
    data = _write(tmp_path_factory.mktemp("pool") / "data", captions)
    return data, nouns


def _pairs(capsys, argv):
    assert main([*argv, "--json", "--quiet"]) == 0
    return [tuple(p) for p in json.loads(capsys.readouterr().out)["pairs"]]


def test_concepts_are_drawn_at_random_from_the_pool_of_the_500_most_frequent(
    pool_world, tmp_path, capsys
):
    data, nouns = pool_world
    top500, top50 = set(nouns[:500]), set(nouns[:50])
    base = ["poison", str(data), "--method", "dirty-label", "--per-concept", "1"]
    pool = ["--concepts", "100", "--concept-pool", "500"]
    first = _pairs(capsys, [*base, *pool, "--out", str(tmp_path / "a"), "--seed", "0"])
    again = _pairs(capsys, [*base, *pool, "--out", str(tmp_path / "b"), "--seed", "0"])
    other = _pairs(capsys, [*base, *pool, "--out", str(tmp_path / "c"), "--seed", "1"])
    drawn = [p for p, _ in first]
    assert len(drawn) == len(set(drawn)) == 100
    assert set(drawn) <= top500
    # not the 100 most frequent (ranks 51-100 tie: alphabetical among nouns 50-499)
    assert set(drawn) != top50 | set(sorted(nouns[50:500])[:50])
    assert all(t in top500 and t != p for p, t in first)  # the target from the same pool
    assert again == first  # same seed, same subset and targets
    assert {p for p, _ in other} != set(drawn) and {p for p, _ in other} <= top500
    # the pool is the default; --concept-pool 0 poisons exactly the 50 most frequent
    default = _pairs(capsys, [*base, "--concepts", "100", "--out", str(tmp_path / "d")])
    assert default == first
    exact = ["--concepts", "50", "--concept-pool", "0", "--out", str(tmp_path / "e")]
    assert {p for p, _ in _pairs(capsys, [*base, *exact])} == top50
    window = ["--concept-ranks", "1-50", "--out", str(tmp_path / "f")]
    ranked = _pairs(capsys, [*base, *window])
    assert {p for p, _ in ranked} == top50 and all(t in top50 for _, t in ranked)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--concepts", "100", "--concept-pool", "50"],
            "--concept-pool 50 is smaller than --concepts 100: give a pool of at least K (500, "
            "the paper's), or 0 to poison exactly the K most frequent",
        ),
        (
            ["--concept-ranks", "1-5", "--concept-pool", "50"],
            "--concept-pool goes with --concepts K (the pool K concepts are drawn from); "
            "--concept-ranks A-B is its own pool",
        ),
        (
            ["--concepts", "2", "--dirty-images", "generated"],
            "--dirty-images generated needs --anchor-pipeline DIR (a diffusers text-to-image "
            "pipeline; SD 1.5 in the paper)",
        ),
        (
            ["--concepts", "2", "--vocabulary", "missing.txt"],
            "--vocabulary: vocabulary file 'missing.txt' does not exist",
        ),
    ],
)
def test_bad_concept_options_are_refused_in_one_line(tmp_path, capsys, flags, message):
    data = _write(tmp_path / "data", ["a dog", "a cat"])
    argv = ["poison", str(data), "--out", str(tmp_path / "o"), "--method", "dirty-label"]
    assert main([*argv, *flags]) == 2
    assert capsys.readouterr().err == f"alignscope: error: {message}\n"


def test_more_concepts_than_the_captions_name_is_refused(tmp_path, capsys):
    """C_P above the concepts the data shows used to poison fewer concepts without a word."""
    data = _write(tmp_path / "data", ["a dog", "a cat", "a dog and a cat", "a tree"])
    argv = ["poison", str(data), "--out", str(tmp_path / "o"), "--method", "dirty-label"]
    assert main([*argv, "--concepts", "4", "--per-concept", "1"]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: C_P=4 concepts asked for, but the captions name only 3 concepts of "
        "the vocabulary (generic words excluded): lower --concepts, or give a --vocabulary that "
        "covers the data\n"
    )


# Captions and, by hand, the concepts each names (the rules of caption_concepts' docstring;
# "red", "front", "crystal", "photo" and "next" are not nouns of the vocabulary or not
# counted); each caption appears `times` times, so a concept's count is a sum over them.
CAPTIONS = [
    # (caption, concepts it names, times)
    ("A woman in a red dress holding flowers", {"woman", "dress", "flower"}, 7),
    ("two dogs and a cat on a sofa", {"dog", "cat", "sofa"}, 6),
    ("Hot dogs on a plate", {"hot dog", "plate"}, 5),  # not "dog"
    ("a man wearing a hat in front of a house", {"man", "hat", "house"}, 4),
    ("a crystal chandelier above a chandelier", {"chandelier"}, 3),  # once per caption
    ("Trees and a HOUSE", {"tree", "house"}, 2),
    ("a teddy bear next to boxes of strawberries", {"teddy bear", "box", "strawberry"}, 1),
    ("a photo of a dog", {"dog"}, 1),
    ("", set(), 2),
]


def _independent_ranking():
    counts: dict[str, int] = {}
    for _, named, times in CAPTIONS:
        for noun in named:
            counts[noun] = counts.get(noun, 0) + times
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


@pytest.fixture
def caption_world(tmp_path, rng):
    captions = [c for c, _, times in CAPTIONS for _ in range(times)]
    order = rng.permutation(len(captions))
    return _write(tmp_path / "data", [captions[i] for i in order])


def test_concepts_ranks_a_datasets_nouns_as_an_independent_count(caption_world, tmp_path, capsys):
    expected = _independent_ranking()
    assert expected[:3] == [("dog", 7), ("dress", 7), ("flower", 7)]  # the reference itself
    out = tmp_path / "nouns.txt"
    assert main(["concepts", str(caption_world), "--top", "5", "--out", str(out)]) == 0
    assert out.read_text() == "".join(f"{noun}\n" for noun, _ in expected[:5])
    assert capsys.readouterr().out == (
        f"the 5 most frequent of the {len(expected)} concepts named in 31 captions, written to "
        f"{out}\n"
    )
    # the file is claimed: another --top into it is refused, the same run again is not
    assert main(["concepts", str(caption_world), "--top", "5", "--out", str(out)]) == 0
    assert main(["concepts", str(caption_world), "--top", "3", "--out", str(out)]) == 2
    assert "top: 5 there, 3 now" in capsys.readouterr().err
    assert out.read_text() == "".join(f"{noun}\n" for noun, _ in expected[:5])
    mine = tmp_path / "mine.txt"
    mine.write_text("my own list\n")  # a file alignscope did not write is never replaced
    assert main(["concepts", str(caption_world), "--out", str(mine)]) == 2
    assert mine.read_text() == "my own list\n"
    capsys.readouterr()
    assert main(["concepts", str(caption_world), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["captions"] == 31 and report["vocabulary"] == "packaged"
    assert [(t["noun"], t["captions"]) for t in report["top"]] == expected  # default --top 1000
    assert [t["rank"] for t in report["top"]] == list(range(1, len(expected) + 1))
    # `poison --vocabulary FILE` finds concepts with the file's nouns only: of "sofa" (6
    # captions) and "plate" (5), the top one is poisoned toward the other (the packaged
    # vocabulary's top concept is "dog")
    vocabulary = tmp_path / "mine.txt"
    vocabulary.write_text("# sofas and plates only\nsofa\nPlate\n")
    argv = ["poison", str(caption_world), "--out", str(tmp_path / "p"), "--method", "dirty-label"]
    argv += ["--vocabulary", str(vocabulary), "--concepts", "1", "--concept-pool", "0"]
    assert _pairs(capsys, [*argv, "--per-concept", "1"]) == [("sofa", "plate")]


def test_concepts_of_a_dataset_without_captions_says_what_to_check(tmp_path, capsys):
    data = _write(tmp_path / "data", ["", ""])
    assert main(["concepts", str(data)]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: DATASET: no caption names a noun of the vocabulary (2 records, 2 "
        "without a caption); check that the dataset has its captions (sidecar .txt, "
        "captions.jsonl or .csv), or give --vocabulary\n"
    )


def test_the_evaluations_vocabulary_is_the_pool_plus_other_frequent_nouns(caption_world):
    from alignscope.evaluate.config import evaluation_concepts, vocabulary_concepts

    ranked = [f"n{i:04d}" for i in range(2500)]  # most frequent first
    # the default protocol: the pool is ranks 1-500, so the 1000 concepts are ranks 1-1000
    assert evaluation_concepts(ranked, ranked[:500], 1000) == ranked[:1000]
    # a pool of ranks 1501-2000 (the paper's Table 2) and the 500 most frequent outside it
    assert evaluation_concepts(ranked, ranked[1500:2000], 1000) == ranked[1500:2000] + ranked[:500]
    # from a poisoned set's own captions: here fewer nouns than N, all of them, ranked
    got = vocabulary_concepts(1000, poisoned_set=caption_world)
    assert got == [noun for noun, _ in _independent_ranking()]
    assert vocabulary_concepts(3, poisoned_set=caption_world) == ["dog", "dress", "flower"]
    # without data there is nothing to rank: a seeded sample of the packaged nouns
    sample = vocabulary_concepts(1000)
    assert len(set(sample)) == 1000 and set(sample) <= set(load_vocabulary().nouns)
    assert sample == vocabulary_concepts(1000)
    with pytest.raises(ValueError, match=r"^vocabulary:N needs N in \[1, 2197\], got 2198$"):
        vocabulary_concepts(2198)


def test_dirty_label_images_are_generated_from_a_photo_of_t(
    tmp_path, rng, tiny_sd_dir, capsys, monkeypatch
):
    """The paper's dirty-label poison: an image generated from "a photo of {t}" (guidance 7.5,
    50 steps, the pipeline's resolution), one seed per poison, with p's caption; the dataset's
    images of t only with --dirty-images dataset."""
    pq = pytest.importorskip("pyarrow.parquet")
    torch = pytest.importorskip("torch")
    from diffusers import StableDiffusionPipeline

    from alignscope.poison import anchors

    assert (anchors.DIRTY_LABEL_GUIDANCE, anchors.DIRTY_LABEL_STEPS) == (7.5, 50)  # Sec. 5.1
    monkeypatch.setattr(anchors, "DIRTY_LABEL_STEPS", 3)  # 50 tiny-model steps take 4 s here

    nouns = ["dog", "cat", "car"]
    captions = [f"a photo of a {nouns[i % 3]}" for i in range(12)]
    data = tmp_path / "data"
    data.mkdir()
    for i, caption in enumerate(captions):
        image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(image).save(data / f"{i:02d}.png")
        (data / f"{i:02d}.txt").write_text(caption)
    argv = ["poison", str(data), "--method", "dirty-label", "--concepts", "1"]
    argv += ["--per-concept", "2", "--anchor-pipeline", str(tiny_sd_dir), "--seed", "3"]
    assert main([*argv, "--out", str(tmp_path / "g"), "--quiet"]) == 0
    capsys.readouterr()
    manifest = pq.read_table(tmp_path / "g" / "poison_manifest.parquet").to_pylist()
    poisoned = [row for row in manifest if row["poisoned"]]
    assert len(poisoned) == 2
    reference = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    seeds = set()
    for row in poisoned:
        params = json.loads(row["params"])
        t = row["target_concept"]
        assert params["prompt"] == f"a photo of {t}"
        seeds.add(params["generated_seed"])
        expected = reference(
            f"a photo of {t}",
            num_inference_steps=3,
            guidance_scale=7.5,
            generator=torch.Generator("cpu").manual_seed(params["generated_seed"]),
        ).images[0]
        written = np.asarray(Image.open(tmp_path / "g" / row["written_as"]))
        assert written.shape == (16, 16, 3)  # the tiny pipeline's own resolution
        np.testing.assert_array_equal(written, np.asarray(expected.convert("RGB")))
        caption = (tmp_path / "g" / row["written_as"]).with_suffix(".txt").read_text()
        assert caption == captions[row["row"]]  # p's caption, kept
    assert len(seeds) == 2  # a fresh image per poison
    assert main([*argv, "--out", str(tmp_path / "d"), "--dirty-images", "dataset", "--quiet"]) == 0
    manifest = pq.read_table(tmp_path / "d" / "poison_manifest.parquet").to_pylist()
    for row in (r for r in manifest if r["poisoned"]):
        donor = json.loads(row["params"])["donor_row"]
        assert row["target_concept"] in captions[donor]


def _evaluation_concepts(capsys, argv, count):
    """Poison with ``argv``, then the concepts ``evaluate --concepts vocabulary:N
    --poison-manifest`` evaluates on the result."""
    from alignscope.cli.evaluate import _concept_list

    assert main([*argv, "--per-concept", "1", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    manifest = argv[argv.index("--out") + 1] + "/poison_manifest.parquet"
    return report, _concept_list(f"vocabulary:{count}", poison_manifest=manifest)


def test_the_evaluation_starts_from_the_pool_the_poisoning_drew_from(pool_world, tmp_path, capsys):
    """A window of ranks and a --vocabulary of the run's own are what the evaluation's
    vocabulary:N is built from, not the packaged vocabulary's 500 most frequent."""
    data, nouns = pool_world
    by_rank = sorted(nouns[:50]) + sorted(nouns[50:500]) + sorted(nouns[500:])  # ties: a-z
    base = ["poison", str(data), "--method", "dirty-label"]
    # ranks 51-60 are the pool: first, then the most frequent outside it
    argv = [*base, "--concept-ranks", "51-60", "--out", str(tmp_path / "window")]
    report, got = _evaluation_concepts(capsys, argv, 20)
    assert report["concept_pool"] == by_rank[50:60] and report["vocabulary"] is None
    assert got == by_rank[50:60] + by_rank[:10]
    # a vocabulary of 5 frequent and 100 rare nouns: its nouns, ranked by the poisoned captions
    mine = tmp_path / "mine.txt"
    mine.write_text("\n".join(nouns[:5] + nouns[500:]) + "\n")
    argv = [*base, "--vocabulary", str(mine), "--concepts", "2", "--concept-pool", "3"]
    report, got = _evaluation_concepts(capsys, [*argv, "--out", str(tmp_path / "own")], 8)
    assert report["concept_pool"] == sorted(nouns[:5])[:3]
    assert report["vocabulary"] == sorted(nouns[:5] + nouns[500:])
    assert got == sorted(nouns[:5]) + sorted(nouns[500:])[:3]


def test_an_unrecorded_pool_is_refused_where_it_matters(pool_world, tmp_path, capsys):
    from alignscope.cli._common import UsageError
    from alignscope.cli.evaluate import _concept_list

    data, nouns = pool_world
    out = tmp_path / "old"
    argv = ["poison", str(data), "--method", "dirty-label", "--concepts", "2", "--out", str(out)]
    _evaluation_concepts(capsys, argv, 3)
    report = out / "poison_report.json"
    saved = json.loads(report.read_text())
    del saved["concept_pool"], saved["vocabulary"]  # as alignscope wrote it before
    report.write_text(json.dumps(saved))
    manifest = str(out / "poison_manifest.parquet")
    redo = (
        "rerun `alignscope poison` with the same settings into a new folder (it records them), "
        "or give the concepts to evaluate (--concepts FILE)"
    )
    with pytest.raises(UsageError) as exc:
        _concept_list("vocabulary:3", poison_manifest=manifest)
    assert str(exc.value) == (
        f"--concepts vocabulary:N: the poison report {str(report)!r} records no concept pool (an "
        "older alignscope wrote it), so the pool and vocabulary its dirty-label concepts came "
        f"from are unknown: {redo}"
    )
    report.unlink()
    with pytest.raises(UsageError) as exc:
        _concept_list("vocabulary:3", poison_manifest=manifest)
    assert str(exc.value) == (
        f"--concepts vocabulary:N: {str(out)!r} has a poison manifest of a dirty-label attack but "
        f"no poison_report.json, which records the concept pool: {redo}"
    )
    # a trigger attack has no pool: its old report is read as the paper's default
    saved["method"] = "badnets-1"
    report.write_text(json.dumps(saved))
    top = sorted(nouns[:50])[:3]
    assert _concept_list("vocabulary:3", poison_manifest=manifest) == top
