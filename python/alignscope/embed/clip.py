"""CLIP image and text embeddings through open_clip or transformers.

Specs (CLI ``--clip`` and :func:`load_clip`):
- ``open_clip:NAME`` (random weights, seeded), ``open_clip:/path/config.json`` (a model
  config registered on the fly, random weights), ``open_clip:NAME:TAG`` (a pretrained tag, which
  open_clip downloads on machines that can reach its hub) or ``open_clip:NAME:/path/ckpt.pt``;
- ``hf:HUB_ID_OR_DIR``: a transformers ``CLIPModel`` directory (or hub id) with its tokenizer
  and image processor.

Both give L2-normalised float32 embeddings; on a CUDA device the model runs in fp16. A tag or hub
id whose files are not in the local cache is refused at once, with the local form to use, when
the hub cannot be reached (:mod:`alignscope._hub`), instead of after the download's retries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._devices import check_device
from alignscope._hub import download_blocked, hub_download_blocked, is_hub_id
from alignscope._rows import unit_rows as _unit


class ClipEncoder:
    """Common face of the two backends: ``encode_images`` and ``encode_texts``."""

    spec: str
    dim: int

    def encode_images(self, images: list[Any]) -> np.ndarray:
        raise NotImplementedError

    def encode_texts(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        """(n, dim) float32 text features; unit rows unless ``normalize`` is False (the raw
        projected features, e.g. for Nightshade's L2 distances)."""
        raise NotImplementedError


class OpenClipEncoder(ClipEncoder):
    def __init__(self, name: str, pretrained: str | None, device: str, spec: str) -> None:
        try:
            import open_clip
            import torch
        except ImportError as exc:
            raise ValueError("open_clip specs need: pip install open_clip_torch") from exc
        self.spec = spec
        self.device = check_device(device)
        if name.endswith(".json") and Path(name).is_file():
            # a model config file: register it (in every process that loads this spec)
            open_clip.add_model_config(Path(name))
            name = Path(name).stem
        if name not in open_clip.list_models():
            raise ValueError(
                f"{spec}: open_clip has no model {name!r} "
                "(register a config with open_clip.add_model_config)"
            )
        if pretrained is None:
            # random weights (tests, smoke runs): seeded, so every process builds the same model
            torch.manual_seed(0)
        elif not Path(pretrained).is_file():
            blocked = _tag_download_blocked(name, pretrained)
            if blocked:
                raise ValueError(_weights_error(spec, name, pretrained, blocked))
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device
            )
        except (RuntimeError, OSError) as exc:  # a hub download that failed, a bad checkpoint
            detail = str(exc).splitlines()[0][:200]
            raise ValueError(_weights_error(spec, name, pretrained, detail)) from exc
        self.model = model.eval()
        if device.startswith("cuda"):
            self.model = self.model.half()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(name)
        self._torch = torch
        self.dim = int(self.model.encode_text(self.tokenizer(["x"]).to(device)).shape[-1])

    def encode_images(self, images: list[Any]) -> np.ndarray:
        torch = self._torch
        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        if self.device.startswith("cuda"):
            batch = batch.half()
        with torch.no_grad():
            return _unit(self.model.encode_image(batch))

    def encode_texts(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        with self._torch.no_grad():
            feats = self.model.encode_text(self.tokenizer(texts).to(self.device))
        return _unit(feats) if normalize else feats.float().cpu().numpy()


def _weights_error(spec: str, name: str, pretrained: str | None, detail: str) -> str:
    """The one message for open_clip weights that cannot be had, with the offline form."""
    return (
        f"{spec}: could not load the weights {pretrained!r} ({detail}); offline, give a local "
        f"checkpoint: open_clip:{name}:/path/to/weights.pt"
    )


def _tag_download_blocked(name: str, tag: str) -> str | None:
    """Why open_clip could not download the weights of ``name``'s pretrained ``tag`` now (see
    :func:`alignscope._hub.download_blocked`), or None: they are cached, the hub answers, or the
    tag is unknown (open_clip refuses that itself). Mirrors open_clip's own choice of source:
    the hub (weights or their safetensors twin) when huggingface_hub is installed, else the URL
    into ~/.cache/clip."""
    from open_clip import pretrained as catalogue
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = catalogue.get_pretrained_cfg(name, tag)
    if not cfg or "file" in cfg:
        return None
    if cfg.get("hf_hub") and catalogue.has_hf_hub():
        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        if filename == HF_WEIGHTS_NAME:
            twin = HF_SAFE_WEIGHTS_NAME
        elif filename.endswith((".bin", ".pth")):
            twin = filename[:-4] + ".safetensors"
        else:
            twin = filename
        return hub_download_blocked(repo_id, [(filename, twin)])
    url = cfg.get("url", "")
    if not url or Path("~/.cache/clip", os.path.basename(url)).expanduser().is_file():
        return None
    return download_blocked(url)


class HFClipEncoder(ClipEncoder):
    def __init__(self, source: str, device: str, spec: str) -> None:
        try:
            import torch
            from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer
        except ImportError as exc:
            raise ValueError("hf specs need: pip install transformers") from exc
        self.spec = spec
        self.device = check_device(device)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        if not Path(source).exists() and is_hub_id(source):
            blocked = hub_download_blocked(source, ["config.json"])
            if blocked:
                raise ValueError(
                    f"{spec}: {source!r} is not a local folder, and as a hub id it is {blocked}; "
                    "offline, give a local folder saved with save_pretrained: hf:/path/to/clip"
                )
        try:
            self.model = CLIPModel.from_pretrained(source, dtype=dtype).to(device).eval()
        except OSError as exc:  # not a local folder and no hub access
            raise ValueError(
                f"{spec}: could not load {source!r} ({str(exc).splitlines()[0][:200]}); "
                "offline, give a local folder saved with save_pretrained: hf:/path/to/clip"
            ) from exc
        self.tokenizer = CLIPTokenizer.from_pretrained(source)
        self.processor = CLIPImageProcessor.from_pretrained(source)
        self._torch = torch
        self.dim = int(self.model.config.projection_dim)
        self.dtype = dtype

    @staticmethod
    def _features(out: Any) -> Any:
        # transformers 5 may return a model output rather than the tensor
        return out if hasattr(out, "shape") else getattr(out, "pooler_output", out[0])

    def encode_images(self, images: list[Any]) -> np.ndarray:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        with self._torch.no_grad():
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
        return _unit(self._features(out))

    def encode_texts(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        max_len = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt"
        )
        with self._torch.no_grad():
            out = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        feats = self._features(out)
        return _unit(feats) if normalize else feats.float().cpu().numpy()


def load_clip(spec: str, device: str = "cpu") -> ClipEncoder:
    """Load a CLIP encoder from a spec (see the module docstring)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"CLIP spec must be open_clip:NAME[:PRETRAINED] or hf:ID_OR_DIR, got {spec!r}"
        )
    kind, _, rest = spec.partition(":")
    if kind == "open_clip":
        name, _, pretrained = rest.partition(":")
        if not name:
            raise ValueError(f"{spec}: missing the open_clip model name")
        return OpenClipEncoder(name, pretrained or None, device, spec)
    if kind == "hf":
        if not rest:
            raise ValueError(f"{spec}: missing the hub id or directory")
        if Path(rest).exists() and not Path(rest, "config.json").exists():
            raise ValueError(f"{spec}: {rest} has no config.json (a saved CLIPModel directory)")
        return HFClipEncoder(rest, device, spec)
    raise ValueError(f"unknown CLIP spec kind {kind!r}: use open_clip:... or hf:...")
