"""SSCD copy-detection descriptors from the official TorchScript files or ONNX exports.

Formats and what loading them can do: TorchScript (``.pt``, ``.torchscript``) is a
serialized program run by torch's interpreter, not a pickle; its operators could still read or
write files, so it is loaded through :func:`alignscope._torchscript.load_torchscript`, which
refuses any operator outside an allow-list of pure tensor operators unless the user trusts the
file. ONNX (``.onnx``) is a graph for onnxruntime (which refuses external-data paths outside the
model's folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alignscope._devices import check_device
from alignscope._rows import unit_rows as _unit
from alignscope._torchscript import load_torchscript
from alignscope.embed.preprocess import Preset, geometry, get_preset, normalise

TORCHSCRIPT_SUFFIXES = (".pt", ".torchscript")


class SSCDEncoder:
    """Image -> L2-normalised copy-detection descriptor.

    Parameters
    ----------
    path : a TorchScript (.pt / .torchscript) or ONNX (.onnx) model file.
    preset : preprocessing preset ("sscd", "sscd-square", "dcr"); an ONNX model that declares
        a fixed input size gets images resized to it.
    device : torch device for TorchScript ("cpu", "cuda"); ONNX uses onnxruntime's CPU or
        CUDA provider accordingly.
    trust_models : run a TorchScript file without checking its operators (trusted files only).
    """

    def __init__(
        self,
        path: str | Path,
        preset: str = "sscd",
        device: str = "cpu",
        *,
        trust_models: bool = False,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"SSCD model {str(self.path)!r} does not exist")
        self.preset: Preset = get_preset(preset)
        self.device = check_device(device)
        suffix = self.path.suffix.lower()
        if suffix in TORCHSCRIPT_SUFFIXES:
            self.kind = "torchscript"
            self.model = load_torchscript(self.path, device, trust=trust_models)
            self.layout, self.size = "float-nchw", None
        elif suffix == ".onnx":
            self.kind = "onnx"
            self._open_onnx()
        else:
            raise ValueError(
                f"SSCD model {str(self.path)!r}: expected .pt / .torchscript (TorchScript) or .onnx"
            )

    def _open_onnx(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ValueError("ONNX models need onnxruntime: pip install onnxruntime") from exc
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if self.device.startswith("cuda")
            else ["CPUExecutionProvider"]
        )
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own types with long messages
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise ValueError(
                f"model file {str(self.path)!r} cannot be loaded as ONNX: "
                f"{first or type(exc).__name__}"
            ) from exc
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        shape = list(spec.shape)
        if spec.type == "tensor(uint8)":
            # uint8 NHWC: the graph does its own normalisation
            self.layout = "uint8-nhwc"
            h, w = shape[1], shape[2]
        elif spec.type in ("tensor(float)", "tensor(float16)"):
            self.layout = "float-nchw"
            h, w = shape[2], shape[3]
        else:
            raise ValueError(f"{self.path}: unsupported ONNX input type {spec.type}")
        self.size = (
            (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None
        )
        self.float16 = spec.type == "tensor(float16)"

    @property
    def batchable(self) -> bool:
        return self.size is not None or self.preset.fixed_size

    def encode(self, images: list[Any]) -> np.ndarray:
        """(len(images), d) float32 unit descriptors of RGB PIL images."""
        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        groups = [images] if self.batchable else [[im] for im in images]
        return np.concatenate([self._run(g) for g in groups])

    def _run(self, images: list[Any]) -> np.ndarray:
        pixels = [geometry(im, self.preset, self.size) for im in images]
        if self.layout == "uint8-nhwc":
            batch = np.stack(pixels)
        else:
            batch = np.stack([normalise(p, self.preset) for p in pixels])
        if self.kind == "onnx":
            if self.float16:
                batch = batch.astype(np.float16)
            out = self.session.run(None, {self.input_name: batch})[0]
            return _unit(out.reshape(len(images), -1))
        import torch

        with torch.no_grad():
            out = self.model(torch.from_numpy(batch).to(self.device))
        return _unit(out.float().cpu().numpy().reshape(len(images), -1))
