"""BiBadDiff's G1-G4 dissection, p_t and amplification on hand numbers; the template trigger
detectors on clean and triggered smooth images; CLIP and TorchScript classifiers; the
dissection's generation (guidance, steps, LDM's DDIM sampler against a re-implementation of
its grid and update) and ``--preset bibaddiff``."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from alignscope import _reference
from alignscope.evaluate.dissection import (
    BADNETS1_THRESHOLD,
    BADNETS2_THRESHOLD,
    PRESETS,
    ClassClassifier,
    TriggerDetector,
    badnets1_score,
    bibaddiff_scheduler,
    dissect,
    dissect_generations,
    dissection_sampler,
    max_ncc,
    poisoned_fraction_in_target,
    trigger_amplification,
)
from alignscope.poison.triggers import badnets1, badnets1_patch, badnets2

# 10 generations: G1 at 0, 1, 7; G2 at 2; G3 at 3; G4 at 4, 5, 6, 8, 9
TRIGGER = np.array([1, 1, 1, 0, 0, 0, 0, 1, 0, 0], dtype=bool)
MATCH = np.array([0, 0, 1, 0, 1, 1, 1, 0, 1, 1], dtype=bool)


def smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour image: low-resolution noise upsampled bicubically, plus a
    gradient."""
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    up = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=float)
    ramp = np.linspace(-40, 40, size)[None, :, None] * rng.uniform(-1, 1)
    return np.clip(up + ramp, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- G1-G4


def test_dissect_counts_the_four_groups():
    out = dissect(TRIGGER, MATCH)
    assert out["count"] == 10
    assert out["counts"] == {"G1": 3, "G2": 1, "G3": 1, "G4": 5}
    assert out["fractions"] == pytest.approx({"G1": 0.3, "G2": 0.1, "G3": 0.1, "G4": 0.5})


def test_dissect_of_no_images_has_no_fractions():
    out = dissect([], [])
    assert out["counts"] == {"G1": 0, "G2": 0, "G3": 0, "G4": 0}
    assert out["fractions"] == {"G1": None, "G2": None, "G3": None, "G4": None}


def test_dissect_rejects_mismatched_or_non_boolean_flags():
    with pytest.raises(ValueError, match="trigger_present has 10 images but matches_prompt has 9"):
        dissect(TRIGGER, MATCH[:9])
    with pytest.raises(ValueError, match="matches_prompt must be a 1-D boolean array"):
        dissect(TRIGGER, MATCH.astype(int))
    with pytest.raises(ValueError, match="trigger_present must be a 1-D boolean array"):
        dissect(TRIGGER.reshape(2, 5), MATCH)


def test_p_t_follows_the_paper_formula():
    assert poisoned_fraction_in_target(0.1, 900, 100) == pytest.approx(90 / 190)
    assert poisoned_fraction_in_target(0.0, 900, 100) == 0.0
    assert poisoned_fraction_in_target(1.0, 50, 0) == 1.0


def test_p_t_argument_errors():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        poisoned_fraction_in_target(1.5, 900, 100)
    with pytest.raises(ValueError, match="n_target must be >= 0"):
        poisoned_fraction_in_target(0.1, 900, -1)
    with pytest.raises(TypeError, match="n_non_target must be an int"):
        poisoned_fraction_in_target(0.1, 900.5, 100)
    with pytest.raises(ValueError, match="the target class has no training images"):
        poisoned_fraction_in_target(0.0, 900, 0)


def test_amplification_ratio_on_hand_numbers():
    p_t = 90 / 190
    out = trigger_amplification(TRIGGER, MATCH, p_t)
    assert out["trigger_fraction"] == pytest.approx(0.4)
    assert out["g1_fraction"] == pytest.approx(0.3)
    assert out["g2_fraction"] == pytest.approx(0.1)
    assert out["ratio"] == pytest.approx(0.4 * 190 / 90)
    with pytest.raises(ValueError, match=r"p_t must be in \(0, 1\]"):
        trigger_amplification(TRIGGER, MATCH, 0.0)


# --------------------------------------------------------------------------- detectors


def test_max_ncc_equals_a_brute_force_search(rng):
    region = rng.normal(size=(11, 9))
    patch = rng.normal(size=(4, 4))
    best = -np.inf
    for r in range(11 - 4 + 1):
        for c in range(9 - 4 + 1):
            w = region[r : r + 4, c : c + 4]
            a, b = w - w.mean(), patch - patch.mean()
            best = max(best, (a * b).sum() / np.sqrt((a**2).sum() * (b**2).sum()))
    # the region's spread is ~1 grey level, so scale it above the flat-window floor
    assert max_ncc(region * 50, patch) == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("size", [64, 128])
def test_badnets1_detector_separates_clean_and_triggered(rng, size):
    detector = TriggerDetector.template("badnets-1")
    assert detector.threshold == BADNETS1_THRESHOLD
    clean = [smooth_image(rng, size) for _ in range(8)]
    triggered = [badnets1(im) for im in clean]
    clean_scores = detector.scores(clean)
    assert clean_scores.dtype == np.float64 and clean_scores.shape == (8,)
    assert np.all(clean_scores < BADNETS1_THRESHOLD), clean_scores
    assert np.all(detector.scores(triggered) > 2 * BADNETS1_THRESHOLD)
    assert detector(triggered).all() and not detector(clean).any()
    assert detector([Image.fromarray(triggered[0])]).tolist() == [True]


def test_badnets1_detector_finds_a_shifted_patch(rng):
    image = smooth_image(rng, 100)
    side = 10
    clean = badnets1_score(image)
    image[-side - 3 : -3, -side - 5 : -5] = badnets1_patch(side)[:, :, None]  # 3 up, 5 left
    assert clean < BADNETS1_THRESHOLD < badnets1_score(image)
    image[-side - 3 : -3, -side - 5 : -5] = 128
    image[-2 * side - 3 : -side - 3, -side - 5 : -5] = badnets1_patch(side)[:, :, None]
    assert badnets1_score(image) < BADNETS1_THRESHOLD  # a whole side higher: not the corner


@pytest.mark.parametrize("size", [64, 128])
def test_badnets2_detector_separates_clean_and_triggered(rng, size):
    detector = TriggerDetector.template("badnets-2")
    assert detector.threshold == BADNETS2_THRESHOLD
    clean = [smooth_image(rng, size) for _ in range(8)]
    clean_scores = detector.scores(clean)
    triggered_scores = detector.scores([badnets2(im) for im in clean])
    assert np.all(np.abs(clean_scores) < BADNETS2_THRESHOLD), clean_scores
    assert np.all(triggered_scores > 0.5), triggered_scores  # smooth images: a clear margin


def test_template_detector_argument_errors(rng):
    with pytest.raises(ValueError, match=r"WaNet has no template: use TriggerDetector\.torch"):
        TriggerDetector.template("wanet")
    with pytest.raises(ValueError, match="pattern is only for badnets-2"):
        TriggerDetector.template("badnets-1", pattern=np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="pattern must be an HWC uint8 RGB array"):
        TriggerDetector.template("badnets-2", pattern=np.zeros((4, 4), np.uint8))
    detector = TriggerDetector.template("badnets-1")
    # below 30 px the patch is 2 x 2 and no image could pass the threshold: refused
    with pytest.raises(ValueError) as err:
        detector.scores([np.zeros((29, 40, 3), np.uint8)])
    assert str(err.value) == (
        "images must be at least 30 pixels on the short side for badnets-1 detection (the "
        "patch is min(H, W) // 10 pixels; below 30 it is 2 x 2, too few pixels to tell it from "
        "texture), got 29 x 40: give larger images or another trigger detector"
    )
    assert detector.scores([np.zeros((30, 40, 3), np.uint8)]).tolist() == [0.0]  # flat: 0
    with pytest.raises(ValueError, match=r"images\[1\] must be an HWC uint8 RGB array"):
        detector.scores([smooth_image(rng, 32), np.zeros((32, 32, 3), np.float32)])
    with pytest.raises(TypeError, match="images must be a list"):
        detector.scores("image.png")


# --------------------------------------------------------------------------- models


def test_zero_shot_classifier_is_the_clip_argmax(tiny_open_clip, rng):
    pytest.importorskip("torch")
    from alignscope.embed.clip import load_clip

    clip = load_clip(tiny_open_clip)
    names = ["cat", "dog", "garbage truck", "church"]
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(6)]
    predicted = ClassClassifier.zero_shot(clip, names).predict(images)
    image_emb = clip.encode_images([Image.fromarray(im) for im in images])
    text_emb = clip.encode_texts([f"a photo of a {n}" for n in names])
    assert predicted.dtype == np.int64 and predicted.shape == (6,)
    assert predicted.min() >= 0 and predicted.max() < len(names)
    np.testing.assert_array_equal(predicted, np.argmax(image_emb @ text_emb.T, axis=1))


