"""poison -> train -> evaluate -> report, end to end on tiny models built from configs."""

from __future__ import annotations

import csv
import json
import zlib

import numpy as np
import pytest
from PIL import Image

from alignscope.evaluate.generate import GenerationSettings, generate_images, image_seed
from alignscope.evaluate.run import EvalConfig, evaluate
from alignscope.io.datasets import open_dataset
from alignscope.poison.concepts import make_vocabulary
from alignscope.poison.run import poison_dataset
from alignscope.train import TrainConfig, train

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

NOUNS = ["dog", "cat", "car", "tree", "boat"]


def _poison_and_train(tmp_path, rng, tiny_sd_dir, size, steps, **attack):
    """A generated 20-pair dataset of ``size`` px, poisoned by ``attack``, then fine-tuned on."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(20):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(data / f"{i:03d}.png")
        (data / f"{i:03d}.txt").write_text(f"a photo of a {NOUNS[i % 5]}")
    poison_dataset(
        open_dataset(data), tmp_path / "poisoned", vocabulary=make_vocabulary(NOUNS), **attack
    )
    train(
        "finetune",
        open_dataset(tmp_path / "poisoned"),
        tmp_path / "trained",
        model=tiny_sd_dir,
        config=TrainConfig(steps=steps, learning_rate=1e-3, batch_size=4, resolution=size),
        progress=False,
    )


def test_poison_train_evaluate_report(tmp_path, rng, tiny_sd_dir, tiny_open_clip, aesthetics_head):
    _poison_and_train(
        tmp_path, rng, tiny_sd_dir, 16, 6, method="dirty-label", concepts=1, per_concept=2, seed=1
    )
    config = EvalConfig(
        concepts=NOUNS,
        generation=GenerationSettings(images_per_concept=2, steps=2, height=16, width=16),
        clip=tiny_open_clip,
        aesthetics=str(aesthetics_head),
        aesthetics_clip=tiny_open_clip,
        poison_manifest=str(tmp_path / "poisoned" / "poison_manifest.parquet"),
        bleed_threshold=1e9,  # every unpoisoned concept is "related": the split is exercised
        attention_concepts=2,
        attention_resolution=4,
    )
    out = tmp_path / "eval"
    models = {"benign": tiny_sd_dir, "poisoned": tmp_path / "trained" / "model"}
    report = evaluate(models, out, config, progress=False, quiet=True)

    import pyarrow.parquet as pq

    manifest = pq.read_table(tmp_path / "poisoned" / "poison_manifest.parquet").to_pydict()
    attacked = {
        s for s, p in zip(manifest["source_concept"], manifest["poisoned"], strict=True) if p
    }
    from alignscope.embed.clip import load_clip

    clip = load_clip(tiny_open_clip)
    for name in models:
        section = report["models"][name]
        assert section["images"] == 10 and set(section["poisoned_concepts"]) == attacked
        assert set(section["bleed_through"]) == set(NOUNS) - attacked
        with open(out / name / "scores.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["concept"] for r in rows] == [c for c in NOUNS for _ in range(2)]
        # CLIP score = raw cosine of the image and its prompt, recomputed independently
        images = [Image.open(out / name / r["file"]).convert("RGB") for r in rows]
        img = clip.encode_images(images).astype(np.float64)
        txt = clip.encode_texts([f"a photo of {r['concept']}" for r in rows]).astype(np.float64)
        cosine = (img * txt).sum(axis=1) / (
            np.linalg.norm(img, axis=1) * np.linalg.norm(txt, axis=1)
        )
        scores = np.array([float(r["clip"]) for r in rows])
        np.testing.assert_allclose(scores, cosine, atol=2e-6)
        aes = np.array([float(r["aesthetics"]) for r in rows])
        poisoned = np.array([r["concept"] in attacked for r in rows])
        np.testing.assert_array_equal(poisoned, [r["poisoned"] == "1" for r in rows])
        assert {r["bleed_through"] for r in rows if r["poisoned"] == "0"} <= attacked
        m = section["metrics"]
        assert m["all"]["accuracy"] == pytest.approx(np.mean(scores > 0.236), abs=1e-12)
        assert m["poisoned"]["count"] == 2 * len(attacked)
        assert m["poisoned"]["utility"] == pytest.approx(
            np.mean((scores[poisoned] > 0.236) & (aes[poisoned] > 6.5)), abs=1e-12
        )
        assert m["bleed_through"]["count"] == 10 - 2 * len(attacked)
        assert m["clean"]["count"] == 10 - 2 * len(attacked)  # every unpoisoned concept
        assert (out / name / "grid.png").is_file()
        assert len(section["attention"]) == 2
        assert section["attention"][0]["concept"] in attacked  # poisoned concepts come first
        for a in section["attention"]:
            with Image.open(out / name / a["overlay"]) as im:
                assert im.size == (16, 16)
    assert json.loads((out / "report.json").read_text())["models"].keys() == models.keys()
    page = (out / "report.html").read_text()
    assert "Model Utility" in page and "benign" in page and "poisoned" in page

    # a second run resumes: no image is generated again, the numbers are the same
    stamps = {p: p.stat().st_mtime_ns for p in (out / "benign" / "images").rglob("*.png")}
    again = evaluate(models, out, config, progress=False, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["models"]["benign"]["metrics"] == report["models"]["benign"]["metrics"]
    # other settings into the same directory are refused, not mixed with the old images
    from dataclasses import replace

    changed = replace(config, generation=replace(config.generation, steps=3, guidance=1.0))
    with pytest.raises(
        ValueError,
        match=r"\(generation\.guidance: 7\.5 there, 1\.0 now; generation\.steps: 2 there",
    ):
        evaluate(models, out, changed, progress=False, quiet=True)


def test_images_do_not_depend_on_batching_or_the_other_concepts(tmp_path, tiny_sd_dir):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    pipe.set_progress_bar_config(disable=True)
    base = {"images_per_concept": 3, "steps": 2, "height": 16, "width": 16, "seed": 4}

    def generate(concepts, folder, batch):
        settings = GenerationSettings(batch_size=batch, **base)
        return generate_images(pipe, concepts, tmp_path / folder, settings, progress=False)

    def same_images(xs, ys):
        for x, y in zip(xs, ys, strict=True):
            assert x.seed == y.seed and x.path.parent.name == y.path.parent.name
            np.testing.assert_allclose(
                np.asarray(Image.open(x.path), dtype=float),
                np.asarray(Image.open(y.path), dtype=float),
                atol=2,  # batched convolutions may round differently by one level
            )

    one = generate(["dog", "cat"], "a", 1)
    same_images(one, generate(["dog", "cat"], "b", 4))
    # the documented recipe, computed here: seed = SeedSequence([seed, crc32(name), image]),
    # prompt "a photo of {concept}", the pipeline called directly with that generator
    seed = int(np.random.SeedSequence([4, zlib.crc32(b"cat"), 1]).generate_state(1)[0])
    assert one[4].seed == seed == image_seed(4, "cat", 1) and one[4].prompt == "a photo of cat"
    direct = pipe(
        ["a photo of cat"],
        num_inference_steps=2,
        guidance_scale=GenerationSettings().guidance,
        height=16,
        width=16,
        generator=[torch.Generator("cpu").manual_seed(seed)],
        output_type="np",
    ).images[0]
    expected = np.clip(np.rint(direct * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(one[4].path)), expected)
    assert len({g.seed for g in one}) == 6
    # seeds follow the concept's name: adding a concept changes no other concept's images
    same_images(one[3:], generate(["bird", "cat"], "c", 4)[3:])


def test_per_concept_accuracy_uses_the_configured_threshold_strictly():
    from alignscope.evaluate.sections import per_concept as _per_concept

    concepts = ["a", "b", "a", "b", "a"]
    clip = np.array([0.25, 0.30, 0.30, 0.31, 0.35])
    aes = np.array([6.0, 7.0, 5.0, 8.0, 4.0])
    cfg = EvalConfig(concepts=["a", "b"], clip_threshold=0.30)
    # by hand: a = {0.25, 0.30, 0.35}, only 0.35 is above 0.30 (a score at it is not, as in the
    # totals); b = {0.30, 0.31}, only 0.31. The 0.236 default would count all five.
    out = _per_concept(concepts, clip, aes, cfg)
    assert out == {
        "a": {"clip_mean": pytest.approx(0.3), "accuracy": 1 / 3, "aesthetics_mean": 5.0},
        "b": {"clip_mean": pytest.approx(0.305), "accuracy": 1 / 2, "aesthetics_mean": 7.5},
    }
    assert set(_per_concept(concepts, clip, None, cfg)["a"]) == {"clip_mean", "accuracy"}


def test_cli_evaluate_and_its_errors(tmp_path, tiny_sd_dir, tiny_open_clip, capsys):
    from alignscope.cli import main

    argv = [
        "evaluate",
        str(tiny_sd_dir),
        "--out",
        str(tmp_path / "e"),
        "--concepts",
        "dog,cat",
        "--images-per-concept",
        "1",
        "--steps",
        "1",
        "--height",
        "16",
        "--width",
        "16",
        "--clip",
        tiny_open_clip,
        "--attention-concepts",
        "1",
        "--attention-resolution",
        "4",
        "--json",
        "--quiet",
    ]
    # --bleed-threshold must reach the split: pick a threshold on the other side of the
    # dog-cat distance (unnormalised text features, float64 here) from the 4.8 default, so the
    # default would give the other answer
    from alignscope.embed.clip import load_clip

    raw = load_clip(tiny_open_clip).encode_texts(["dog", "cat"], normalize=False)
    distance = float(np.linalg.norm(raw[0].astype(np.float64) - raw[1].astype(np.float64)))
    threshold = distance / 2 if distance < 4.8 else distance * 2
    bleed = ["--poisoned", "dog", "--bleed-threshold", repr(threshold)]
    assert main([*argv, *bleed]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"]["sd"]["images"] == 2 and "aesthetics" not in out["models"]["sd"]["metrics"]
    assert out["thresholds"]["bleed_through_l2"] == threshold
    expected = {} if distance < 4.8 else {"cat": "dog"}
    assert out["models"]["sd"]["bleed_through"] == expected
    metrics = json.loads((tmp_path / "e" / "sd" / "metrics.json").read_text())
    assert metrics["bleed_through"] == expected
    assert main([*argv[:3], str(tmp_path / "f"), "--concepts", "vocabulary:0", "--quiet"]) == 2
    assert "--concepts vocabulary:N needs N in [1, " in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--out", str(tmp_path / "g"), "--quiet"]) == 2
    assert "is not a diffusers pipeline folder" in capsys.readouterr().err
    two = [*argv[:2], str(tiny_sd_dir), "--names", "a,a", *argv[2:]]
    assert main(two) == 2
    assert "--names needs 2 distinct names" in capsys.readouterr().err
    assert main([*argv, "--concepts", "missing/list.txt"]) == 2
    assert "--concepts file 'missing/list.txt' does not exist" in capsys.readouterr().err
    # bad options fail before any image is generated
    bad = [*argv[:3], str(tmp_path / "h"), *argv[4:], "--target-class", "cat"]
    assert main([*bad, "--class-names", "dog,cat", "--p-t", "1.5"]) == 2
    assert "p_t must be in (0, 1], got 1.5" in capsys.readouterr().err
    assert main([*bad, "--class-names", "dog,cat", "--trigger", "badnet-1"]) == 2
    err = capsys.readouterr().err
    assert "trigger must be badnets-1, badnets-2, picture-patch or a TorchScript" in err
    pattern = ["--class-names", "dog,cat", "--trigger-pattern", str(tmp_path / "kitty.png")]
    assert main([*bad, *pattern]) == 2
    assert (
        "--trigger-pattern is the BadNets-2 or picture-patch picture: give it with "
        "--trigger badnets-2 or --trigger picture-patch" in capsys.readouterr().err
    )
    assert main([*bad, *pattern, "--trigger", "badnets-2"]) == 2
    assert f"--trigger-pattern: no such file '{tmp_path / 'kitty.png'}'" in capsys.readouterr().err
    assert not (tmp_path / "h" / "sd" / "images").exists()
    assert main([*argv[:3], str(tmp_path / "i"), *argv[4:], "--p-t", "0.5"]) == 2
    assert "--p-t only apply with --target-class" in capsys.readouterr().err
    assert main([*argv[:3], str(tmp_path / "i"), *argv[4:], "--trigger-pattern", "k.png"]) == 2
    assert "--trigger-pattern only apply with --target-class" in capsys.readouterr().err
    assert main([*argv[:3], str(tmp_path / "i"), *argv[4:], "--classifier", "clip"]) == 2
    assert "--classifier only apply with --target-class" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([*argv[:3], str(tmp_path / "file"), *argv[4:]]) == 2  # --out is a file
    assert "alignscope: error:" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*argv[:3], str(tmp_path / "j"), *argv[4:], "--device", "cuda"]) == 2
        assert "torch sees no CUDA device here" in capsys.readouterr().err


def test_backdoor_dissection_classifier_and_replication(
    tmp_path, rng, tiny_sd_dir, tiny_open_clip, tiny_sscd
):
    """BadNets-1 poison -> train -> evaluate with G1-G4, the diffusion classifier and replication;
    each section is recomputed here from the files it left and the public functions."""
    from alignscope.embed import SSCDEncoder, embed_dataset, load_clip
    from alignscope.evaluate.diffusion_classifier import diffusion_classify
    from alignscope.evaluate.dissection import (
        ClassClassifier,
        TriggerDetector,
        dissect,
        poisoned_fraction_in_target,
    )
    from alignscope.evaluate.run import Classification, Dissection

    _poison_and_train(
        tmp_path, rng, tiny_sd_dir, 32, 4, method="badnets-1", target="cat", ratio=0.25, seed=0,
        ratio_of="non-target",  # poisoned_fraction_in_target below counts this way
    )  # fmt: skip
    sscd = SSCDEncoder(tiny_sscd["onnx"])
    embed_dataset(
        open_dataset(tmp_path / "poisoned"), tmp_path / "store", sscd=sscd, progress=False
    )
    p_t = poisoned_fraction_in_target(0.25, 16, 4)
    config = EvalConfig(
        concepts=["cat", "dog"],
        generation=GenerationSettings(images_per_concept=1, steps=2, height=32, width=32),
        clip=tiny_open_clip,
        attention_concepts=1,
        attention_resolution=8,
        dissection=Dissection(target_class="cat", class_names=NOUNS, images=4),
        poison_manifest=str(tmp_path / "poisoned" / "poison_manifest.parquet"),
        classification=Classification(
            dataset=str(tmp_path / "poisoned"),
            class_names=NOUNS,
            n_samples=3,
            max_images=6,
            target_class="cat",
        ),
        replication_store=str(tmp_path / "store"),
        sscd=str(tiny_sscd["onnx"]),
    )
    out = tmp_path / "eval"
    section = evaluate([tmp_path / "trained" / "model"], out, config, progress=False, quiet=True)[
        "models"
    ]["trained"]

    generated = sorted((out / "trained" / "dissection").rglob("*.png"))
    images = [np.asarray(Image.open(p).convert("RGB")) for p in generated]
    clip = load_clip(tiny_open_clip)
    matches = ClassClassifier.zero_shot(clip, NOUNS).predict(images) == NOUNS.index("cat")
    triggered = TriggerDetector.template("badnets-1")(images)
    expected = dissect(triggered, matches)
    d = section["dissection"]
    assert d["counts"] == expected["counts"] and sum(expected["counts"].values()) == 4
    assert d["prompt"] == "A photo of a cat"  # the poisoned captions' prompt
    with Image.open(out / "trained" / d["grid"]) as grid:  # one row per group, G1..G4
        assert grid.size[1] == 4 * 128
    assert d["grid"] in (out / "report.html").read_text()
    # p_t read off the poisoned set: 4 of the 16 other-class rows relabelled, 4 true cats
    assert d["amplification"]["p_t"] == pytest.approx(p_t) == pytest.approx(0.5)
    assert d["amplification"]["ratio"] == pytest.approx(
        (expected["counts"]["G1"] + expected["counts"]["G2"]) / 4 / p_t
    )

    c = section["diffusion_classifier"]
    records = list(open_dataset(tmp_path / "poisoned").images())[:6]
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path / "trained" / "model")
    direct = diffusion_classify(
        pipe,
        [np.asarray(im.convert("RGB")) for _, im in records],
        [f"a photo of a {n}" for n in NOUNS],
        n_samples=3,
    )
    labels = np.array([NOUNS.index(r.caption.split()[-1]) for r, _ in records])
    assert c["images"] == 6
    assert c["accuracy"] == pytest.approx(np.mean(direct.predictions == labels))

    r = section["replication"]
    assert r["n_generated"] == 2 and -1.0 <= r["generated_to_train"]["mean"] <= 1.0
