"""Encoders (CLIP through open_clip or transformers; SSCD from TorchScript or ONNX; pooled
latents of a diffusers VAE) and the resumable batch embedding of datasets into stores."""

from alignscope.embed.clip import ClipEncoder, load_clip
from alignscope.embed.embedder import EmbedReport, complete_shards, embed_dataset
from alignscope.embed.preprocess import PRESETS
from alignscope.embed.sscd import SSCDEncoder
from alignscope.embed.vae import VAEEncoder

__all__ = [
    "PRESETS",
    "ClipEncoder",
    "EmbedReport",
    "SSCDEncoder",
    "VAEEncoder",
    "complete_shards",
    "embed_dataset",
    "load_clip",
]