def test_zero_shot_argument_errors(tiny_open_clip):
    pytest.importorskip("torch")
    from alignscope.embed.clip import load_clip

    clip = load_clip(tiny_open_clip)
    with pytest.raises(ValueError, match=r"exactly one '\{\}'"):
        ClassClassifier.zero_shot(clip, ["cat"], template="a photo")
    with pytest.raises(ValueError, match="class_names has 'cat' more than once"):
        ClassClassifier.zero_shot(clip, ["cat", "cat"])
    with pytest.raises(TypeError, match="clip must be a ClipEncoder"):
        ClassClassifier.zero_shot("open_clip:RN50", ["cat"])


def _save_script(torch, module, path):
    with warnings.catch_warnings():  # TorchScript is deprecated in torch but is our format
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(module).save(str(path))
    return path


@pytest.fixture
def channel_models(tmp_path):
    """TorchScript models on ImageNet-normalised input: a classifier whose logits are the
    channel means (red, green, blue), a detector whose logit is the mean of all inputs, and
    a detector that wrongly returns two values per image."""
    torch = pytest.importorskip("torch")

    class ChannelMeans(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    class Brightness(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3)).unsqueeze(1)

    class TwoOutputs(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))[:, :2]

    return {
        "classifier": _save_script(torch, ChannelMeans(), tmp_path / "cls.pt"),
        "detector": _save_script(torch, Brightness(), tmp_path / "det.pt"),
        "two": _save_script(torch, TwoOutputs(), tmp_path / "two.pt"),
    }


