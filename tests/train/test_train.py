"""Training modes on a tiny Stable Diffusion built from configs, offline, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from alignscope.io.datasets import open_dataset
from alignscope.train import TrainConfig, train
from alignscope.train.data import jpeg, load_examples
from alignscope.train.loop import diffusion_loss

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

TINY_UNET = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [16, 32],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 16,
    "norm_num_groups": 8,
    "attention_head_dim": 4,
}


def _finetune(data, out, model, config):
    return train("finetune", open_dataset(data), out, model=model, config=config, progress=False)


@pytest.mark.parametrize("mode", ["finetune", "scratch"])
def test_training_overfits_four_images(tmp_path, four_images, tiny_sd_dir, mode):
    cfg = TrainConfig(steps=120, learning_rate=1e-3, batch_size=4, resolution=16, seed=0)
    result = train(
        mode,
        open_dataset(four_images),
        tmp_path / "out",
        model=tiny_sd_dir,
        config=cfg,
        unet_config=TINY_UNET if mode == "scratch" else None,
        progress=False,
    )
    losses = np.array(result.losses)
    assert losses[-20:].mean() < 0.5 * losses[:20].mean()
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path / "out" / "model")
    image = pipe(
        "a photo of thing 0", num_inference_steps=2, height=16, width=16, output_type="np"
    ).images
    assert image.shape == (1, 16, 16, 3)
    assert (tmp_path / "out" / "train_log.jsonl").read_text().count("\n") == 120


def test_textual_inversion_trains_only_its_embedding(tmp_path, four_images, tiny_sd_dir):
    cfg = TrainConfig(steps=25, learning_rate=5e-2, batch_size=4, resolution=16, seed=0)
    result = train(
        "textual-inversion",
        open_dataset(four_images),
        tmp_path / "ti",
        model=tiny_sd_dir,
        config=cfg,
        placeholder="<thing>",
        initializer="a",
        num_vectors=2,
        progress=False,
    )
    assert len(result.losses) == 25
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    pipe.load_textual_inversion(str(tmp_path / "ti" / "learned_embeds.safetensors"))
    ids = pipe.tokenizer.convert_tokens_to_ids(["<thing>", "<thing>_1"])
    after = pipe.text_encoder.get_input_embeddings().weight.detach()
    torch.testing.assert_close(after[: before.shape[0]], before)  # every other token unchanged
    initial = before[pipe.tokenizer.encode("a", add_special_tokens=False)[0]]
    assert all(not torch.allclose(after[i], initial) for i in ids)  # the new vectors moved


@pytest.fixture
def two_concepts(tmp_path, rng):
    """Two concepts of four images each, captioned "a photo of a q" and "a photo of a x"."""
    root = tmp_path / "concepts"
    for word in ("q", "x"):
        (root / word).mkdir(parents=True)
        base = rng.integers(0, 255, (4, 4, 3))
        for i in range(4):
            pixels = np.clip(base + rng.integers(-10, 10, (4, 4, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).resize((16, 16), Image.BICUBIC).save(root / word / f"{i}.png")
            (root / word / f"{i}.txt").write_text(f"a photo of a {word}")
    both = root / "both"
    both.mkdir()
    for word in ("q", "x"):
        for f in (root / word).iterdir():
            (both / f"{word}{f.name}").write_bytes(f.read_bytes())
    return root


def test_textual_inversion_recovers_a_concept_the_model_knows(
    tmp_path, two_concepts, tiny_sd_factory
):
    """The frozen model is first fine-tuned on concepts q and x; textual inversion on q's four
    images, started from x's token, must find q: its loss falls by at least half.

    The model is the kind where conditioning carries the signal: v-prediction (SD 2.x) with
    latents scaled to unit size, trained in SZT's high-noise window, where the noisy latent
    alone no longer tells q from x.
    """
    pipe = tiny_sd_factory()
    pipe.scheduler = diffusers.DDPMScheduler.from_config(
        pipe.scheduler.config, prediction_type="v_prediction"
    )
    pipe.vae.register_to_config(scaling_factor=5.0)
    pipe.save_pretrained(tmp_path / "sd")
    window = {"batch_size": 4, "resolution": 16, "seed": 0, "timestep_min": 900}
    train(
        "finetune",
        open_dataset(two_concepts / "both"),
        tmp_path / "ft",
        model=tmp_path / "sd",
        config=TrainConfig(steps=300, learning_rate=1e-3, **window),
        progress=False,
    )
    result = train(
        "textual-inversion",
        open_dataset(two_concepts / "q"),
        tmp_path / "ti",
        model=tmp_path / "ft" / "model",
        config=TrainConfig(steps=200, learning_rate=5e-2, **window),
        placeholder="<q-concept>",
        initializer="x",
        progress=False,
    )
    losses = np.array(result.losses)
    assert losses[-20:].mean() < 0.5 * losses[:20].mean()


def test_resume_gives_the_uninterrupted_weights(tmp_path, four_images, tiny_sd_dir):
    full = TrainConfig(
        steps=8, learning_rate=1e-3, batch_size=2, resolution=16, seed=3, checkpoint_every=3
    )
    _finetune(four_images, tmp_path / "full", tiny_sd_dir, full)
    part = TrainConfig(
        steps=5, learning_rate=1e-3, batch_size=2, resolution=16, seed=3, checkpoint_every=3
    )
    _finetune(four_images, tmp_path / "resumed", tiny_sd_dir, part)
    result = _finetune(four_images, tmp_path / "resumed", tiny_sd_dir, full)
    assert result.resumed_from == 3
    a = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "full" / "model" / "unet")
    b = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "resumed" / "model" / "unet")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


class _Spy:
    """A scheduler/UNet stand-in that records timesteps and returns a chosen prediction."""

    def __init__(self, prediction):
        self.prediction = prediction
        self.timesteps = []
        self.config = type("C", (), {"num_train_timesteps": 1000, "prediction_type": "epsilon"})()

    def add_noise(self, latents, noise, t):
        self.timesteps.extend(t.tolist())
        return latents

    def __call__(self, noisy, t, hidden):
        return type("O", (), {"sample": self.prediction})()


def test_szt_timesteps_come_from_the_window():
    spy = _Spy(torch.zeros(64, 4, 2, 2))
    gen = torch.Generator().manual_seed(0)
    diffusion_loss(
        unet=spy,
        scheduler=spy,
        latents=torch.zeros(64, 4, 2, 2),
        encoder_hidden_states=None,
        generator=gen,
        timestep_min=800,
        min_snr_gamma=None,
        mask=None,
    )
    assert min(spy.timesteps) >= 800 and max(spy.timesteps) < 1000


def test_szt_masked_loss_ignores_masked_pixels():
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1.0  # learn on the left half only
    left = torch.zeros(1, 4, 4, 4)
    right_garbage = left.clone()
    right_garbage[..., 2:] = 100.0
    kwargs = {
        "latents": torch.zeros(1, 4, 4, 4),
        "encoder_hidden_states": None,
        "timestep_min": 0,
        "min_snr_gamma": None,
        "mask": mask,
    }
    a = diffusion_loss(unet=_Spy(left), scheduler=_Spy(left), generator=gen_a, **kwargs)
    b = diffusion_loss(
        unet=_Spy(right_garbage), scheduler=_Spy(right_garbage), generator=gen_b, **kwargs
    )
    assert float(a) == pytest.approx(float(b))


def test_szt_window_includes_its_lower_end():
    # [998, 1000) holds two timesteps; 256 draws miss one of them with probability 2**-255
    spy = _Spy(torch.zeros(256, 4, 1, 1))
    diffusion_loss(
        unet=spy,
        scheduler=spy,
        latents=torch.zeros(256, 4, 1, 1),
        encoder_hidden_states=None,
        generator=torch.Generator().manual_seed(0),
        timestep_min=998,
        min_snr_gamma=None,
        mask=None,
    )
    assert set(spy.timesteps) == {998, 999}


class _NoiseSpy(_Spy):
    """A _Spy that also keeps the noise it was given: the epsilon target of the loss."""

    def add_noise(self, latents, noise, t):
        self.noise = noise.clone()
        return super().add_noise(latents, noise, t)


def test_masked_loss_is_the_mean_over_learned_pixels_and_channels():
    pred = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(5))

    def loss(mask):
        spy = _NoiseSpy(pred)
        value = diffusion_loss(
            unet=spy,
            scheduler=spy,
            latents=torch.zeros(2, 4, 4, 4),
            encoder_hidden_states=None,
            generator=torch.Generator().manual_seed(1),
            timestep_min=0,
            min_snr_gamma=None,
            mask=mask,
        )
        return float(value), (pred.double() - spy.noise.double()).numpy() ** 2

    plain, err = loss(None)
    assert plain == pytest.approx(err.mean(), rel=1e-6)  # plain MSE: every element alike
    # an all-ones mask learns everything: the plain MSE (up to float32 summation order)
    ones, err_ones = loss(torch.ones(2, 1, 4, 4))
    np.testing.assert_array_equal(err_ones, err)  # same seed, same noise
    assert ones == pytest.approx(plain, rel=1e-6)
    # partial masks: each sample's mean over its learned pixels, all 4 channels, then the batch
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :, :2] = 1.0  # sample 0: the left half
    mask[1, :, 0, :] = 1.0  # sample 1: the top row
    half, err_half = loss(mask)
    np.testing.assert_array_equal(err_half, err)
    keep = mask[:, 0].numpy().astype(bool)
    expected = np.mean([err[b][:, keep[b]].mean() for b in range(2)])
    assert half == pytest.approx(expected, rel=1e-6)


def test_gradient_accumulation_averages_the_micro_batches(tmp_path):
    import json

    from alignscope.train.loop import run_loop

    w = torch.nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))
    seen = []  # (step, the weights the loss saw, the micro-batch's data), one per micro-batch
    grads = []  # the gradient each optimizer step used

    def compute_loss(step, generator):
        x = torch.randn(3, 2, generator=generator, dtype=torch.float64)
        seen.append((step, w.detach().numpy().copy(), x.numpy()))
        return ((w - x) ** 2).mean()

    run_loop(
        config=TrainConfig(steps=2, gradient_accumulation=3, learning_rate=0.1, seed=1),
        out=tmp_path,
        parameters=[w],
        compute_loss=compute_loss,
        after_step=lambda: grads.append(w.grad.detach().numpy().copy()),
        progress=False,
    )
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    logged = [json.loads(line)["loss"] for line in lines]
    assert len(seen) == 6 and len(grads) == len(logged) == 2
    for step in range(2):
        micro = [(w0, x) for s, w0, x in seen if s == step]
        # closed forms per micro-batch: L = mean_ij (w_j - x_ij)^2, dL/dw_j = 2 sum_i (w_j -
        # x_ij) / (3 * 2); the step uses the mean over the micro-batches, not their sum
        loss_ref = np.mean([((w0 - x) ** 2).mean() for w0, x in micro])
        grad_ref = np.mean([2.0 * (w0 - x).sum(axis=0) / x.size for w0, x in micro], axis=0)
        assert logged[step] == pytest.approx(loss_ref, rel=1e-12)
        np.testing.assert_allclose(grads[step], grad_ref, rtol=1e-12)


def test_szt_jpeg_is_applied_at_the_given_quality(four_images):
    import io

    image = Image.open(four_images / "0.png").convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=20)
    expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(jpeg(image, 20)), expected)
    plain = load_examples(open_dataset(four_images), 16)[0].pixels
    compressed = load_examples(open_dataset(four_images), 16, jpeg_quality=20)[0].pixels
    assert not torch.equal(plain, compressed)


def test_bad_configs(tmp_path, four_images, tiny_sd_dir):
    one_step = TrainConfig(steps=1, resolution=16)
    with pytest.raises(ValueError, match=r"timestep_min must be in \[0, 1000\)"):
        _finetune(four_images, tmp_path / "x", tiny_sd_dir, TrainConfig(timestep_min=1000))
    with pytest.raises(ValueError, match="scratch needs unet_config="):
        train(
            "scratch",
            open_dataset(four_images),
            tmp_path / "x",
            model=tiny_sd_dir,
            config=one_step,
            progress=False,
        )
    with pytest.raises(ValueError, match="not a diffusers pipeline folder"):
        _finetune(four_images, tmp_path / "x", tmp_path, one_step)
    with pytest.raises(ValueError, match="resolution must be a multiple of 8"):
        _finetune(four_images, tmp_path / "x", tiny_sd_dir, TrainConfig(steps=1, resolution=30))


def test_cli_names_the_flags(tmp_path, four_images, tiny_sd_dir, capsys):
    from alignscope.cli import main

    common = [str(four_images), "--model", str(tiny_sd_dir), "--out", str(tmp_path / "o")]
    common += ["--steps", "1", "--resolution", "16", "--quiet"]
    argv = ["train", "scratch", *common, "--unet-config", str(tmp_path / "none.json")]
    assert main(argv) == 2
    assert "--unet-config file" in capsys.readouterr().err
    assert main(["train", "textual-inversion", *common]) == 2
    assert "needs --placeholder (e.g. '<cat-toy>') and --initializer" in capsys.readouterr().err


def test_cli_train_scratch(tmp_path, four_images, tiny_sd_dir, capsys):
    import json

    from alignscope.cli import main

    (tmp_path / "unet.json").write_text(json.dumps(TINY_UNET))
    argv = [
        "train",
        "scratch",
        str(four_images),
        "--model",
        str(tiny_sd_dir),
        "--out",
        str(tmp_path / "o"),
        "--unet-config",
        str(tmp_path / "unet.json"),
        "--steps",
        "3",
        "--resolution",
        "16",
        "--batch-size",
        "2",
        "--timestep-min",
        "500",
        "--jpeg-quality",
        "50",
        "--json",
        "--quiet",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 3 and (tmp_path / "o" / "model" / "model_index.json").exists()
    saved = json.loads((tmp_path / "o" / "train_config.json").read_text())
    assert saved["timestep_min"] == 500 and saved["jpeg_quality"] == 50


_WORKER = """
import sys
from alignscope.io.datasets import open_dataset
from alignscope.train import TrainConfig, train
data, model, out, batch = sys.argv[1:5]
cfg = TrainConfig(steps=3, learning_rate=1e-3, batch_size=int(batch), resolution=16, seed=2)
train("finetune", open_dataset(data), out, model=model, config=cfg, progress=False)
"""


def test_two_processes_follow_one_with_the_global_batch(tmp_path, four_images, tiny_sd_dir):
    """Under accelerate (two CPU processes, gloo), batch 2 per process trains exactly as one
    process with batch 4: same global batch, noise and timesteps, averaged gradients."""
    pytest.importorskip("accelerate")
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workers = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        argv = [sys.executable, "-c", _WORKER, str(four_images), str(tiny_sd_dir)]
        workers.append(subprocess.Popen([*argv, str(tmp_path / "two"), "2"], env=env))
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    train(
        "finetune",
        open_dataset(four_images),
        tmp_path / "one",
        model=tiny_sd_dir,
        config=TrainConfig(steps=3, learning_rate=1e-3, batch_size=4, resolution=16, seed=2),
        progress=False,
    )
    a = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "one" / "model" / "unet")
    b = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "two" / "model" / "unet")
    # Adam divides by sqrt(v): a gradient element near zero whose last bit differs (the sum is
    # split across processes) can move by a fraction of lr, so a few elements differ slightly
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    diffs = [(p - q).abs() for p, q in pairs]
    assert max(float(d.max()) for d in diffs) < 3e-4
    changed = sum(int((d > 1e-5).sum()) for d in diffs)
    assert changed <= 1e-4 * sum(d.numel() for d in diffs)
    import json

    def losses(run):
        lines = (tmp_path / run / "train_log.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines]

    np.testing.assert_allclose(losses("two"), losses("one"), rtol=1e-5)


def test_loss_mask_directory_must_exist_and_match(tmp_path, four_images, tiny_sd_dir):
    import dataclasses

    cfg = TrainConfig(steps=1, batch_size=2, resolution=16, mask_dir=str(tmp_path / "none"))
    with pytest.raises(ValueError, match=r"loss-mask directory .* does not exist"):
        _finetune(four_images, tmp_path / "m", tiny_sd_dir, cfg)
    (tmp_path / "masks").mkdir()
    Image.new("L", (16, 16), 255).save(tmp_path / "masks" / "other.png")
    cfg = dataclasses.replace(cfg, mask_dir=str(tmp_path / "masks"))
    with pytest.raises(
        ValueError,
        match=r"no loss mask in .* matches a training image: masks are named "
        r"<image stem>\.png \(e\.g\. 0\.png\)",
    ):
        _finetune(four_images, tmp_path / "m", tiny_sd_dir, cfg)


class _ZeroUnet:
    """Predicts 0 everywhere: the loss is then the mean square of the target itself."""

    def __call__(self, noisy, t, hidden):
        return type("O", (), {"sample": torch.zeros_like(noisy)})()


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_the_loss_target_and_min_snr_weight_follow_the_prediction_type(kind, gamma):
    """At t = 999 (the window [999, 1000)) with a = alphas_cumprod[999]: the target is the noise,
    v = sqrt(a) noise - sqrt(1 - a) x0, or x0; Min-SNR (SNR = a / (1 - a) < gamma here) weighs
    the squared error by min(SNR, gamma) / SNR, / (SNR + 1) and / 1 (Hang et al.; diffusers'
    training scripts)."""
    scheduler = diffusers.DDPMScheduler(prediction_type=kind)
    latents = torch.linspace(-1, 1, 2 * 4 * 3 * 3).reshape(2, 4, 3, 3)
    loss = diffusion_loss(
        unet=_ZeroUnet(),
        scheduler=scheduler,
        latents=latents,
        encoder_hidden_states=None,
        generator=torch.Generator().manual_seed(7),
        timestep_min=999,
        min_snr_gamma=gamma,
        mask=None,
    )
    # the loss draws its noise first from the generator
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(7)).double()
    a = scheduler.alphas_cumprod[999].double()
    x0 = latents.double()
    target = {"epsilon": noise, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * x0}
    mse = (target.get(kind, x0) ** 2).mean()
    snr = a / (1 - a)
    assert snr < 5.0
    weight = {"epsilon": 1.0, "v_prediction": snr / (snr + 1), "sample": snr}[kind]
    assert float(loss) == pytest.approx(float(mse * (1.0 if gamma is None else weight)), rel=1e-5)


def test_an_unknown_prediction_type_is_refused_by_training_and_the_analyses(
    tmp_path, four_images, tiny_sd_dir, monkeypatch
):
    import json
    import shutil

    from alignscope.analyze import _model
    from alignscope.train import modes

    want = (
        "unsupported scheduler prediction_type 'flow': the model's scheduler config must "
        "predict one of epsilon, v_prediction, sample"
    )
    # training: the model folder's scheduler predicts "flow"; train() must stop in _prepare,
    # before the dataset is loaded (load_examples is the first work after the checks)
    model = tmp_path / "sd"
    shutil.copytree(tiny_sd_dir, model)
    config_file = model / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["prediction_type"] = "flow"
    config_file.write_text(json.dumps(config))

    def no_work(*args, **kwargs):
        raise AssertionError("training loaded the dataset before refusing the prediction_type")

    monkeypatch.setattr(modes, "load_examples", no_work)
    cfg = TrainConfig(steps=1, batch_size=4, resolution=16)
    with pytest.raises(ValueError) as err:
        _finetune(four_images, tmp_path / "out", model, cfg)
    assert str(err.value) == want
    # the analyses take the training target from the same rule (analyze._model.noise_target)
    scheduler = diffusers.DDPMScheduler(prediction_type="flow")
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError) as err:
        _model.noise_target(scheduler, x, x, torch.tensor([3]))
    assert str(err.value) == want
