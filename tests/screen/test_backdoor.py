"""STRIP and Cognitive Distillation: definitions pinned on hand-checked models and against
pixel-by-pixel references, their separation of triggered from clean images on a small
backdoored CNN, and `alignscope detect`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pq = pytest.importorskip("pyarrow.parquet")

from alignscope import _reference  # noqa: E402
from alignscope.cli import main  # noqa: E402
from alignscope.io.datasets import open_dataset  # noqa: E402
from alignscope.poison.concepts import make_vocabulary  # noqa: E402
from alignscope.poison.run import poison_dataset  # noqa: E402
from alignscope.screen.backdoor import (  # noqa: E402
    cd_collapse_warning,
    cd_masks,
    cd_norms,
    cd_objective,
    fct_scores,
    fct_transform,
    intra_class_loss,
    penultimate_features,
    strip_entropy,
)
from alignscope.screen.evaluation import auroc  # noqa: E402
from alignscope.train.classifier import (  # noqa: E402
    SHAPE_CLASSES,
    ClassifierConfig,
    load_class_images,
    load_classifier,
    train_classifier,
    write_shapes_dataset,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Fixed(torch.nn.Module):
    """Logits that ignore the image: ``values`` for every input."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values, dtype=torch.float32)

    def forward(self, x):
        return self.values.expand(len(x), -1)


class _Pixels(torch.nn.Module):
    """Two logits, +-10 times the sum of the red channel at ``pixels``: the smallest mask that
    keeps them is exactly those pixels."""

    def __init__(self, pixels):
        super().__init__()
        self.pixels = pixels

    def forward(self, x):
        s = sum(x[:, 0, y, c] for y, c in self.pixels)
        return torch.stack([10 * s, -10 * s], dim=1)


def _linear(h, w, classes, seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * h * w, classes))
    weight = model[1].weight.detach().double().numpy()
    bias = model[1].bias.detach().double().numpy()
    return model, weight, bias


def test_strip_entropy_of_fixed_classifiers(rng):
    images = rng.integers(0, 256, (5, 10, 10, 3), dtype=np.uint8)
    overlays = rng.integers(0, 256, (7, 10, 10, 3), dtype=np.uint8)
    # a classifier certain of one class whatever it sees: entropy 0
    certain = strip_entropy(_Fixed([1000.0, 0.0, 0.0]), images, overlays, n=4)
    np.testing.assert_array_equal(certain, np.zeros(5))
    # one that cannot tell four classes apart: ln 4
    unsure = strip_entropy(_Fixed([0.0, 0.0, 0.0, 0.0]), images, overlays, n=4)
    np.testing.assert_allclose(unsure, math.log(4), rtol=1e-12)


