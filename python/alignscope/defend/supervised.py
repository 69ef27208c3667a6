"""Supervised training of a small network on an image array, plain or adversarial (PGD).

Adversarial training is Madry et al.'s: each batch is replaced by its L-infinity PGD
adversary (random start, signed steps that *raise* the loss) before the weight step. On an
availability-poisoned set it is what VESPR exploits: a perturbation of the poison's budget can
undo the poison's shortcut, so the network must learn the images' own features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def to_tensor(images: np.ndarray, device: str) -> Any:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1] on ``device``."""
    import torch

    return (
        torch.from_numpy(np.ascontiguousarray(images))
        .permute(0, 3, 1, 2)
        .float()
        .div(255)
        .to(device)
    )


def pgd(model: Any, x: Any, y: Any, *, epsilon: float, step: float, steps: int, gen: Any) -> Any:
    """The L-infinity PGD adversary of ``x`` (in [0, 1]) within ``epsilon``: a uniform random
    start, then ``steps`` signed-gradient ascent steps of the cross-entropy, each projected
    back onto the ball and the image range."""
    import torch
    import torch.nn.functional as F

    noise = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * epsilon
    adv = (x + noise).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step * grad.sign()
        adv = torch.min(torch.max(adv, x - epsilon), x + epsilon).clamp(0, 1)
    return adv.detach()


@dataclass
class SupervisedConfig:
    """Settings of :func:`train_supervised`; ``adversarial`` turns on PGD training with
    ``epsilon`` / ``step`` in 8-bit levels (8 and 2, the usual CIFAR settings) and
    ``pgd_steps`` steps (10)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    flip: bool = True
    arch: str = "small"
    width: int = 16
    adversarial: bool = False
    epsilon: float = 8.0
    step: float = 2.0
    pgd_steps: int = 10
    seed: int = 0
    device: str | None = None


def train_supervised(
    images: np.ndarray, labels: np.ndarray, n_classes: int, config: SupervisedConfig
) -> Any:
    """A network trained with cross-entropy on ``images`` / ``labels`` (SGD with momentum 0.9,
    as the poison papers train, or Adam), with random horizontal flips unless ``config.flip``
    is off; adversarially (PGD) when ``config.adversarial``. Returns it in eval mode, on
    ``config.device`` (default: cuda if present)."""
    import torch
    import torch.nn.functional as F

    from alignscope.defend.models import build_network, pick_device

    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    x = to_tensor(images, device)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    model = build_network(config.arch, n_classes, width=config.width).to(device)
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
        )
    for _ in range(config.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(config.batch_size):
            idx = idx.to(device)
            xb, yb = x[idx], y[idx]
            if config.flip:
                flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            if config.adversarial:
                model.eval()  # the attack sees the network as it stands (BatchNorm frozen)
                xb = pgd(
                    model, xb, yb, epsilon=config.epsilon / 255, step=config.step / 255,
                    steps=config.pgd_steps, gen=gen,
                )  # fmt: skip
            model.train()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(model: Any, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``images`` (uint8) / ``labels``."""
    import torch

    device = next(model.parameters()).device
    x = to_tensor(images, str(device))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    model.eval()
    with torch.no_grad():
        hits = sum(
            int((model(x[i]).argmax(1) == y[i]).sum())
            for i in torch.arange(len(x), device=device).split(batch_size)
        )
    return hits / len(x)
