"""Backdoor triggers as used by BiBadDiff (Pan et al.), on HWC uint8 images.

- ``badnets1``: a black square with a white anti-diagonal band, side = min(H, W) // 10, in the
  bottom-right corner. The band is the pixels whose offset from the anti-diagonal,
  r + c - (side - 1) in square coordinates, lies in range(-side // 4, side // 4) (floor
  division), as in BiBadDiff's released code: about 43% of the square white at 512 px. The
  paper fixes only the square and its place.
- ``badnets2``: a pattern blended at alpha (0.2): out = (1 - alpha) image + alpha pattern, the
  pattern resized to the image; the default pattern is uniform noise from a fixed seed.
- ``wanet``: a smooth random warp (WaNet, Nguyen & Tran 2021): a k x k field of random
  displacements (uniform in [-1, 1], divided by its mean magnitude), upsampled bicubically to
  the image, scaled by s / H in normalised coordinates, added to the identity grid and sampled
  bilinearly. k = 4, s = 0.5 by default; the same seed gives the same warp.

All functions return new uint8 arrays; inputs are not modified.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TRIGGERS = ("badnets-1", "badnets-2", "wanet")


def _check_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be an HWC uint8 RGB array, got {arr.dtype} {arr.shape}")
    if min(arr.shape[:2]) < 10:
        raise ValueError(
            f"image must be at least 10 x 10 pixels for a trigger, got {arr.shape[:2]}"
        )
    return arr


def badnets1_patch(side: int) -> np.ndarray:
    """The side x side BadNets-1 patch (uint8, 0 or 255), one channel."""
    r, c = np.indices((side, side))
    offset = r + c - (side - 1)
    # BiBadDiff's offsets: range(-side // 4, side // 4), i.e. -ceil(side / 4) .. side // 4 - 1
    return np.where((offset >= -side // 4) & (offset < side // 4), 255, 0).astype(np.uint8)


def badnets1(image: np.ndarray) -> np.ndarray:
    arr = _check_image(image)
    side = min(arr.shape[:2]) // 10
    out = arr.copy()
    out[-side:, -side:, :] = badnets1_patch(side)[:, :, None]
    return out


def default_pattern(height: int, width: int) -> np.ndarray:
    """The default BadNets-2 pattern: uniform noise from a fixed seed (HWC uint8)."""
    return np.random.default_rng(20240101).integers(0, 256, (height, width, 3), dtype=np.uint8)


def badnets2(
    image: np.ndarray, pattern: np.ndarray | None = None, alpha: float = 0.2
) -> np.ndarray:
    arr = _check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = arr.shape[:2]
    if pattern is None:
        pat = default_pattern(h, w)
    else:
        from PIL import Image

        pat = np.asarray(Image.fromarray(_check_image(pattern)).resize((w, h), Image.BILINEAR))
    blended = (1.0 - alpha) * arr.astype(np.float64) + alpha * pat.astype(np.float64)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def wanet_grid(height: int, width: int, *, k: int = 4, s: float = 0.5, seed: int = 0) -> np.ndarray:
    """Sampling grid (H, W, 2) of (y, x) in normalised [-1, 1] coordinates."""
    from PIL import Image

    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    rng = np.random.default_rng(seed)
    field = rng.uniform(-1.0, 1.0, size=(2, k, k))
    field /= np.mean(np.abs(field))
    up = np.stack(
        [
            np.asarray(
                Image.fromarray(f.astype(np.float32), mode="F").resize(
                    (width, height), Image.BICUBIC
                )
            )
            for f in field
        ],
        axis=-1,
    ).astype(np.float64)
    ys = np.linspace(-1.0, 1.0, height)
    xs = np.linspace(-1.0, 1.0, width)
    identity = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1)
    # Not clamped here: sampling clamps to the border, as WaNet's clamp of the grid does.
    return identity + s * up / height


def _bilinear(arr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    y = np.clip((grid[..., 0] + 1.0) * (h - 1) / 2.0, 0.0, h - 1)
    x = np.clip((grid[..., 1] + 1.0) * (w - 1) / 2.0, 0.0, w - 1)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, w - 1)
    y1, x1 = np.clip(y0 + 1, 0, h - 1), np.clip(x0 + 1, 0, w - 1)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    a = arr.astype(np.float64)
    top = a[y0, x0] * (1 - wx) + a[y0, x1] * wx
    bottom = a[y1, x0] * (1 - wx) + a[y1, x1] * wx
    return np.clip(np.rint(top * (1 - wy) + bottom * wy), 0, 255).astype(np.uint8)


def wanet(image: np.ndarray, *, k: int = 4, s: float = 0.5, seed: int = 0) -> np.ndarray:
    arr = _check_image(image)
    return _bilinear(arr, wanet_grid(arr.shape[0], arr.shape[1], k=k, s=s, seed=seed))


def apply_trigger(name: str, image: np.ndarray, **options: object) -> np.ndarray:
    """Apply a trigger by its name ("badnets-1", "badnets-2", "wanet")."""
    table: dict[str, Callable[..., np.ndarray]] = {
        "badnets-1": badnets1,
        "badnets-2": badnets2,
        "wanet": wanet,
    }
    if name not in table:
        raise ValueError(f"unknown trigger {name!r}; choose one of {', '.join(TRIGGERS)}")
    return table[name](image, **options)
