"""Nightshade-style poisons with a tiny random VAE built from a config."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alignscope import _reference
from alignscope.cli import main
from alignscope.io.datasets import open_dataset
from alignscope.poison.concepts import make_vocabulary
from alignscope.poison.nightshade import candidate_filter, shade
from alignscope.poison.run import poison_dataset

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")


def test_budget_holds_on_the_saved_image_and_latent_moves(rng, tiny_vae):
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    anchor = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)  # resized to the image
    result = shade(image, anchor, tiny_vae, budget=0.05, steps=60)
    assert result.image.dtype == np.uint8 and result.image.shape == image.shape
    step = np.abs(result.image.astype(int) - image.astype(int)).max()
    assert step <= np.floor(255 * 0.05) and result.linf == step / 255
    assert result.latent_after < 0.8 * result.latent_before


def test_perceptual_penalty_path(rng, tiny_vae):
    """A locally constructed perceptual network stands in for LPIPS weights."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    calls = []

    def perceptual(a, b):
        calls.append(1)
        return (net(a) - net(b)).pow(2).mean()

    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    anchor = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    loose = shade(
        image,
        anchor,
        tiny_vae,
        budget=0.05,
        steps=20,
        perceptual=perceptual,
        perceptual_budget=10.0,
    )
    tight = shade(
        image,
        anchor,
        tiny_vae,
        budget=0.05,
        steps=20,
        perceptual=perceptual,
        perceptual_budget=0.0,
        perceptual_weight=1e4,
    )
    assert len(calls) == 40

    def distance(result):
        def t(x):
            return torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].float() / 127.5 - 1

        with torch.no_grad():
            return float(perceptual(t(result.image), t(image)))

    assert distance(tight) < distance(loose)  # the penalty changed the optimisation


class _FakeClip:
    """Embeddings chosen by hand: image i scores score[i] against the phrase."""

    def __init__(self, image_scores, text_scores):
        self.image_scores, self.text_scores = image_scores, text_scores

    def _vec(self, s):
        return np.array([s, np.sqrt(max(0.0, 1 - s * s))])

    def encode_texts(self, texts):
        return np.stack(
            [
                self._vec(1.0) if t.startswith("a photo of a") else self._vec(self.text_scores[t])
                for t in texts
            ]
        )

    def encode_images(self, images):
        return np.stack([self._vec(self.image_scores[int(im)]) for im in images])


def test_candidate_filter_follows_the_release():
    captions = [f"c{i}" for i in range(6)]
    clip = _FakeClip([0.3, 0.1, 0.5, 0.25, 0.9, 0.24], {c: 0.1 * i for i, c in enumerate(captions)})
    keep = candidate_filter(clip, lambda r: r, captions)
    assert keep("dog", list(range(6))) == [0, 2, 3, 4]  # image score > 0.24
    from alignscope.poison import nightshade

    nightshade.TOP_CAPTIONS, saved = 2, nightshade.TOP_CAPTIONS
    try:
        assert keep("dog", list(range(6))) == [3, 4]  # the 2 captions closest to the phrase
    finally:
        nightshade.TOP_CAPTIONS = saved


