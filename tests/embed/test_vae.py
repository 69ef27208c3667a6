"""`alignscope embed --vae`: pooled VAE latent means of images and of purified copies.

References: the diffusers VAE called directly on pixels prepared by
:func:`alignscope._reference.vae_input_pixels`, pooled by
:func:`alignscope._reference.adaptive_block_means` (block means in numpy), and the purification
re-written with PIL in :func:`alignscope._reference.mild_purification`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alignscope import _reference as ref
from alignscope.cli import main
from alignscope.embed import VAEEncoder, embed_dataset, load_clip
from alignscope.embed.vae import purify
from alignscope.io import open_store, store_row_ids
from alignscope.io.datasets import open_dataset

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

SIZE = 16  # the VAE input side in the store tests: 8 x 8 latent cells, pooled to 4 x 4


def _smooth(rng: np.random.Generator, n: int, size: tuple[int, int] = (64, 64)) -> list:
    """Low-frequency colour images (w, h): what a photo looks like to a 4 x 4 grid."""
    return [
        Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        for _ in range(n)
    ]


def _folder(root, images):
    """An image folder with captions; the record after the last image is a corrupt PNG."""
    root.mkdir(parents=True)
    for i, im in enumerate(images):
        im.save(root / f"{i:03d}.png")
        (root / f"{i:03d}.txt").write_text(f"caption {i}")
    (root / f"{len(images):03d}.png").write_bytes(b"\x89PNG broken")
    return root


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory, tiny_vae):
    root = tmp_path_factory.mktemp("vae") / "vae"
    tiny_vae.save_pretrained(root)
    return root


def _three_block_vae():
    """Like the conftest tiny VAE with a third down block: latents are 1/4 of the input side,
    so a 40-pixel input gives 10 x 10 cells, which a 4 x 4 grid cannot split evenly."""
    torch.manual_seed(1)
    return diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
    )


def _reference_rows(vae, images, size: int) -> np.ndarray:
    pixels = np.stack([ref.vae_input_pixels(im, size) for im in images])
    with torch.no_grad():
        mean = vae.encode(torch.from_numpy(pixels).float()).latent_dist.mean.double().numpy()
    return np.stack([ref.adaptive_block_means(m, 4) for m in mean])


@pytest.mark.parametrize("blocks, size", [(2, 24), (3, 40)])
def test_pooled_latents_are_the_vae_means_averaged_on_a_4x4_grid(
    tmp_path, rng, tiny_vae, blocks, size
):
    vae = tiny_vae if blocks == 2 else _three_block_vae()
    vae.save_pretrained(tmp_path / "vae")
    encoder = VAEEncoder(tmp_path / "vae", size)
    images = [*_smooth(rng, 1, (80, 60)), *_smooth(rng, 1, (50, 70))]  # crop across, then down
    pooled, purified = encoder.encode(images)
    assert pooled.dtype == purified.dtype == np.float32
    assert pooled.shape == purified.shape == (2, 64) == (2, encoder.dim)
    np.testing.assert_allclose(pooled, _reference_rows(vae, images, size), rtol=1e-4, atol=1e-5)
    purified_images = [ref.mild_purification(im) for im in images]
    np.testing.assert_allclose(
        purified, _reference_rows(vae, purified_images, size), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("size", [(64, 64), (70, 45)])  # 70 * 3/4 = 52.5: rounded up to 53
def test_purification_is_jpeg_small_resize_and_slight_blur(rng, size):
    image = _smooth(rng, 1, size)[0]
    got = purify(image)
    assert got.size == image.size and got.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref.mild_purification(image)))


def test_purification_is_mild_on_content_and_halves_pixel_noise(rng):
    for image in _smooth(rng, 3):
        clean = np.asarray(image, dtype=np.float64)
        kept = np.asarray(purify(image), dtype=np.float64)
        assert 10 * np.log10(255.0**2 / np.mean((kept - clean) ** 2)) > 33.0  # PSNR in dB
        # +-8 levels of sign noise, the size of an L-infinity poison's perturbation
        noise = rng.choice([-8.0, 8.0], clean.shape)
        noisy = Image.fromarray(np.clip(clean + noise, 0, 255).astype(np.uint8))
        left = np.asarray(purify(noisy), dtype=np.float64) - kept
        assert np.sqrt(np.mean(left**2)) < 0.6 * np.sqrt(np.mean(noise**2))


def test_store_views_are_row_aligned_and_resume_only_the_same_vae(
    tmp_path, rng, tiny_vae, vae_dir, tiny_open_clip
):
    images = _smooth(rng, 7)
    data = _folder(tmp_path / "data", images)  # 8 records in shards of 3, the last one corrupt
    clip = load_clip(tiny_open_clip)
    vae = VAEEncoder(vae_dir, SIZE)

    def embed(encoder, out="store"):
        return embed_dataset(
            open_dataset(data),
            tmp_path / out,
            clip=clip,
            vae=encoder,
            batch_size=2,
            shard_rows=3,
            progress=False,
        )

    report = embed(vae)
    assert report.shards_written == [0, 1, 2] and [s[0] for s in report.skipped] == ["007.png"]
    store = open_store(tmp_path / "store")
    assert store.n == 7 and store.has_view("vae") and store.has_view("vae_purified")
    assert store.dim("vae") == store.dim("vae_purified") == 64
    assert store_row_ids(tmp_path / "store") == [f"{i:03d}.png" for i in range(7)]
    pooled, purified = vae.encode(images)  # the rows of the images in id order
    np.testing.assert_allclose(store.read(0, 7, "vae").astype(np.float32), pooled, atol=2e-3)
    np.testing.assert_allclose(
        store.read(0, 7, "vae_purified").astype(np.float32), purified, atol=2e-3
    )
    np.testing.assert_allclose(
        store.read(0, 7, "image").astype(np.float32), clip.encode_images(images), atol=2e-3
    )
    # the same VAE resumes (every shard complete); another folder or input size is refused
    assert embed(vae).shards_skipped == [0, 1, 2]
    tiny_vae.save_pretrained(tmp_path / "other_vae")
    with pytest.raises(ValueError, match=r"holds the output of another run \(vae\.model\."):
        embed(VAEEncoder(tmp_path / "other_vae", SIZE))
    with pytest.raises(ValueError, match=r"vae\.size: 16 there, 24 now"):
        embed(VAEEncoder(vae_dir, 24))
    # and a store embedded without a VAE records none: adding --vae later is another run
    embed_dataset(open_dataset(data), tmp_path / "plain", clip=clip, progress=False)
    with pytest.raises(ValueError, match=r"vae: null there"):
        embed(vae, "plain")


def test_a_stable_diffusion_folder_loads_its_vae_subfolder(tmp_path, rng, tiny_vae, vae_dir):
    tiny_vae.save_pretrained(tmp_path / "sd" / "vae")
    image = _smooth(rng, 1)
    np.testing.assert_array_equal(
        VAEEncoder(tmp_path / "sd", SIZE).encode(image)[0],
        VAEEncoder(vae_dir, SIZE).encode(image)[0],
    )


def test_cli_embed_vae_then_screen_cross_view_on_it(tmp_path, rng, vae_dir, tiny_open_clip, capsys):
    pytest.importorskip("matplotlib")
    pq = pytest.importorskip("pyarrow.parquet")
    data = _folder(tmp_path / "data", _smooth(rng, 12))
    vae = ["--vae", str(vae_dir), "--vae-size", str(SIZE), "--quiet", "--json"]
    assert (
        main(["embed", str(data), "--out", str(tmp_path / "s"), "--clip", tiny_open_clip, *vae])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["images"] == 12
    screen = ["screen", str(tmp_path / "s"), "--scores", "cross_view", "--quiet", "--json"]
    scores = {}
    for view in ("vae", "vae_purified"):
        assert main([*screen, "--second-view", view, "--out", str(tmp_path / view)]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["removal"]["removed"] + summary["removal"]["kept"] == 12
        scores[view] = pq.read_table(tmp_path / view / "scores.parquet").column("cross_view")
    assert scores["vae"] != scores["vae_purified"]  # each run read the view it was given
    # --vae alone: a store of the two VAE views only
    assert main(["embed", str(data), "--out", str(tmp_path / "v"), *vae]) == 0
    capsys.readouterr()
    folders = {p.name for p in (tmp_path / "v").iterdir() if p.is_dir()}
    assert folders == {"vae_emb", "vae_purified_emb", "metadata"}
    assert open_store(tmp_path / "v").read(0, 12, "vae").shape == (12, 64)


SIZE_RULE = "--vae-size: the VAE input size must be a multiple of 8 and >= 8, got"
NOT_VAE = (
    "is not a diffusers AutoencoderKL folder: neither its config.json nor vae/config.json names "
    "_class_name AutoencoderKL"
)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--vae", "nowhere"], "--vae: no such directory 'nowhere'"),
        (["--vae", "{empty}"], "--vae: '{empty}' " + NOT_VAE),
        (["--vae", "{clip}"], "--vae: '{clip}' " + NOT_VAE),
        (["--vae", "{vae}", "--vae-size", "12"], f"{SIZE_RULE} 12"),
        (["--vae", "{vae}", "--vae-size", "0"], f"{SIZE_RULE} 0"),
        (["--vae-size", "64"], "--vae-size sets the input size of --vae DIR; give --vae too"),
    ],
)
def test_cli_bad_vae_flags_are_refused_before_any_model_loads(
    tmp_path, rng, vae_dir, flags, message, capsys
):
    data = _folder(tmp_path / "data", _smooth(rng, 1))
    (tmp_path / "empty").mkdir()
    (tmp_path / "clip").mkdir()  # a model folder of another kind: config.json without the class
    (tmp_path / "clip" / "config.json").write_text('{"model_type": "clip"}')
    where = {"empty": tmp_path / "empty", "clip": tmp_path / "clip", "vae": vae_dir}
    argv = [f.format(**where) for f in flags]
    # a CLIP spec that cannot load: the VAE flags must be refused before it is tried
    bad_clip = ["--clip", "open_clip:no-such-model"]
    assert main(["embed", str(data), "--out", str(tmp_path / "s"), *bad_clip, *argv]) == 2
    assert capsys.readouterr().err.strip() == f"alignscope: error: {message.format(**where)}"
    assert not (tmp_path / "s").exists()


def test_a_nightshade_poison_moves_back_under_purification_more_than_its_image(
    rng, tiny_vae, vae_dir
):
    from alignscope.poison.nightshade import shade

    encoder = VAEEncoder(vae_dir, 32)
    ratios = []
    for seed in range(3):
        image, anchor = (np.asarray(im) for im in _smooth(rng, 2, (32, 32)))
        poison = shade(image, anchor, tiny_vae, budget=0.05, steps=5, seed=seed).image
        pooled, purified = encoder.encode([Image.fromarray(image), Image.fromarray(poison)])
        benign_shift, poison_shift = np.linalg.norm(pooled - purified, axis=1)
        ratios.append(poison_shift / benign_shift)
    # measured 3.6-7.7 (random +-12 sign noise of the same budget: 1.3-2.4)
    assert min(ratios) > 2.0, ratios
