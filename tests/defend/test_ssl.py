"""SimCLR pieces: NT-Xent against a loop reference, the augmentations, resumable training."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from alignscope import _reference  # noqa: E402
from alignscope.defend.ssl import SSLConfig, augment, jpeg, nt_xent, train_ssl  # noqa: E402
from alignscope.defend.supervised import pgd  # noqa: E402
from alignscope.defend.toy import gratings  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_nt_xent_matches_the_loop_reference(rng):
    z1, z2 = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), 0.5)
    assert float(got) == pytest.approx(_reference.nt_xent_loops(z1, z2, 0.5), rel=1e-9)


def test_augment_without_randomness_is_the_identity_and_flip_flips(rng):
    x = torch.tensor(rng.uniform(size=(6, 3, 8, 8)), dtype=torch.float32)
    still = SSLConfig(crop_scale=(1.0, 1.0), flip=False, jitter_p=0.0, gray_p=0.0)
    out = augment(x, torch.Generator().manual_seed(0), still)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    flips = augment(x, torch.Generator().manual_seed(0), SSLConfig(
        crop_scale=(1.0, 1.0), jitter_p=0.0, gray_p=0.0))  # fmt: skip
    for a, b in zip(flips, x, strict=True):
        assert torch.allclose(a, b, atol=1e-5) or torch.allclose(a, b.flip(2), atol=1e-5)
    grey = augment(x, torch.Generator().manual_seed(0), SSLConfig(
        crop_scale=(1.0, 1.0), flip=False, jitter_p=0.0, gray_p=1.0))  # fmt: skip
    want = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(grey, want.expand_as(x), atol=1e-5, rtol=0)
    full = augment(x, torch.Generator().manual_seed(1), SSLConfig())
    assert full.shape == x.shape and float(full.min()) >= 0 and float(full.max()) <= 1
    again = augment(x, torch.Generator().manual_seed(1), SSLConfig())
    assert torch.equal(full, again)  # seeded


def _tiny_config(**changes):
    base = SSLConfig(epochs=2, batch_size=8, lr=0.1, width=4, proj_dim=8, device="cpu")
    return SSLConfig(**{**base.__dict__, **changes})


def test_training_resumes_from_its_checkpoint_exactly(tmp_path):
    images, _ = gratings(4, 4, 8, seed=2)
    straight = train_ssl(images, _tiny_config(), checkpoint=tmp_path / "a.pt")
    train_ssl(images, _tiny_config(), checkpoint=tmp_path / "b.pt", stop_after=1)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["epoch"] == 1
    resumed = train_ssl(images, _tiny_config(), checkpoint=tmp_path / "b.pt")
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError) as err:
        train_ssl(images, _tiny_config(lr=0.2), checkpoint=tmp_path / "b.pt")
    assert str(err.value) == (
        f"checkpoint {str(tmp_path / 'b.pt')!r} was trained with other settings (lr 0.1 -> "
        "0.2); delete it or choose another output folder"
    )


def test_vespr_training_needs_labels():
    images, _ = gratings(2, 2, 8)
    with pytest.raises(ValueError, match=r"^VESPR \(adversarial=True\) trains a supervised head"):
        train_ssl(images, _tiny_config(adversarial=True))


def test_pgd_stays_in_its_ball_and_raises_the_loss(rng):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    x = torch.tensor(rng.uniform(size=(10, 3, 8, 8)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, 10))
    adv = pgd(model, x, y, epsilon=8 / 255, step=2 / 255, steps=5,
              gen=torch.Generator().manual_seed(0))  # fmt: skip
    assert float((adv - x).abs().max()) <= 8 / 255 + 1e-7
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(model(adv), y)) > float(loss(model(x), y))


def test_jpeg_round_trip_and_bad_quality():
    images, _ = gratings(2, 2, 16)
    out = jpeg(images, 10)
    assert out.shape == images.shape and out.dtype == np.uint8 and (out != images).any()
    with pytest.raises(ValueError) as err:
        jpeg(images, 0)
    assert str(err.value) == "JPEG quality must be a whole number 1..95, got 0"