def flat(rgb, size=40):
    return np.full((size, size, 3), rgb, dtype=np.uint8)


def test_torchscript_classifier_predicts_the_dominant_channel(channel_models):
    classifier = ClassClassifier.torchscript(
        channel_models["classifier"], ["red", "green", "blue"], size=8
    )
    images = [flat((255, 0, 0)), flat((0, 255, 0), 24), Image.fromarray(flat((0, 0, 255)))]
    np.testing.assert_array_equal(classifier.predict(images), [0, 1, 2])
    two_classes = ClassClassifier.torchscript(channel_models["classifier"], ["red", "green"])
    with pytest.raises(ValueError, match="returned 3 logits per image for 2 class_names"):
        two_classes.predict(images)


def test_torchscript_detector_scores_are_the_sigmoid_of_the_logit(channel_models):
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    detector = TriggerDetector.torchscript(channel_models["detector"], size=8)
    scores = detector.scores([flat((255, 255, 255)), flat((0, 0, 0))])
    logits = [((1 - mean) / std).mean(), ((0 - mean) / std).mean()]
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-np.array(logits))), rtol=1e-6)
    assert detector([flat((255, 255, 255)), flat((0, 0, 0))]).tolist() == [True, False]
    with pytest.raises(ValueError, match="it must return one logit per image"):
        TriggerDetector.torchscript(channel_models["two"], size=8).scores([flat((1, 2, 3))])


def test_torchscript_argument_errors(tmp_path, channel_models):
    with pytest.raises(ValueError, match="does not exist: pass a TorchScript model file"):
        TriggerDetector.torchscript(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"threshold must be a probability in \[0, 1\]"):
        TriggerDetector.torchscript(channel_models["detector"], threshold=2.0)
    with pytest.raises(ValueError, match="size must be a positive int"):
        ClassClassifier.torchscript(channel_models["classifier"], ["a", "b", "c"], size=0)
    with pytest.raises(ValueError, match="class_names is empty"):
        ClassClassifier.torchscript(channel_models["classifier"], [])