def test_strip_entropy_matches_the_reference(rng):
    model, weight, bias = _linear(6, 5, 3, seed=1)
    images = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    overlays = rng.integers(0, 256, (5, 6, 5, 3), dtype=np.uint8)
    got = strip_entropy(model, images, overlays, n=6, seed=9, batch=7)
    # the documented draw: n overlays with replacement from default_rng(seed), for every image
    chosen = [overlays[i] / 255.0 for i in np.random.default_rng(9).integers(0, 5, size=6)]
    want = [
        _reference.strip_entropy_linear_reference(weight, bias, im / 255.0, chosen) for im in images
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_strip_needs_overlays_of_the_images_size(rng):
    images = rng.integers(0, 256, (2, 10, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError) as err:
        strip_entropy(_Fixed([0.0, 1.0]), images, images[:, :8, :8])
    assert str(err.value) == (
        "overlays are (8, 8) and images (10, 10): give held-out images at the classifier's "
        "resolution"
    )


def test_cd_objective_matches_the_reference(rng):
    model, weight, bias = _linear(5, 6, 4, seed=2)
    image = rng.random((5, 6, 3))
    mask = rng.random((5, 6))
    colour = rng.random(3)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        got = cd_objective(
            model,
            x,
            model(x),
            torch.from_numpy(mask)[None, None].float(),
            torch.from_numpy(colour).view(1, 3, 1, 1).float(),
            gamma=0.03,
            beta=2.0,
        )
    want = _reference.cd_objective_linear_reference(weight, bias, image, mask, colour, 0.03, 2.0)
    assert float(got[0]) == pytest.approx(want, rel=1e-5)


def test_cd_mask_is_the_pixels_the_output_needs(rng):
    images = rng.integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    one = cd_masks(_Pixels([(3, 4)]), images)
    assert one.shape == (3, 12, 12)
    for mask in one:
        assert mask[3, 4] > 0.9  # the one pixel the logits read is kept
        outside = np.delete(mask.ravel(), 3 * 12 + 4)
        assert outside.max() < 0.15 and np.median(outside) < 1e-3
    # norms: about 1 for one pixel, about 4 for a 2 x 2 block (TV lifts the neighbours a little)
    assert np.all((one.sum(axis=(1, 2)) > 0.9) & (one.sum(axis=(1, 2)) < 1.5))
    block = cd_norms(_Pixels([(5, 5), (5, 6), (6, 5), (6, 6)]), images)
    assert np.all((block > 3.6) & (block < 5.5))
    # a classifier that reads nothing needs no pixel: the mask vanishes, which is a collapse
    blind = cd_norms(_Fixed([1.0, -1.0]), images)
    assert blind.max() < 0.05
    assert cd_collapse_warning(blind, 144) == (
        f"every Cognitive Distillation mask is all off (||m||_1 {blind.min():.3g}.."
        f"{blind.max():.3g} of 144 pixels): the cd ranking means nothing; try a smaller "
        "--cd-gamma (it weighs the mask against the classifier's logit units)"
    )
    # a one-pixel mask (a one-pixel trigger's) is no collapse, nor is a set with one such mask
    assert cd_collapse_warning(one.sum(axis=(1, 2)), 144) is None
    assert cd_collapse_warning(np.r_[blind, 0.6], 144) is None
    # all on: every mask leaves out less than half a pixel
    assert cd_collapse_warning(np.array([143.6, 144.0]), 144).startswith(
        "every Cognitive Distillation mask is all on (||m||_1 144..144 of 144 pixels): the cd "
        "ranking means nothing; try a larger --cd-gamma"
    )
    assert cd_collapse_warning(np.array([143.4, 144.0]), 144) is None


def test_fct_pieces_on_hand_checked_cases(rng):
    # class centres (1, 0) and (0.5, 1): cosine 0.5 / sqrt(1.25); the 2 x 2 similarity matrix
    # with a zero diagonal averages to half of it
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    loss = intra_class_loss(features, torch.tensor([0, 0, 1, 1]), 2)
    assert float(loss) == pytest.approx(0.5 / math.sqrt(1.25) / 2, rel=1e-6)
    # the penultimate features are what the last linear layer reads
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)
    )
    x = torch.rand(2, 3, 2, 2)
    with torch.no_grad():
        want = torch.relu(model[1](x.flatten(1)))
        torch.testing.assert_close(penultimate_features(model, x), want)
    # rotations and shifts move pixels, never change them, and fill with black
    images = torch.from_numpy(rng.integers(1, 256, (4, 3, 9, 9))).float() / 255.0
    moved = fct_transform(images, torch.Generator().manual_seed(0))
    for before, after in zip(images, moved, strict=True):
        kept = after[0] > 0
        assert set(after[0][kept].tolist()) <= set(before[0].flatten().tolist())
    # a black image stays black: its features do not move, whatever the classifier
    black = np.zeros((3, 12, 12, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2])
    linear = _linear(12, 12, 3, seed=3)[0]
    assert np.all(fct_scores(linear, black, black, labels, epochs=1) == 0.0)


