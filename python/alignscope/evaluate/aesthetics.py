"""The LAION aesthetics predictor: a head on L2-normalised CLIP ViT-L/14 image embeddings.

Two published layouts load from a local file (``.pth``/``.pt`` via ``torch.load`` with
``weights_only=True``, ``.safetensors`` or ``.npz``):

- the improved predictor (``sac+logos+ava1-l14-linearMSE.pth``): ``layers.0`` (768 -> 1024),
  ``layers.2`` (-> 128), ``layers.4`` (-> 64), ``layers.6`` (-> 16), ``layers.7`` (-> 1), the
  skipped indices being dropout; the stack has no nonlinearity, and dropout is off at
  inference, so the score is the chain of affine maps;
- the first LAION head (``sa_0_4_vit_l_14_linear.pth``): one linear layer, ``weight`` (1, 768)
  and ``bias``.

Scores are on the AVA 1-10 scale; the Implosion paper counts images above 6.5.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._rows import unit_rows

MLP_LAYERS = (0, 2, 4, 6, 7)


def _load_tensors(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    if suffix in (".pth", ".pt", ".bin"):
        try:
            import torch
        except ImportError as exc:
            raise ValueError(f"{str(path)!r}: reading .pth weights needs torch") from exc
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a bad file
            raise ValueError(f"aesthetics weights {str(path)!r} are not readable: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"aesthetics weights {str(path)!r} hold no state dict")
        return {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "detach")}
    raise ValueError(
        f"aesthetics weights {str(path)!r}: expected .pth, .pt, .bin, .safetensors or .npz"
    )


class AestheticsHead:
    """An affine chain x -> W_k(... (W_1 x + b_1) ...) + b_k over unit CLIP image embeddings.

    Parameters
    ----------
    layers : list of (weight (out, in), bias (out,)) float64 pairs, applied in order.
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], source: str = "") -> None:
        self.layers = layers
        self.source = source
        self.dim = int(layers[0][0].shape[1])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AestheticsHead:
        """Load either published layout (see the module docstring) from a local file."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"aesthetics weights {str(p)!r} do not exist")
        state = {k.removeprefix("module."): v for k, v in _load_tensors(p).items()}
        if all(f"layers.{i}.weight" in state for i in MLP_LAYERS):
            names = [f"layers.{i}" for i in MLP_LAYERS]
        elif "weight" in state and "bias" in state:
            names = [""]
        else:
            raise ValueError(
                f"aesthetics weights {str(p)!r} have neither layout: expected layers.0/2/4/6/7"
                f" .weight/.bias (improved predictor) or weight/bias (linear); got keys "
                f"{sorted(state)[:8]}"
            )
        layers = []
        for name in names:
            key = f"{name}." if name else ""
            w = np.asarray(state[f"{key}weight"], dtype=np.float64)
            b = np.asarray(state[f"{key}bias"], dtype=np.float64).reshape(-1)
            if w.ndim != 2 or b.shape[0] != w.shape[0]:
                raise ValueError(f"{str(p)!r}: {key}weight {w.shape} and bias {b.shape} disagree")
            if layers and layers[-1][0].shape[0] != w.shape[1]:
                raise ValueError(
                    f"{str(p)!r}: {key}weight takes {w.shape[1]} inputs, the previous layer "
                    f"gives {layers[-1][0].shape[0]}"
                )
            layers.append((w, b))
        if layers[-1][0].shape[0] != 1:
            raise ValueError(f"{str(p)!r}: the last layer must output one score")
        return cls(layers, str(p))

    def __call__(self, image_embeddings: Any) -> np.ndarray:
        """Scores (n,) float64 of (n, dim) image embeddings; rows are L2-normalised first."""
        x = np.asarray(image_embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"image_embeddings must be (n, {self.dim}) for this head (CLIP ViT-L/14 for the "
                f"published weights), got {x.shape}"
            )
        x = unit_rows(x, np.float64)
        for w, b in self.layers:
            x = x @ w.T + b
        return x[:, 0]