def test_dissect_generations_puts_each_image_in_its_group(channel_models):
    classifier = ClassClassifier.torchscript(
        channel_models["classifier"], ["red", "green", "blue"], size=8
    )
    detector = TriggerDetector.template("badnets-1")
    red, green = flat((200, 20, 20)), flat((20, 200, 20))
    images = [red, badnets1(red), badnets1(green), green, red]
    result = dissect_generations(
        images, target_class="red", classifier=classifier, detector=detector, p_t=0.25
    )
    assert result.groups.tolist() == ["G4", "G2", "G1", "G3", "G4"]
    assert result.predicted.tolist() == ["red", "red", "green", "green", "red"]
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["counts"] == {"G1": 1, "G2": 1, "G3": 1, "G4": 2}
    assert summary["amplification"]["trigger_fraction"] == pytest.approx(0.4)
    assert summary["amplification"]["ratio"] == pytest.approx(0.4 / 0.25)
    assert summary["groups"] == ["G4", "G2", "G1", "G3", "G4"]
    no_pt = dissect_generations(
        images, target_class="red", classifier=classifier, detector=detector
    )
    assert "amplification" not in no_pt.to_dict()
    with pytest.raises(ValueError, match="target_class 'purple' is not among"):
        dissect_generations(images, target_class="purple", classifier=classifier, detector=detector)
    with pytest.raises(TypeError, match="detector must be a TriggerDetector"):
        dissect_generations(images, target_class="red", classifier=classifier, detector=None)