def _fct_reference_scores(model, images, train_images, train_labels, *, epochs, lr, shift):
    """FCT written out: ``epochs`` full-batch steps of SGD (momentum 0.9, weight decay 5e-4,
    the update rule spelled out) on L_intra = the mean of the class centres' cosine matrix with
    its diagonal zeroed, then the mean squared change of the penultimate features (the input of
    the last linear layer of a Flatten-Linear-ReLU-Linear model) under ``shift``."""
    import copy

    net = copy.deepcopy(model)
    body = net[:3]  # what the last linear layer reads
    x_train = torch.from_numpy(train_images).permute(0, 3, 1, 2).float() / 255
    y_train = torch.from_numpy(train_labels)
    params = list(body.parameters())  # the last layer is not in L_intra: SGD leaves it be
    velocity = [torch.zeros_like(p) for p in params]
    for _ in range(epochs):
        features = body(x_train)
        centres = torch.stack([features[y_train == k].mean(0) for k in range(3)])
        unit = centres / centres.norm(dim=1, keepdim=True)
        cosines = unit @ unit.T
        loss = (cosines.sum() - cosines.trace()) / 9
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, v in zip(params, grads, velocity, strict=True):
                v.mul_(0.9).add_(g + 5e-4 * p)
                p.sub_(lr * v)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return ((body(x) - body(shift(x))) ** 2).mean(1).double().numpy()


