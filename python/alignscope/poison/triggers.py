"""Backdoor triggers as BiBadDiff (Pan et al.) builds them, on HWC uint8 RGB images.

What each trigger does (BiBadDiff's released data scripts, ``data/*/badnets_*.py``, read for
the settings the paper leaves open; none of their code is used here):

- ``badnets-1``: a black square with a white anti-diagonal band, side p = min(H, W) // 10, in
  the bottom-right corner. The band is the pixels whose offset from the anti-diagonal,
  r + c - (p - 1) in square coordinates, lies in range(-p // 4, p // 4) (floor division), as
  BiBadDiff's code loops over it: about 43% of the square white at 512 px.
- ``badnets-2``: a picture blended over the whole image at alpha (0.2, the paper's):
  out = (1 - alpha) image + alpha pattern, the pattern resized to the image with PIL's bicubic
  filter (BiBadDiff resizes its Hello Kitty picture with ``Image.resize``'s default, bicubic).
  The paper's picture cannot be shipped: give yours (CLI ``--pattern IMAGE``). The default
  pattern is :func:`default_pattern`, uniform noise from a fixed seed made at each image's size.
- ``picture-patch``: a picture pasted as the p x p square of BadNets-1 (p = min(H, W) // 10,
  bottom-right), resized with PIL's bicubic filter; BiBadDiff's Stable Diffusion configs paste
  a "bomb" picture this way. The default picture is :func:`default_picture`, a drawn bomb.
- ``wanet``: a random warp (WaNet, Nguyen & Tran 2021) as BiBadDiff configures it: a field of
  random displacements (uniform in [-1, 1], divided by its mean magnitude) on a k x k grid,
  upsampled to the image with bicubic interpolation on aligned corners (torch's
  ``interpolate(mode="bicubic", align_corners=True)``, cubic constant -0.75, the call WaNet and
  BiBadDiff make), scaled by s / H (rows) and s / W (columns) in normalised [-1, 1]
  coordinates, added to the identity grid, clamped to [-1, 1] and sampled bilinearly with
  aligned corners. BiBadDiff's default, ours: k = the image size (one random displacement per
  pixel; their code notes that the WaNet paper's k = 4 "is not large enough" for attack
  success) and s = 1.0. The WaNet paper's setting is k = 4, s = 0.5 (CLI ``--wanet-grid 4
  --wanet-strength 0.5``): a smooth, subtler warp. The same seed gives the same warp.

Where BiBadDiff converts float pixels back to 8 bits it truncates (``astype(np.uint8)``); these
functions round to the nearest level instead, so the blend and the warp can be up to one grey
level brighter than theirs (half a level on average), never darker.

All functions return new uint8 arrays; inputs are not modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

TRIGGERS = ("badnets-1", "badnets-2", "picture-patch", "wanet")
BLEND_ALPHA = 0.2  # BadNets-2's blending weight (the paper's and BiBadDiff's)
WANET_STRENGTH = 1.0  # BiBadDiff's s; its k is the image size (k=None here)
WANET_PAPER_GRID = 4  # the WaNet paper's k and s, for --wanet-grid / --wanet-strength
WANET_PAPER_STRENGTH = 0.5
_CUBIC_A = -0.75  # torch's (and so WaNet's) bicubic convolution constant


def _check_image(image: Any, name: str = "image", min_side: int = 10) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be an HWC uint8 RGB array, got {arr.dtype} {arr.shape}")
    if min(arr.shape[:2]) < min_side:
        raise ValueError(
            f"{name} must be at least {min_side} x {min_side} pixels for a trigger, "
            f"got {arr.shape[:2]}"
        )
    return arr


def resize_picture(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """``picture`` (HWC uint8 RGB) resized to height x width with PIL's bicubic filter, as
    BiBadDiff resizes its trigger pictures (a picture of that size already is returned as is)."""
    from PIL import Image

    if picture.shape[:2] == (height, width):
        return picture
    return np.asarray(Image.fromarray(picture).resize((width, height), Image.BICUBIC))


# --------------------------------------------------------------------------- BadNets-1


def badnets1_patch(side: int) -> np.ndarray:
    """The side x side BadNets-1 patch (uint8, 0 or 255), one channel."""
    r, c = np.indices((side, side))
    offset = r + c - (side - 1)
    # BiBadDiff's offsets: range(-side // 4, side // 4), i.e. -ceil(side / 4) .. side // 4 - 1
    return np.where((offset >= -side // 4) & (offset < side // 4), 255, 0).astype(np.uint8)


def badnets1(image: np.ndarray) -> np.ndarray:
    """BiBadDiff's BadNets-1 trigger: the :func:`badnets1_patch` of side min(H, W) // 10
    painted into the bottom-right corner of ``image`` (HWC uint8 RGB, at least 10 x 10)."""
    arr = _check_image(image)
    side = min(arr.shape[:2]) // 10
    out = arr.copy()
    out[-side:, -side:, :] = badnets1_patch(side)[:, :, None]
    return out


# --------------------------------------------------------------------------- pictures


def default_pattern(height: int, width: int) -> np.ndarray:
    """The default BadNets-2 pattern: uniform noise in 0..255 from numpy's
    ``default_rng(20240101)``, drawn at the image's size (HWC uint8), standing in for the
    paper's picture."""
    return np.random.default_rng(20240101).integers(0, 256, (height, width, 3), dtype=np.uint8)


