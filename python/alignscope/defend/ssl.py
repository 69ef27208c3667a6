"""SimCLR-style contrastive training and linear-probe evaluation on an image array.

Chen et al. (2020): two augmented views of each image (random resized crop, horizontal flip,
colour jitter, random grayscale), an encoder and a projection MLP, and the NT-Xent loss that
makes each view pick its partner out of the other 2N - 1 views of the batch. The encoder's
features are then frozen and a linear classifier fitted on the labelled training set is
scored on a clean test set (the linear probe of the availability-poison papers).

The same loop runs VESPR's multi-task objective when ``config.adversarial`` is set (see
:mod:`alignscope.defend.vespr`). Training is seeded and resumable: after every epoch the
encoder, heads, optimiser and random state are written to ``checkpoint`` (temp file, then
rename), and a run started again with the same data and settings continues from there.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.defend.supervised import pgd, to_tensor


@dataclass
class SSLConfig:
    """Settings of :func:`train_ssl`.

    ``lr`` is SGD's (momentum 0.9, cosine decay to 0 over ``epochs``); ``temperature`` 0.5 and
    the crop scale (0.2, 1) are the usual CIFAR-10 SimCLR settings. ``adversarial`` turns on
    VESPR: ``at_epsilon`` / ``at_step`` in 8-bit levels, ``at_steps`` PGD steps, loss
    ``alpha * NT-Xent + beta * cross-entropy``.
    """

    epochs: int = 200
    batch_size: int = 256
    lr: float = 0.5
    weight_decay: float = 5e-4
    temperature: float = 0.5
    arch: str = "small"
    width: int = 16
    proj_dim: int = 128
    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip: bool = True
    jitter: float = 0.4
    jitter_p: float = 0.8
    gray_p: float = 0.2
    adversarial: bool = False
    at_epsilon: float = 8.0
    at_step: float = 2.0
    at_steps: int = 5
    alpha: float = 1.0
    beta: float = 1.0
    seed: int = 0
    device: str | None = None

    def identity(self) -> dict[str, Any]:
        """What the trained weights depend on (the device only through float rounding)."""
        out = asdict(self)
        out.pop("device")
        out["crop_scale"] = list(self.crop_scale)
        return out


def augment(x: Any, gen: Any, config: SSLConfig) -> Any:
    """One random view of each image of ``x`` (N, 3, H, W) in [0, 1].

    Random resized crop (area fraction in ``crop_scale``, aspect ratio log-uniform in
    [3/4, 4/3]; the whole image when that crop does not fit) and horizontal flip as one
    affine resampling; then, with probability ``jitter_p``, brightness, contrast and
    saturation each scaled by a factor in [1 - jitter, 1 + jitter] (in that fixed order;
    SimCLR's hue jitter is left out); then grayscale with probability ``gray_p``. Random
    numbers come from ``gen`` (CPU), so views are the same on every device.
    """
    import torch
    import torch.nn.functional as F

    n = x.shape[0]

    def uniform(lo: float, hi: float, size: int = n) -> Any:
        return (torch.rand(size, generator=gen) * (hi - lo) + lo).to(x.device)

    area = uniform(*config.crop_scale)
    ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
    w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
    # a crop that does not fit the image becomes the whole image, as torchvision's
    # RandomResizedCrop falls back to for a square image (it first retries 10 times)
    fits = (w <= 1) & (h <= 1)
    w, h = torch.where(fits, w, torch.ones_like(w)), torch.where(fits, h, torch.ones_like(h))
    cx = (torch.rand(n, generator=gen).to(x.device) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen).to(x.device) * 2 - 1) * (1 - h)
    flip = torch.ones(n, device=x.device)
    if config.flip:
        flip = torch.where(uniform(0, 1) < 0.5, -flip, flip)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)

    def gray(img: Any) -> Any:
        return (img * weights).sum(1, keepdim=True)

    j = config.jitter
    on = (uniform(0, 1) < config.jitter_p).view(-1, 1, 1, 1)
    b, c, s = (uniform(1 - j, 1 + j).view(-1, 1, 1, 1) for _ in range(3))
    jittered = (out * b).clamp(0, 1)
    mean = gray(jittered).mean(dim=(2, 3), keepdim=True)
    jittered = ((jittered - mean) * c + mean).clamp(0, 1)
    g = gray(jittered)
    jittered = ((jittered - g) * s + g).clamp(0, 1)
    out = torch.where(on, jittered, out)
    to_gray = (uniform(0, 1) < config.gray_p).view(-1, 1, 1, 1)
    return torch.where(to_gray, gray(out).expand_as(out), out)


def nt_xent(z1: Any, z2: Any, temperature: float) -> Any:
    """NT-Xent: the mean over the 2N views of the cross-entropy of picking the view's partner
    among the other 2N - 1 by cosine similarity / ``temperature``."""
    import torch
    import torch.nn.functional as F

    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)


def _digest(images: np.ndarray, labels: np.ndarray | None) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    if labels is not None:
        h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def _modules(config: SSLConfig, n_classes: int) -> tuple[Any, Any]:
    import torch

    from alignscope.defend.models import build_network

    encoder = build_network(config.arch, max(n_classes, 1), width=config.width)
    projector = torch.nn.Sequential(
        torch.nn.Linear(encoder.dim, encoder.dim),
        torch.nn.ReLU(),
        torch.nn.Linear(encoder.dim, config.proj_dim),
    )
    return encoder, projector


def train_ssl(
    images: np.ndarray,
    config: SSLConfig,
    *,
    labels: np.ndarray | None = None,
    n_classes: int | None = None,
    checkpoint: str | Path | None = None,
    stop_after: int | None = None,
    progress: Any = None,
) -> Any:
    """Train an encoder on ``images`` (N, H, W, 3) uint8 by SimCLR (or VESPR, which needs
    ``labels``); return it in eval mode.

    Parameters
    ----------
    checkpoint : path, optional
        Written after every epoch (temp file, then rename); when it exists at the start, from
        the same images, labels and settings, training continues after its last epoch. One
        from other data or settings is refused, naming the setting that differs.
    stop_after : int, optional
        Stop after this many epochs in all (an interrupted run; resumable).
    progress : callable, optional
        Called as ``progress(epoch, loss)`` after each epoch.
    """
    import torch
    import torch.nn.functional as F

    from alignscope._files import atomic_path
    from alignscope.defend.models import pick_device

    if config.adversarial and labels is None:
        raise ValueError("VESPR (adversarial=True) trains a supervised head: give labels=")
    k = int(n_classes if n_classes is not None else (labels.max() + 1 if labels is not None else 1))
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    encoder, projector = _modules(config, k)
    encoder, projector = encoder.to(device), projector.to(device)
    params = [*encoder.parameters(), *projector.parameters()]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    identity = {"config": config.identity(), "data": _digest(images, labels), "classes": k}
    start = 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = torch.load(path, map_location=device, weights_only=False)
        _check_identity(path, state.get("identity", {}), identity)
        encoder.load_state_dict(state["encoder"])
        projector.load_state_dict(state["projector"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        start = int(state["epoch"])
    x = to_tensor(images, device)
    y = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64)).to(device)
    last = config.epochs if stop_after is None else min(config.epochs, stop_after)
    for epoch in range(start, last):
        total, batches = 0.0, 0
        for idx in torch.randperm(len(x), generator=gen).split(config.batch_size):
            if len(idx) < 2:
                continue  # a lone image has no negatives
            idx = idx.to(device)
            v1, v2 = augment(x[idx], gen, config), augment(x[idx], gen, config)
            loss_ce = None
            if config.adversarial:
                # VESPR: views perturbed to *raise* the supervised head's loss (the poison's
                # shortcut is what such a perturbation breaks first), then both losses
                encoder.eval()
                eps, step = config.at_epsilon / 255, config.at_step / 255
                v1 = pgd(encoder, v1, y[idx], epsilon=eps, step=step, steps=config.at_steps,
                         gen=gen)  # fmt: skip
                v2 = pgd(encoder, v2, y[idx], epsilon=eps, step=step, steps=config.at_steps,
                         gen=gen)  # fmt: skip
            encoder.train()
            f1, f2 = encoder.features(v1), encoder.features(v2)
            loss = config.alpha * nt_xent(projector(f1), projector(f2), config.temperature)
            if config.adversarial:
                logits = encoder.head(torch.cat([f1, f2]))
                loss_ce = F.cross_entropy(logits, torch.cat([y[idx], y[idx]]))
                loss = loss + config.beta * loss_ce
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, batches = total + float(loss.detach()), batches + 1
        sched.step()
        if path is not None:
            state = {
                "identity": identity,
                "epoch": epoch + 1,
                "encoder": encoder.state_dict(),
                "projector": projector.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "gen": gen.get_state(),
            }
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
        if progress is not None:
            progress(epoch + 1, total / max(batches, 1))
    return encoder.eval()


def _check_identity(path: Path, found: dict[str, Any], want: dict[str, Any]) -> None:
    if found == want:
        return
    if found.get("data") != want["data"] or found.get("classes") != want["classes"]:
        raise ValueError(
            f"checkpoint {str(path)!r} was trained on other images or labels; delete it or "
            "choose another output folder"
        )
    differ = [
        f"{key} {found['config'].get(key)!r} -> {value!r}"
        for key, value in want["config"].items()
        if found.get("config", {}).get(key) != value
    ]
    raise ValueError(
        f"checkpoint {str(path)!r} was trained with other settings ({'; '.join(differ)}); "
        "delete it or choose another output folder"
    )


def embed(encoder: Any, images: np.ndarray, batch_size: int = 256) -> Any:
    """The encoder's features of ``images`` (uint8), as a float tensor on its device."""
    import torch

    device = next(encoder.parameters()).device
    x = to_tensor(images, str(device))
    encoder.eval()
    with torch.no_grad():
        return torch.cat([encoder.features(b) for b in x.split(batch_size)])


def linear_probe(
    encoder: Any,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    n_classes: int | None = None,
    steps: int = 500,
    lr: float = 0.05,
    seed: int = 0,
) -> float:
    """Clean test accuracy of a linear classifier on the frozen encoder's features.

    The classifier (softmax regression on features standardised by the training set's mean
    and deviation) is fitted full-batch with Adam for ``steps`` steps on the training images
    and labels, then scored on the test set.
    """
    import torch
    import torch.nn.functional as F

    ftr, fte = embed(encoder, train_images), embed(encoder, test_images)
    mean, std = ftr.mean(0), ftr.std(0) + 1e-6
    ftr, fte = (ftr - mean) / std, (fte - mean) / std
    device = ftr.device
    k = int(n_classes or max(int(np.max(train_labels)), int(np.max(test_labels))) + 1)
    ytr = torch.from_numpy(np.asarray(train_labels, np.int64)).to(device)
    yte = torch.from_numpy(np.asarray(test_labels, np.int64)).to(device)
    torch.manual_seed(seed)
    probe = torch.nn.Linear(ftr.shape[1], k).to(device)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(probe(ftr), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((probe(fte).argmax(1) == yte).float().mean())


def jpeg(images: np.ndarray, quality: int = 10) -> np.ndarray:
    """Each image JPEG-compressed at ``quality`` and decoded again (the JPEG purification
    baseline of the availability-poison defences; quality 10 as in Liu et al.'s image shortcut
    squeezing)."""
    import io

    from PIL import Image

    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be a whole number 1..95, got {quality!r}")
    out = np.empty_like(images)
    for i, image in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def config_json(config: SSLConfig) -> str:
    return json.dumps(config.identity(), sort_keys=True)
