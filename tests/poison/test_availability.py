"""Availability poisons (unlearnable, classwise-noise, ops): budgets on the written files,
OPS's search against a loop re-implementation, and the poison's effect on a supervised model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from alignscope import _reference  # noqa: E402
from alignscope.cli import main  # noqa: E402
from alignscope.defend.supervised import SupervisedConfig, accuracy, train_supervised  # noqa: E402
from alignscope.defend.toy import gratings, write_folder  # noqa: E402
from alignscope.io.datasets import open_dataset  # noqa: E402
from alignscope.io.manifest import read_manifest  # noqa: E402
from alignscope.poison.availability import (  # noqa: E402
    add_noise,
    classwise_patterns,
    error_minimising_noise,
    ops_search,
)
from alignscope.poison.availability import (  # noqa: E402
    load_class_images as availability_classes,
)
from alignscope.poison.run import poison_dataset  # noqa: E402
from alignscope.train.classifier import load_class_images as classifier_classes  # noqa: E402

CLASSES = ["cat", "dog", "fox", "owl"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def class_set(tmp_path):
    images, labels = gratings(6, 4, 16, seed=3)
    write_folder(tmp_path / "clean", images, labels, CLASSES)
    return tmp_path / "clean", images, labels


def _written(root, n):
    return np.stack(
        [np.asarray(Image.open(root / f"{i:08d}.png").convert("RGB")) for i in range(n)]
    )


def _manifest(out):
    columns = ["poisoned", "source_concept", "linf", "params"]
    return read_manifest(out / "poison_manifest.parquet", columns)


def _run(args):
    return main([*args, "--quiet"])


@pytest.mark.parametrize(
    "method, extra",
    [
        ("unlearnable", ["--noise-mode", "sample"]),
        ("unlearnable", ["--noise-mode", "class"]),
        ("classwise-noise", ["--patch", "4"]),
    ],
)
def test_linf_budget_holds_on_the_written_files(tmp_path, class_set, method, extra):
    src, images, labels = class_set
    out = tmp_path / "out"
    if extra == ["--noise-mode", "sample"]:
        # through the API, to cap the min-min rounds: 24 images never reach the stop condition
        options = {"mode": "sample", "noise_options": {"max_rounds": 2, "device": "cpu"}}
        report = poison_dataset(
            open_dataset(str(src)), out, method=method, availability_options=options
        )
        assert report.poisoned == report.rows == len(images)
    else:
        assert _run(["poison", str(src), "--out", str(out), "--method", method, *extra]) == 0
    written = _written(out, len(images)).astype(int)
    diff = written - images.astype(int)
    # 8/255: no written pixel moves more than 8 levels, and the poison did move pixels
    assert np.abs(diff).max() == 8
    assert (diff != 0).mean() > 0.5
    captions = [(out / f"{i:08d}.txt").read_text() for i in range(len(images))]
    assert captions == [f"a photo of a {CLASSES[k]}" for k in labels]  # clean label
    manifest = _manifest(out)
    assert all(manifest["poisoned"])
    assert list(manifest["source_concept"]) == [CLASSES[k] for k in labels]
    np.testing.assert_allclose(manifest["linf"], np.abs(diff).max(axis=(1, 2, 3)) / 255)
    assert json.loads(manifest["params"][0])["linf"] == "8/255"
    if method == "classwise-noise" or "class" in extra:
        # one pattern per class: where no pixel was clipped, the change is the same in every
        # image of a class
        inside = (images >= 8) & (images <= 247)
        for k in range(4):
            rows = np.flatnonzero(labels == k)
            both = inside[rows[0]] & inside[rows[1]]
            np.testing.assert_array_equal(diff[rows[0]][both], diff[rows[1]][both])


def test_ops_changes_one_pixel_per_image_at_its_class_pixel(tmp_path, class_set):
    src, images, labels = class_set
    out = tmp_path / "out"
    assert _run(["poison", str(src), "--out", str(out), "--method", "ops"]) == 0
    written = _written(out, len(images))
    changed = (written != images).any(axis=-1)
    assert changed.sum(axis=(1, 2)).max() == 1  # L0: one pixel at most per image
    positions, colours = _reference.ops_search_loops(images, labels, 4)
    for i, k in enumerate(labels):
        r, c = positions[k]
        assert changed[i].sum() == 0 or changed[i, r, c]
        np.testing.assert_array_equal(written[i, r, c], colours[k])
    assert len({tuple(p) for p in positions}) == 4  # a shortcut per class, none shared
    params = json.loads(_manifest(out)["params"][0])
    assert params == {"l0": 1, "position": list(positions[labels[0]]),
                      "colour": list(colours[labels[0]])}  # fmt: skip


def test_ops_search_matches_a_loop_reference(rng):
    images = rng.integers(0, 256, (30, 6, 5, 3), dtype=np.uint8)
    labels = np.arange(30) % 3
    images[labels == 1, 2, 3] = 0  # class 1's images are black at (2, 3): white wins there
    positions, colours = ops_search(images, labels, 3)
    want_positions, want_colours = _reference.ops_search_loops(images, labels, 3)
    np.testing.assert_array_equal(positions, want_positions)
    np.testing.assert_array_equal(colours, want_colours)
    assert positions[1].tolist() == [2, 3] and colours[1].tolist() == [255, 255, 255]


def test_add_noise_rounds_and_clips_to_the_budget(rng):
    images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    noise = rng.normal(0, 20, images.shape)
    out = add_noise(images, noise, 8)
    want = np.clip(images.astype(int) + np.clip(np.rint(noise), -8, 8), 0, 255)
    np.testing.assert_array_equal(out, want)
    assert np.abs(out.astype(int) - images).max() == 8


def test_classwise_patterns_are_blocks_of_plus_minus_epsilon():
    patterns = classwise_patterns((10, 12, 3), 5, epsilon=6, patch=4, seed=1)
    assert patterns.shape == (5, 10, 12, 3)
    assert set(np.unique(patterns)) == {-6, 6}
    # constant on each 4 x 4 block (the last ones cut by the image's edge)
    for r0 in range(0, 10, 4):
        for c0 in range(0, 12, 4):
            block = patterns[:, r0 : r0 + 4, c0 : c0 + 4]
            assert (block == block[:, :1, :1]).all()
    assert len({p.tobytes() for p in patterns}) == 5


def _labelled_set(root, rows):
    """An image folder of 8 x 8 images, one per (relative path, caption or None) of ``rows``
    (None: no sidecar caption)."""
    for k, (rel, caption) in enumerate(rows):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 30 * k, np.uint8)).save(path)
        if caption is not None:
            path.with_suffix(".txt").write_text(caption)
    return root


# each form a row's class can be given in, and the class it is (written out by hand)
LABELLED = [
    ("a.png", "a photo of an apple", "apple"),
    ("b.png", "A photo of the cat.", "cat"),
    ("c.png", "A photo of a garbage truck", "garbage truck"),
    ("x/d.png", "a photo of a dog", "dog"),  # the caption wins over the folder
    ("owl/e.png", None, "owl"),  # a class folder, no caption
    ("owl/f.png", "an owl on a branch", "owl"),  # a caption not of the form: the folder
]


def test_the_poisons_and_the_classifiers_read_one_class_per_row(tmp_path):
    """`poison --method unlearnable` and `defend vespr` (availability's loader) and `train
    classifier` (the classifier's) give every row the same class."""
    root = _labelled_set(tmp_path / "d", [(rel, cap) for rel, cap, _ in LABELLED])
    want = {rel: name for rel, _, name in LABELLED}
    poison = availability_classes(open_dataset(root))
    assert {i: poison.classes[k] for i, k in zip(poison.ids, poison.labels, strict=True)} == want
    train = classifier_classes(root)
    assert {i: train.class_names[k] for i, k in zip(train.ids, train.labels, strict=True)} == want
    assert poison.classes == train.class_names == ["apple", "cat", "dog", "garbage truck", "owl"]


@pytest.mark.parametrize("caption", ["", "tabby cat", "a dog on a sofa"])
def test_a_row_naming_no_class_is_refused_alike_by_both_loaders(tmp_path, caption):
    # a plain caption is no class: a captioned (not class-labelled) set would otherwise make
    # each row a class of its own
    root = _labelled_set(tmp_path / "d", [("cat/a.png", None), ("b.png", caption)])
    want = (
        f"{root}: record 'b.png' names no class (caption {caption!r}); give captions "
        "'A photo of a {class}' naming a class, or class folders"
    )
    with pytest.raises(ValueError) as poison:
        availability_classes(open_dataset(root))
    with pytest.raises(ValueError) as train:
        classifier_classes(root)
    assert str(poison.value) == str(train.value) == want


def test_a_folder_labelled_set_poisoned_flat_keeps_its_classes(tmp_path):
    """The poisoned copy is written flat: rows labelled by their folder are written with the
    caption "A photo of a {class}", so the classifiers read the class the poison used."""
    rows = [("cat/a.png", None), ("cat/b.png", "a cat on a mat"), ("dog/c.png", None),
            ("d.png", "a photo of a dog.")]  # fmt: skip
    src = _labelled_set(tmp_path / "d", rows)
    out = tmp_path / "o"
    assert _run(["poison", str(src), "--out", str(out), "--method", "classwise-noise"]) == 0
    written = [(out / f"{i:08d}.txt").read_text() for i in range(4)]  # in path order
    assert written == ["A photo of a cat", "A photo of a cat", "a photo of a dog.",
                       "A photo of a dog"]  # fmt: skip
    manifest = read_manifest(out / "poison_manifest.parquet", ["written_as", "source_concept"])
    train = classifier_classes(out)
    got = {i: train.class_names[k] for i, k in zip(train.ids, train.labels, strict=True)}
    assert got == dict(zip(manifest["written_as"], manifest["source_concept"], strict=True))
    assert manifest["source_concept"] == ["cat", "cat", "dog", "dog"]


def test_error_minimising_noise_makes_a_supervised_model_useless():
    # The must-show of issue #23: a small CNN trained on the unlearnable (sample-wise
    # error-minimising) copy of a class set is near chance (0.25) on clean test images, while
    # the same training on the clean set is not. At this toy scale the gratings' amplitude is
    # of the order of the budget (see alignscope.defend.toy).
    train_x, train_y = gratings(96, 4, 16, seed=5)
    test_x, test_y = gratings(50, 4, 16, seed=105)
    # 10 PGD steps of 1.6/255 instead of the authors' 20 of 0.8/255 (the same reach), to keep
    # the test short
    noise = error_minimising_noise(
        train_x, train_y, 4, mode="sample", pgd_steps=10, step_size=1.6, seed=5, device="cpu"
    )
    assert noise.stopped  # the surrogate fits the perturbed set: the paper's stop condition
    poisoned = add_noise(train_x, noise.noise, 8)
    assert np.abs(poisoned.astype(int) - train_x).max() <= 8
    config = SupervisedConfig(
        epochs=15, batch_size=64, lr=0.01, optimizer="adam", flip=False, seed=5, device="cpu"
    )
    clean_model = train_supervised(train_x, train_y, 4, config)
    poisoned_model = train_supervised(poisoned, train_y, 4, config)
    assert accuracy(clean_model, test_x, test_y) >= 0.7
    assert accuracy(poisoned_model, test_x, test_y) <= 0.35
    # it did learn its training set: the poison's shortcut, not a failure to train
    assert accuracy(poisoned_model, poisoned, train_y) >= 0.9


def test_class_noise_is_one_delta_per_class():
    images, labels = gratings(4, 3, 8, seed=1)
    result = error_minimising_noise(
        images, labels, 3, mode="class", max_rounds=1, train_steps=1, pgd_steps=2, device="cpu"
    )
    for k in range(3):
        rows = result.noise[labels == k]
        assert (rows == rows[:1]).all()
    assert np.abs(result.noise).max() <= 8 + 1e-3


def test_bad_inputs_get_one_line_errors(tmp_path, class_set, capsys):
    src, images, _ = class_set
    assert _run(["poison", str(src), "--out", str(tmp_path / "o"), "--method", "ops",
                 "--epsilon", "4"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == (
        "alignscope: error: --epsilon is for --method unlearnable or classwise-noise, not ops"
    )
    assert _run(["poison", str(src), "--out", str(tmp_path / "o"), "--method", "unlearnable",
                 "--epsilon", "0"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == (
        "alignscope: error: --epsilon is 1..255 8-bit levels (8 = 8/255), got 0"
    )
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(src / "00003.png")
    assert _run(["poison", str(src), "--out", str(tmp_path / "o2"), "--method", "ops"]) == 2
    assert capsys.readouterr().err.strip() == (
        "alignscope: error: row 3 (00003.png) is 16x20 but row 0 is 16x16: availability "
        "poisons need images of one size; resize the set first"
    )
    one = tmp_path / "one"
    write_folder(one, images[:3], np.zeros(3, dtype=np.int64), CLASSES)
    assert _run(["poison", str(one), "--out", str(tmp_path / "o3"), "--method", "ops"]) == 2
    assert capsys.readouterr().err.strip() == (
        "alignscope: error: the captions name 1 class(es) (cat): availability poisons need a "
        "class-labelled set with at least two classes"
    )