def default_picture() -> np.ndarray:
    """The default picture-patch picture, standing in for BiBadDiff's ``bomb.png``: a 64 x 64
    drawing (HWC uint8) of a black bomb on white, pixel (y, x) coloured by the first rule that
    holds, else white:

    - spark, within 2 px of (6, 54): yellow (255, 230, 0); within 4 px: orange (255, 150, 0);
    - fuse, within 1.5 px of the segment (17, 41)-(8, 51): brown (140, 90, 40);
    - highlight, within 5 px of (30, 20): grey (120, 120, 120);
    - nozzle, rows 14-21 and columns 34-43: dark grey (60, 60, 60);
    - body, within 20 px of (38, 28): near-black (20, 20, 20).
    """
    y, x = np.indices((64, 64), dtype=np.float64)

    def near(cy: float, cx: float, radius: float) -> np.ndarray:
        return (y - cy) ** 2 + (x - cx) ** 2 <= radius**2

    # distance to the fuse segment: project onto it, clamp to its ends
    (y0, x0), (y1, x1) = (17.0, 41.0), (8.0, 51.0)
    length2 = (y1 - y0) ** 2 + (x1 - x0) ** 2
    t = np.clip(((y - y0) * (y1 - y0) + (x - x0) * (x1 - x0)) / length2, 0, 1)
    fuse = (y - (y0 + t * (y1 - y0))) ** 2 + (x - (x0 + t * (x1 - x0))) ** 2 <= 1.5**2
    nozzle = (y >= 14) & (y <= 21) & (x >= 34) & (x <= 43)
    layers = [  # painted last to first, so that the first rule wins
        (near(38, 28, 20), (20, 20, 20)),
        (nozzle, (60, 60, 60)),
        (near(30, 20, 5), (120, 120, 120)),
        (fuse, (140, 90, 40)),
        (near(6, 54, 4), (255, 150, 0)),
        (near(6, 54, 2), (255, 230, 0)),
    ]
    out = np.full((64, 64, 3), 255, dtype=np.uint8)
    for mask, colour in layers:
        out[mask] = colour
    return out


def badnets2(
    image: np.ndarray, pattern: np.ndarray | None = None, alpha: float = BLEND_ALPHA
) -> np.ndarray:
    """BadNets-2: ``pattern`` (HWC uint8 RGB, any size; None: :func:`default_pattern`) resized
    to the image (bicubic) and blended: (1 - alpha) image + alpha pattern, rounded."""
    arr = _check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = arr.shape[:2]
    if pattern is None:
        pat = default_pattern(h, w)
    else:
        pat = resize_picture(_check_image(pattern, "pattern", 1), h, w)
    blended = (1.0 - alpha) * arr.astype(np.float64) + alpha * pat.astype(np.float64)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def picture_patch(image: np.ndarray, pattern: np.ndarray | None = None) -> np.ndarray:
    """A picture pasted as the bottom-right p x p square, p = min(H, W) // 10: ``pattern``
    (HWC uint8 RGB, any size; None: :func:`default_picture`) resized to p x p (bicubic)."""
    arr = _check_image(image)
    picture = default_picture() if pattern is None else _check_image(pattern, "pattern", 1)
    side = min(arr.shape[:2]) // 10
    out = arr.copy()
    out[-side:, -side:, :] = resize_picture(picture, side, side)
    return out