def test_nightshade_end_to_end(tmp_path, rng, tiny_vae, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    data = tmp_path / "data"
    data.mkdir()
    nouns = ["dog", "cat", "car"]
    for i in range(18):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            data / f"{i:02d}.png"
        )
        (data / f"{i:02d}.txt").write_text(f"a {nouns[i % 3]} on the street")
    vocab = make_vocabulary(nouns)
    reports = [
        poison_dataset(
            open_dataset(data),
            tmp_path / run,
            method="nightshade",
            concepts=1,
            per_concept=2,
            vae=tiny_vae,
            steps=15,
            nightshade_size=24,  # 32-pixel sources, cropped to 24 as the release does to 512
            seed=4,
            vocabulary=vocab,
        )
        for run in ("a", "b")
    ]
    assert reports[0].poisoned == 2
    m = pq.read_table(tmp_path / "a" / "poison_manifest.parquet").to_pydict()
    rows = [i for i, p in enumerate(m["poisoned"]) if p]
    for i in rows:
        assert m["latent_after"][i] < m["latent_before"][i]
        # the perturbation is measured against the cropped source it was made from
        original = np.asarray(Image.open(data / f"{m['row'][i]:02d}.png").convert("RGB"))
        source = _reference.short_side_crop_reference(original, 24, Image.BILINEAR)
        written = np.asarray(Image.open(tmp_path / "a" / m["written_as"][i]).convert("RGB"))
        assert written.shape == (24, 24, 3)
        want = _reference.perturbation_measurements(source, written)
        for key in ("linf", "l2", "psnr"):
            assert m[key][i] == pytest.approx(want[key], rel=1e-12), key
        assert 0 < m["linf"][i] <= np.floor(255 * 0.04) / 255  # the release's default budget
        caption = (tmp_path / "a" / f"{m['row'][i]:08d}.txt").read_text()
        assert caption == f"a {m['source_concept'][i]} on the street"  # clean label
        params = json.loads(m["params"][i])
        assert params["anchor"].startswith("row:")
        assert (params["budget"], params["size"]) == (0.04, 24)
        # What the bytes depend on beyond input, options and seed (README: "Nightshade also
        # the same device and torch thread count").
        assert params["device"] == "cpu"
        assert params["torch_threads"] == torch.get_num_threads()
    for name in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    vae_dir = tmp_path / "vae"
    tiny_vae.save_pretrained(vae_dir)
    argv = [
        "poison",
        str(data),
        "--out",
        str(tmp_path / "c"),
        "--method",
        "nightshade",
        "--vae",
        str(vae_dir),
        "--concepts",
        "1",
        "--per-concept",
        "1",
        "--steps",
        "5",
        "--nightshade-size",
        "0",  # each source at its own size
        "--json",
        "--quiet",
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["poisoned"] == 1
    m = pq.read_table(tmp_path / "c" / "poison_manifest.parquet").to_pydict()
    (i,) = [i for i, p in enumerate(m["poisoned"]) if p]
    assert json.loads(m["params"][i])["size"] is None
    written = np.asarray(Image.open(tmp_path / "c" / m["written_as"][i]).convert("RGB"))
    assert written.shape == (32, 32, 3)
    assert main([*argv[:-4], "--nightshade-size", "4", "--quiet"]) == 2
    assert "nightshade size (--nightshade-size) must be an int >= 8" in capsys.readouterr().err


def test_anchor_generated_once_with_a_tiny_pipeline(tmp_path, tiny_sd_dir):
    from alignscope.poison.anchors import generate_anchor, load_pipeline

    loaded = load_pipeline(str(tiny_sd_dir))
    first = generate_anchor(loaded, "hot dog", tmp_path / "anchors", steps=2, size=16)
    assert first.shape == (16, 16, 3) and (tmp_path / "anchors" / "hot_dog.png").exists()
    # The module docstring's recipe, run on the pipeline directly: "A photo of a {target}",
    # seed 123 on a CPU generator, guidance 7.5 (a wrong prompt, seed or guidance fails here).
    direct = loaded(
        "A photo of a hot dog",
        num_inference_steps=2,
        guidance_scale=7.5,
        height=16,
        width=16,
        generator=torch.Generator("cpu").manual_seed(123),
    ).images[0]
    np.testing.assert_array_equal(first, np.asarray(direct.convert("RGB")))
    again = generate_anchor(None, "hot dog", tmp_path / "anchors")  # cached: no pipeline needed
    np.testing.assert_array_equal(again, first)


def test_lpips_without_local_weights_says_what_to_do(monkeypatch, tmp_path):
    pytest.importorskip("lpips")
    from alignscope.poison.nightshade import load_lpips

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("ALIGNSCOPE_ALLOW_DOWNLOADS", raising=False)
    with pytest.raises(
        ValueError, match=r"LPIPS needs AlexNet weights in .*checkpoints \(alexnet-\*\.pth\)"
    ):
        load_lpips()
