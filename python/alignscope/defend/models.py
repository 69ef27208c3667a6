"""Small image networks shared by the availability poisons and the defences.

``SmallCNN`` is the CPU-sized network (a few thousand parameters at ``width=8``) that tests and
toy runs use; ``resnet18`` is the CIFAR-style ResNet-18 (3x3 stem, no max-pool) the papers use
at 32 px. Both expose ``features(x)`` (the embedding) and ``forward(x)`` (class logits) so
that one training loop serves supervised, contrastive and linear-probe training.
"""

from __future__ import annotations

from typing import Any

# The device rule's owner is alignscope._devices; imported here for the defences' callers.
from alignscope._devices import pick_device

ARCHITECTURES = ("small", "resnet18")


def _torch() -> Any:
    import torch

    return torch


def build_network(arch: str, n_classes: int, *, width: int = 16) -> Any:
    """A network ``arch`` (``small`` or ``resnet18``) with ``n_classes`` outputs.

    Parameters
    ----------
    arch : str
        ``"small"``: two conv blocks and global average pooling (``width`` and ``2 * width``
        channels); ``"resnet18"``: torchvision's ResNet-18 with the CIFAR stem.
    n_classes : int
        Number of logits of ``forward`` (the embedding size is ``model.dim``).
    width : int
        Channels of the small network's first block.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    if arch == "small":
        return _small(n_classes, width)
    return _resnet18(n_classes)


def _small(n_classes: int, width: int) -> Any:
    nn = _torch().nn

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dim = 2 * width
            self.body = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(width, 2 * width, 3, padding=1),
                nn.BatchNorm2d(2 * width),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.head = nn.Linear(self.dim, n_classes)

        def features(self, x: Any) -> Any:
            return self.body(x)

        def forward(self, x: Any) -> Any:
            return self.head(self.body(x))

    return SmallCNN()


def _resnet18(n_classes: int) -> Any:
    nn = _torch().nn
    from torchvision.models import resnet18

    class CifarResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            net = resnet18(weights=None, num_classes=n_classes)
            # 32-px images: a 3x3 stride-1 stem and no max-pool, as the CIFAR ResNets of the
            # availability-poison papers (a 7x7 stride-2 stem would leave 1x1 maps too early)
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
            self.dim = net.fc.in_features
            self.head = net.fc
            net.fc = nn.Identity()
            self.body = net

        def features(self, x: Any) -> Any:
            return self.body(x)

        def forward(self, x: Any) -> Any:
            return self.head(self.body(x))

    return CifarResNet18()


__all__ = ["ARCHITECTURES", "build_network", "pick_device"]