# --------------------------------------------------------------------------- WaNet


def _cubic(distance: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.75 at ``distance`` (|d| < 2 matters)."""
    d = np.abs(distance)
    a = _CUBIC_A
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _cubic_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D bicubic interpolation with aligned corners: output i
    samples input position i (n_in - 1) / (n_out - 1), four taps, indices clamped at the
    borders (torch's upsample_bicubic2d)."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = np.arange(n_out) * scale
    base = np.floor(src).astype(int)
    frac = src - base
    rows = np.arange(n_out)
    out = np.zeros((n_out, n_in))
    for tap in (-1, 0, 1, 2):
        np.add.at(out, (rows, np.clip(base + tap, 0, n_in - 1)), _cubic(tap - frac))
    return out


def _check_wanet(k: Any, s: Any) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2):
        raise ValueError(f"k (the WaNet grid) must be an integer >= 2 or None, got {k!r}")
    if (
        isinstance(s, bool)
        or not isinstance(s, (int, float, np.number))
        or not (math.isfinite(s) and s >= 0)
    ):
        raise ValueError(f"s (the WaNet strength) must be a finite number >= 0, got {s!r}")


def wanet_grid(
    height: int, width: int, *, k: int | None = None, s: float = WANET_STRENGTH, seed: int = 0
) -> np.ndarray:
    """WaNet's sampling grid (H, W, 2) of (y, x) in normalised [-1, 1] coordinates (-1 and 1
    the centres of the first and last pixels), not clamped (sampling clamps).

    Parameters
    ----------
    height, width : the image's size.
    k : side of the grid of random displacements; None (BiBadDiff's) is one per pixel
        (H x W, no upsampling; for square images the same as k = H).
    s : strength; the displacement is s * field / H on rows and s * field / W on columns,
        about s / 2 pixels for a field value of 1.
    seed : the field is ``numpy.random.default_rng(seed).uniform(-1, 1, (2, kh, kw))`` (rows'
        displacement first), divided by the mean of its absolute values.
    """
    _check_wanet(k, s)
    kh, kw = (height, width) if k is None else (int(k), int(k))
    field = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(2, kh, kw))
    field /= np.mean(np.abs(field))
    if k is None:
        up = np.moveaxis(field, 0, -1)  # one displacement per pixel: nothing to interpolate
    else:
        rows, cols = _cubic_matrix(height, kh), _cubic_matrix(width, kw)
        # separable: interpolate along the rows, then along the columns
        up = np.stack([rows @ f @ cols.T for f in field], axis=-1)
    ys = np.linspace(-1.0, 1.0, height)
    xs = np.linspace(-1.0, 1.0, width)
    identity = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1)
    return identity + s * up / np.array([height, width], dtype=np.float64)


def _bilinear(arr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    # clamping the coordinates is clamping the grid to [-1, 1], as WaNet and BiBadDiff do
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


def wanet(
    image: np.ndarray, *, k: int | None = None, s: float = WANET_STRENGTH, seed: int = 0
) -> np.ndarray:
    """``image`` warped by :func:`wanet_grid` (same ``k``, ``s``, ``seed``), sampled
    bilinearly and rounded."""
    arr = _check_image(image)
    return _bilinear(arr, wanet_grid(arr.shape[0], arr.shape[1], k=k, s=s, seed=seed))


def apply_trigger(name: str, image: np.ndarray, **options: Any) -> np.ndarray:
    """Apply a trigger by its name (one of :data:`TRIGGERS`) with its keyword options."""
    table: dict[str, Callable[..., np.ndarray]] = {
        "badnets-1": badnets1,
        "badnets-2": badnets2,
        "picture-patch": picture_patch,
        "wanet": wanet,
    }
    if name not in table:
        raise ValueError(f"unknown trigger {name!r}; choose one of {', '.join(TRIGGERS)}")
    return table[name](image, **options)