def test_fct_scores_are_those_of_the_fine_tuned_classifier(rng, monkeypatch):
    # FCT scores with the classifier fine-tuned on L_intra, not the classifier as given: the
    # scores match a written-out fine-tune and differ from the untuned classifier's. (The random
    # rotation and shift is replaced by a fixed one-pixel shift so both sides see the same.)
    import alignscope.screen.backdoor as backdoor

    def shift(x, generator=None):
        return x.roll(1, dims=3)

    monkeypatch.setattr(backdoor, "fct_transform", shift)
    torch.manual_seed(4)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )
    train = rng.integers(0, 256, (12, 6, 6, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    images = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    options = {"epochs": 4, "lr": 0.5}
    got = fct_scores(model, images, train, labels, **options)
    want = _fct_reference_scores(model, images, train, labels, shift=shift, **options)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    untuned = _fct_reference_scores(model, images, train, labels, shift=shift, epochs=0, lr=0.5)
    # fine-tuning moves every score by far more than the comparison's tolerance
    assert np.all(np.abs(untuned - want) > 100 * 1e-4 * want)
    # the model given is left as it was (FCT tunes a copy)
    assert np.allclose(fct_scores(model, images, train, labels, epochs=0), untuned)


@pytest.fixture(scope="module")
def backdoored(tmp_path_factory):
    """A small CNN trained on a 320-image shapes set poisoned with BadNets-1 toward "cat"
    (int(0.1 * 320) = 32 poisons), and a 120-image clean test set."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("detect")
    clean = write_shapes_dataset(root / "clean", 320, seed=1)
    test = write_shapes_dataset(root / "test", 120, seed=2)
    poisoned = root / "poisoned"
    poison_dataset(
        open_dataset(clean),
        poisoned,
        method="badnets-1",
        target="cat",
        ratio=0.1,
        seed=0,
        vocabulary=make_vocabulary(list(SHAPE_CLASSES)),
    )
    config = ClassifierConfig(arch="small", epochs=10, lr=0.05, batch=32, seed=0)
    train_classifier(load_class_images(poisoned), root / "model", config, progress=False)
    return {"root": root, "poisoned": poisoned, "test": test, "model": root / "model"}


def _triggered_test_set(backdoored):
    """40 held-out clean test images (STRIP's overlays); the other 80 clean, plus the
    reference BadNets-1 on the non-target ones among them, with their poison flags."""
    model, meta = load_classifier(backdoored["model"], "cpu")
    test = load_class_images(backdoored["test"], class_names=meta["class_names"])
    held, images, labels = test.images[:40], test.images[40:], test.labels[40:]
    target = meta["class_names"].index("cat")
    triggered = np.stack([_reference.badnets1_reference(im) for im in images[labels != target]])
    flags = np.r_[np.zeros(len(images), bool), np.ones(len(triggered), bool)]
    return model, held, np.concatenate([images, triggered]), flags


def test_strip_separates_triggered_from_clean(backdoored):
    model, held, images, flags = _triggered_test_set(backdoored)
    entropy = strip_entropy(model, images, held, n=50)
    assert flags.sum() == 60 and auroc(-entropy, flags) >= 0.9


def test_cd_separates_triggered_from_clean(backdoored):
    """The authors' settings but gamma, which they set per experiment: this CNN's logits are
    a few units, and gamma 0.0005 weighs the mask against them (measured AUROC 0.95; 0.92
    and 0.96 with training seeds 1 and 2)."""
    model, _, images, flags = _triggered_test_set(backdoored)
    masks = cd_masks(model, images, gamma=0.0005)
    assert auroc(-masks.sum(axis=(1, 2)), flags) >= 0.9
    # what separates them: the trigger's corner is kept in triggered images
    corner = masks[:, -3:, -3:].mean(axis=(1, 2))
    assert corner[flags].mean() > corner[~flags].mean() + 0.2


def test_cd_at_the_authors_gamma_ranks_the_confident_triggered_images_as_clean(backdoored):
    """The module docstring's account of gamma 0.01 on this CNN (measured: AUROC 0.16, mean
    |logit| 15 triggered against 4.5 clean, median ||m||_1 151 against 120, the trigger's
    corner kept in every triggered mask): the logit term is absolute, so the triggered images'
    larger logits keep the object in their masks too, and their masks are the LARGER ones."""
    from alignscope.screen.backdoor import _float_images

    model, _, images, flags = _triggered_test_set(backdoored)
    masks = cd_masks(model, images, gamma=0.01)
    norms = masks.sum(axis=(1, 2))
    assert auroc(-norms, flags) < 0.5
    assert np.median(norms[flags]) > np.median(norms[~flags])
    # the trigger is found all the same (measured mean mask on its corner 1.0 against 0.003)
    corner = masks[:, -3:, -3:].mean(axis=(1, 2))
    assert corner[flags].mean() > 0.9 and corner[~flags].mean() < 0.1
    with torch.no_grad():
        size = model(_float_images(images)).abs().mean(dim=1).numpy()
    assert size[flags].mean() > 2 * size[~flags].mean()


def test_cli_detect_warns_when_every_cd_mask_collapses(backdoored, tmp_path, capsys):
    """A gamma far above the logits' scale drives every mask to all off: detect still reports,
    and says on stderr that the cd ranking means nothing."""
    few = write_shapes_dataset(tmp_path / "few", 6, seed=3)
    args = ["detect", str(few), "--classifier", str(backdoored["model"]), "--truth", "badnets-1"]
    args += ["--methods", "cd", "--cd-steps", "60", "--json", "--quiet"]
    assert main([*args, "--cd-gamma", "100"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "Cognitive Distillation" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(
        "alignscope: warning: training set: every Cognitive Distillation mask is all off (||m||_1 "
    )
    assert lines[0].endswith(
        "of 1024 pixels): the cd ranking means nothing; try a smaller --cd-gamma (it weighs "
        "the mask against the classifier's logit units)"
    )
    # the authors' gamma on the same images: no collapse, no warning
    assert main(args) == 0
    assert "Cognitive Distillation" not in capsys.readouterr().err


def test_fct_separates_triggered_from_clean(backdoored):
    model, _, images, flags = _triggered_test_set(backdoored)
    train = load_class_images(backdoored["poisoned"], class_names=sorted(SHAPE_CLASSES))
    scores = fct_scores(model, images, train.images, train.labels, epochs=2)
    assert auroc(scores, flags) >= 0.9  # measured 1.0 with 0, 2 and 10 epochs


def test_cli_detect_on_the_poisoned_training_set(backdoored, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    args = ["detect", str(backdoored["poisoned"]), "--classifier", str(backdoored["model"])]
    args += ["--manifest", str(backdoored["poisoned"] / "poison_manifest.parquet")]
    run = ["--clean", str(backdoored["test"]), "--methods", "strip,cd", "--strip-n", "8"]
    run += ["--cd-steps", "3", "--out", str(report_path), "--json", "--quiet"]
    rc = main([*args, *run])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["n"] == 320 and summary["poisoned"] == 32
    assert set(summary["metrics"]) == {"strip", "cd"}
    report = json.loads(report_path.read_text())
    manifest = pq.read_table(backdoored["poisoned"] / "poison_manifest.parquet").to_pydict()
    truth = dict(zip(manifest["written_as"], manifest["poisoned"], strict=True))
    assert report["flags"] == [truth[i] for i in report["ids"]]
    strip = np.array(report["scores"]["strip"])
    assert summary["metrics"]["strip"]["auroc"] == pytest.approx(
        auroc(strip, np.array(report["flags"]))
    )
    assert summary["metrics"]["strip"]["auroc"] >= 0.9  # triggered poisons: low entropy
    assert main([*args, "--methods", "strip"]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: STRIP needs held-out clean images: give --clean DIR (e.g. the clean "
        "test set)\n"
    )


def test_castle_walls_recipe_runs_offline(tmp_path, tiny_sd_dir, capsys):
    """Poison -> fine-tune a tiny diffusion model -> generate the class set -> classifiers on
    both sets -> detect on both -> Tab. 3 / Tab. 4. Values from a tiny random model mean
    nothing and are not asserted: the test pins that the chain runs and writes both tables."""
    pytest.importorskip("diffusers")
    from diffusers import StableDiffusionPipeline

    from alignscope.evaluate.generate import GenerationSettings, generate_images

    classes = list(SHAPE_CLASSES)
    clean = write_shapes_dataset(tmp_path / "clean", 16, seed=1)
    test = write_shapes_dataset(tmp_path / "test", 16, seed=2)
    poisoned = tmp_path / "poisoned"
    poison_dataset(
        open_dataset(clean),
        poisoned,
        method="badnets-1",
        target="cat",
        ratio=0.25,
        seed=0,
        vocabulary=make_vocabulary(classes),
    )
    sd = ["--steps", "1", "--resolution", "32", "--batch-size", "4", "--quiet"]
    dm = ["--model", str(tiny_sd_dir), "--out", str(tmp_path / "dm")]
    assert main(["train", "finetune", str(poisoned), *dm, *sd]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "dm" / "model")
    pipe.set_progress_bar_config(disable=True)
    settings = GenerationSettings(
        images_per_concept=4, steps=1, template="A photo of a {}", height=32, width=32
    )
    generated = tmp_path / "generated"
    generate_images(pipe, classes, generated, settings, progress=False)  # 16, as the training set
    asr = ["--test", str(test), "--target", "cat", "--trigger", "badnets-1"]
    run = ["--arch", "small", "--epochs", "1", "--classes", ",".join(sorted(classes)), "--quiet"]
    for name, data in (("cls-train", poisoned), ("cls-gen", generated)):
        out = ["--out", str(tmp_path / name)]
        assert main(["train", "classifier", str(data), *out, *asr, *run]) == 0
    capsys.readouterr()
    detect = ["detect", str(poisoned), "--classifier", str(tmp_path / "cls-train")]
    detect += ["--manifest", str(poisoned / "poison_manifest.parquet"), "--clean", str(test)]
    detect += ["--generated", str(generated), "--generated-truth", "badnets-1"]
    detect += ["--methods", "strip,cd,fct", "--fct-train", str(poisoned)]
    detect += ["--strip-n", "2", "--cd-steps", "1", "--quiet", "--report", str(tmp_path / "r")]
    detect += ["--tab4", str(tmp_path / "cls-train"), str(tmp_path / "cls-gen")]
    # without the generated set, the second classifier of --tab4 would be dropped silently
    alone = [a for a in detect[: detect.index("--generated")]] + ["--report", "r"]
    assert main([*alone, "--tab4", "a", "b"]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: --tab4 needs --generated (the second set) and --report (the tables)\n"
    )
    assert main(detect) == 0
    tables = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [row["detector"] for row in tables["tab3"]] == ["cd", "fct", "strip"]
    assert all({"training set", "generation set"} <= set(row) for row in tables["tab3"])
    assert [row["set"] for row in tables["tab4"]] == ["training set", "generation set"]
    assert tables["sets"]["generation set"]["n"] == tables["sets"]["training set"]["n"] == 16
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Tab. 3: detection AUROC" in page and "Tab. 4: classifiers trained on each set" in page