def test_torchvision_checkpoint_classifier_matches_the_network(tmp_path, rng):
    """A torchvision architecture with saved weights predicts what the network itself predicts
    on the documented input (bilinear resize to size x size, [0, 1], ImageNet mean and std),
    prepared here without alignscope, and bad specs are named."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    names = ["dog", "cat", "car"]
    torch.manual_seed(0)
    net = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=3).eval()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "w.pth")
    images = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(12)]
    spec = f"torchvision:mobilenet_v3_small:{tmp_path / 'w.pth'}"
    got = ClassClassifier.checkpoint(spec, names, size=64).predict(images)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    batch = np.stack(
        [
            (np.asarray(Image.fromarray(im).resize((64, 64), Image.BILINEAR)) / 255.0 - mean) / std
            for im in images
        ]
    ).transpose(0, 3, 1, 2)
    with torch.no_grad():
        logits = net(torch.from_numpy(batch).float()).double().numpy()
    # The untrained network's logits are tiny (~1e-10) but their order is stable: no near-tie
    # that float32 rounding could flip, relative to their scale; and the classes differ
    # between images, so a wrong resize or normalisation moves some prediction.
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert np.min(top2[:, 1] - top2[:, 0]) > 1e-3 * np.abs(logits).max()
    assert len(set(np.argmax(logits, axis=1).tolist())) > 1
    np.testing.assert_array_equal(got, np.argmax(logits, axis=1))
    with pytest.raises(ValueError, match="do not fit torchvision:mobilenet_v3_small with 2"):
        ClassClassifier.checkpoint(spec, names[:2])
    with pytest.raises(ValueError, match="must be torchvision:NAME:WEIGHTS or timm"):
        ClassClassifier.checkpoint("resnet50", names)
    with pytest.raises(ValueError, match="torchvision has no model 'nonet'"):
        ClassClassifier.checkpoint(f"torchvision:nonet:{tmp_path / 'w.pth'}", names)


def test_a_torchscript_trigger_detector_runs_on_the_evaluation_device(monkeypatch):
    """detector_from_spec passes the device on (the dissection ran a user's detector on the
    CPU whatever --device said); templates need none."""
    from alignscope.evaluate import detectors

    seen = {}

    def fake(path, threshold, size=224, device="cpu", *, trust_models=False):
        seen.update(path=path, threshold=threshold, device=device, trust=trust_models)
        return "detector"

    monkeypatch.setattr(detectors.TriggerDetector, "torchscript", staticmethod(fake))
    got = detectors.detector_from_spec("det.pt", None, device="cuda:1", trust_models=True)
    assert got == "detector"
    assert seen == {
        "path": "det.pt",
        "threshold": detectors.TORCHSCRIPT_THRESHOLD,
        "device": "cuda:1",
        "trust": True,
    }
    assert detectors.detector_from_spec("badnets-1", device="cuda:1").name == "badnets-1"


# --------------------------------------------------------------------------- generation settings


def test_dissection_defaults_and_the_preset_are_bibaddiffs():
    """Guidance 5 and 1,000 images (BiBadDiff, Appendix A.5), 50 DDIM steps (its txt2img.py),
    "A photo of a [class]"; without the preset 20 images."""
    from alignscope.evaluate.config import Dissection

    d = Dissection(target_class="cat", class_names=["cat", "dog"])
    assert (d.guidance, d.steps, d.sampler, d.template, d.images) == (
        5.0,
        50,
        "ddim",
        "A photo of a {}",
        20,
    )
    assert PRESETS == {
        "bibaddiff": {
            "images": 1000,
            "guidance": 5.0,
            "steps": 50,
            "sampler": "ddim",
            "template": "A photo of a {}",
        }
    }
    for bad, message in (
        ({"sampler": "pndm"}, "dissection sampler must be ddim or pipeline, got 'pndm'"),
        ({"steps": 0}, "dissection steps must be >= 1, got 0"),
        ({"guidance": float("nan")}, "dissection guidance must be finite and >= 0, got nan"),
    ):
        with pytest.raises(ValueError) as refused:
            Dissection(target_class="cat", class_names=["cat"], **bad).check()
        assert str(refused.value) == message


def _ldm_alphas_cumprod() -> np.ndarray:
    """Stable Diffusion's noise schedule as LDM builds it (make_beta_schedule "linear" with
    linear_start 0.00085, linear_end 0.012: a linspace of square roots, squared)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def test_the_sampler_is_ldm_ddim_as_bibaddiff_runs_it():
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    sd_config = diffusers.PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    ).config
    alphas = _ldm_alphas_cumprod()
    for config in (sd_config, {**sd_config, "steps_offset": 0, "clip_sample": True}):
        ddim = bibaddiff_scheduler(config)
        assert isinstance(ddim, diffusers.DDIMScheduler)
        ddim.set_timesteps(50)
        assert ddim.timesteps.tolist() == _reference.ldm_ddim_timesteps(1000, 50)
        np.testing.assert_allclose(ddim.alphas_cumprod.double().numpy(), alphas, rtol=2e-4)
        # DDIM with eta 0 (LDM's p_sample_ddim): x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps,
        # x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t); the last step's a_prev is alphas_cumprod[0]
        # and x0 is not clipped
        x = torch.linspace(-3.0, 3.0, 16).reshape(1, 1, 4, 4)
        eps = torch.linspace(2.0, -1.0, 16).reshape(1, 1, 4, 4)
        for t, prev in ((981, 961), (1, None)):
            a_t = alphas[t]
            a_prev = alphas[0] if prev is None else alphas[prev]
            x0 = (x.double() - np.sqrt(1 - a_t) * eps.double()) / np.sqrt(a_t)
            want = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps.double()
            got = ddim.step(eps, t, x, eta=0.0).prev_sample
            np.testing.assert_allclose(got.double().numpy(), want.numpy(), rtol=1e-3, atol=1e-4)


class RecordingPipe:
    """A text-to-image pipeline stand-in: records each call's settings and the scheduler it
    would sample with, and returns red images."""

    def __init__(self, diffusers):
        self.scheduler = diffusers.PNDMScheduler()
        self.calls = []

    def __call__(self, prompts, *, num_inference_steps, guidance_scale, generator, **kwargs):
        self.calls.append(
            {
                "prompts": list(prompts),
                "steps": num_inference_steps,
                "guidance": guidance_scale,
                "scheduler": self.scheduler,
            }
        )
        red = np.zeros((len(prompts), 32, 32, 3))
        red[..., 0] = 0.9
        return SimpleNamespace(images=red)


def test_the_dissection_generates_with_bibaddiffs_settings(tmp_path, channel_models):
    diffusers = pytest.importorskip("diffusers")
    from alignscope.evaluate.config import Dissection, EvalConfig
    from alignscope.evaluate.generate import GenerationSettings
    from alignscope.evaluate.sections import dissection_section

    pipe = RecordingPipe(diffusers)
    own = pipe.scheduler
    config = EvalConfig(
        concepts=["red"],
        # the concept images' settings: the evaluation's guidance 7.5 and 3 steps here
        generation=GenerationSettings(steps=3, batch_size=2, height=32, width=32),
        dissection=Dissection(
            target_class="red",
            class_names=["red", "green", "blue"],
            classifier=str(channel_models["classifier"]),
            images=3,
        ),
    )
    section = dissection_section(pipe, None, config, tmp_path / "d", "weights", progress=False)
    assert [len(c["prompts"]) for c in pipe.calls] == [2, 1]
    assert {p for c in pipe.calls for p in c["prompts"]} == {"A photo of a red"}
    assert [(c["guidance"], c["steps"]) for c in pipe.calls] == [(5.0, 50)] * 2
    for call in pipe.calls:
        scheduler = call["scheduler"]
        assert isinstance(scheduler, diffusers.DDIMScheduler)
        scheduler.set_timesteps(50)
        assert scheduler.timesteps.tolist() == _reference.ldm_ddim_timesteps(1000, 50)
    assert pipe.scheduler is own  # the model's scheduler is put back
    assert section["prompt"] == "A photo of a red" and section["counts"]["G4"] == 3

    # the model's own scheduler and other settings on request
    other = RecordingPipe(diffusers)
    config.dissection = Dissection(
        target_class="red",
        class_names=["red", "green", "blue"],
        classifier=str(channel_models["classifier"]),
        images=1,
        guidance=2.0,
        steps=7,
        sampler="pipeline",
    )
    dissection_section(other, None, config, tmp_path / "e", "weights", progress=False)
    assert [(c["guidance"], c["steps"], c["scheduler"]) for c in other.calls] == [
        (2.0, 7, other.scheduler)
    ]
    with pytest.raises(RuntimeError, match="stopped"), dissection_sampler(other, "ddim"):
        assert isinstance(other.scheduler, diffusers.DDIMScheduler)
        raise RuntimeError("stopped")
    assert isinstance(other.scheduler, diffusers.PNDMScheduler)  # also after an error


def test_cli_preset_bibaddiff(monkeypatch, tmp_path, capsys):
    """--preset bibaddiff sets the paper's 1,000 images and its generation; flags given win;
    without the preset the dissection still generates as BiBadDiff, with 20 images."""
    import alignscope.evaluate.run as run_module
    from alignscope.cli import main

    seen = []

    def fake_evaluate(models, out, config, **kwargs):
        seen.append(config)
        return {"models": {}}

    monkeypatch.setattr(run_module, "evaluate", fake_evaluate)
    base = ["evaluate", str(tmp_path), "--out", str(tmp_path / "e"), "--concepts", "cat,dog"]
    base += ["--target-class", "cat", "--class-names", "cat,dog", "--json"]
    assert main([*base, "--preset", "bibaddiff", "--quiet"]) == 0
    d = seen[-1].dissection
    assert (d.images, d.guidance, d.steps, d.sampler) == (1000, 5.0, 50, "ddim")
    assert d.template == "A photo of a {}"
    assert seen[-1].generation.guidance == 7.5  # the concept images keep the Implosion's
    given = ["--dissection-images", "40", "--dissection-guidance", "2", "--quiet"]
    assert main([*base, "--preset", "bibaddiff", *given]) == 0
    d = seen[-1].dissection
    assert (d.images, d.guidance, d.steps, d.sampler) == (40, 2.0, 50, "ddim")
    assert main([*base, "--dissection-sampler", "pipeline", "--quiet"]) == 0
    d = seen[-1].dissection
    assert (d.images, d.guidance, d.steps, d.sampler) == (20, 5.0, 50, "pipeline")
    capsys.readouterr()
    assert main([*base, "--preset", "bibaddiff"]) == 0
    assert (
        "alignscope: note: --preset bibaddiff generates as the paper does, but zero-shot CLIP "
        "classifies and template matching detects the trigger where it used trained ResNet-50s"
    ) in capsys.readouterr().err
    lone = ["evaluate", str(tmp_path), "--out", str(tmp_path / "f"), "--concepts", "cat"]
    assert main([*lone, "--preset", "bibaddiff", "--quiet"]) == 2
    assert "--preset only apply with --target-class (G1-G4)" in capsys.readouterr().err
    assert len(seen) == 4
