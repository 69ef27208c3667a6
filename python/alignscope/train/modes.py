"""The three training modes on diffusers components.

- ``finetune``: the UNet of a Stable Diffusion folder (unet, vae, text_encoder, tokenizer,
  scheduler) trained on a dataset; VAE and text encoder frozen; output a diffusers folder.
- ``scratch``: a UNet2DConditionModel built from a config (JSON) trained with the folder's
  frozen VAE and text encoder; output a diffusers folder.
- ``textual-inversion``: a placeholder token (``num_vectors`` vectors) initialised from a
  given token; only its embedding rows train; output ``learned_embeds.safetensors`` that
  ``pipe.load_textual_inversion`` loads.

VAE latents (the distribution means, times the scaling factor) and, where the text encoder is
frozen, caption encodings are computed once before training.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alignscope._files import atomic_path, claimed_output, fingerprint_tree
from alignscope.io.datasets import Dataset
from alignscope.train.data import PREPROCESSING, load_examples
from alignscope.train.loop import (
    Processes,
    TrainConfig,
    TrainResult,
    batch_indices,
    diffusion_loss,
    prediction_type,
    processes,
    resumable_config,
    run_loop,
)

MODES = ("finetune", "scratch", "textual-inversion")
# The papers' settings (README "Training"): Implosion fine-tuning lr 4e-5 on 50K pairs;
# BiBadDiff fine-tuning lr 1e-4 for about 50 epochs; textual inversion lr 5e-4, 3000 steps.
PRESETS: dict[str, dict[str, Any]] = {
    "implosion-finetune": {"learning_rate": 4e-5, "resolution": 512, "batch_size": 8},
    "bibaddiff-finetune": {"learning_rate": 1e-4, "resolution": 512, "batch_size": 8},
    "textual-inversion": {"learning_rate": 5e-4, "steps": 3000, "resolution": 512, "batch_size": 4},
}
TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a good photo of a {}",
)


def load_components(model_dir: str | Path) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer and scheduler of a Stable Diffusion folder."""
    from alignscope._diffusers import load_sd_pipeline

    pipe = load_sd_pipeline(model_dir, purpose="training")
    return {k: getattr(pipe, k) for k in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}


def _encode_text(tokenizer: Any, text_encoder: Any, captions: list[str]) -> Any:
    ids = tokenizer(
        captions,
        padding="max_length",
        truncation=True,
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def _latents(vae: Any, examples: list[Any]) -> tuple[Any, Any | None]:
    import torch

    with torch.no_grad():
        pixels = torch.stack([e.pixels for e in examples]).to(vae.device)
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    masks = None
    if any(e.mask is not None for e in examples):
        size = latents.shape[-2:]
        full = torch.stack(
            [
                e.mask if e.mask is not None else torch.ones_like(examples[0].pixels[:1])
                for e in examples
            ]
        )
        masks = torch.nn.functional.adaptive_avg_pool2d(full, size).to(latents.device)
    return latents, masks


def _save_pipeline(components: dict[str, Any], unet: Any, out: Path) -> Path:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        unet=unet,
        scheduler=components["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out / "model")
    return out / "model"


def train(
    mode: str,
    dataset: Dataset,
    out: str | Path,
    *,
    model: str | Path,
    config: TrainConfig,
    unet_config: str | Path | dict[str, Any] | None = None,
    placeholder: str | None = None,
    initializer: str | None = None,
    num_vectors: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train in ``mode`` on ``dataset``; writes the model, train_log.jsonl and checkpoints.

    ``out`` is claimed with a record of :func:`train_identity` (``alignscope._files.
    claimed_output``): a rerun resumes from the latest checkpoint only when the record
    matches (``steps``, ``checkpoint_every``, ``device`` and ``gradient_checkpointing`` may
    change, see :data:`alignscope.train.loop.RESUMABLE_CHANGES`); otherwise it is refused
    naming what differs, unless ``overwrite``, which deletes the earlier run's outputs."""
    from alignscope._devices import check_device

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_device(config.device)  # before the claim: a bad device leaves no folder behind
    procs = processes(config.device)
    identity = train_identity(
        mode, dataset, model, config, unet_config, placeholder, initializer, num_vectors
    )
    identity["processes"] = procs.count  # N processes of batch b follow one of batch N*b
    # only the first process writes (logs, checkpoints, the model), so only it claims; the
    # others wait until it has (an --overwrite deletes the old checkpoints first)
    claim: Any = (
        claimed_output(out, "train", identity, overwrite=overwrite)
        if procs.main
        else contextlib.nullcontext()
    )
    with claim:
        procs.barrier()
        run = _prepare(model, dataset, out, config, procs)
        if mode in ("finetune", "scratch"):
            return _train_unet(run, mode, unet_config, progress)
        return _train_textual_inversion(run, placeholder, initializer, num_vectors, progress)


def train_identity(
    mode: str,
    dataset: Dataset,
    model: str | Path,
    config: TrainConfig,
    unet_config: str | Path | dict[str, Any] | None = None,
    placeholder: str | None = None,
    initializer: str | None = None,
    num_vectors: int = 1,
) -> dict[str, Any]:
    """What a training run's outputs depend on: the dataset's and the model folder's
    fingerprints (file listings), the mode and its own inputs (the UNet config of ``scratch``,
    the tokens of textual inversion), :func:`~alignscope.train.loop.resumable_config`,
    with the loss-mask folder by its fingerprint, and how images are fitted to the resolution
    (:data:`~alignscope.train.data.PREPROCESSING`)."""
    settings = resumable_config(config)
    if config.mask_dir is not None and Path(config.mask_dir).is_dir():
        settings["mask_dir"] = fingerprint_tree(config.mask_dir)
    scratch: object = None
    if mode == "scratch" and unet_config is not None:
        scratch = (
            unet_config
            if isinstance(unet_config, dict) or not Path(unet_config).is_file()
            else fingerprint_tree(unet_config)
        )
    return {
        "mode": mode,
        "dataset": fingerprint_tree(dataset.source),
        "dataset_kind": dataset.kind,
        "model": fingerprint_tree(model),
        "unet_config": scratch,
        "textual_inversion": {
            "placeholder": placeholder,
            "initializer": initializer,
            "num_vectors": num_vectors,
        }
        if mode == "textual-inversion"
        else None,
        "config": settings,
        "preprocessing": PREPROCESSING,
    }


@dataclass
class _Run:
    """What every mode trains on: the model's components, the training noise schedule, this
    process, and the dataset's VAE latents (and loss masks) computed once."""

    config: TrainConfig
    root: Path
    components: dict[str, Any]
    noise_scheduler: Any
    procs: Processes
    shard: slice | None
    examples: list[Any]
    latents: Any
    masks: Any

    def pick(self, step: int) -> Any:
        """The examples of ``step`` (this process's slice is taken in the loss)."""
        import torch

        config, procs = self.config, self.procs
        size = config.batch_size * procs.count  # the global batch; each process takes a slice
        count = len(self.examples)
        return torch.as_tensor(batch_indices(config.seed, step, size, count)).to(procs.device)

    def loss(self, unet: Any, idx: Any, hidden: Any, generator: Any) -> Any:
        """The diffusion loss of the examples ``idx`` under the text encodings ``hidden``."""
        config = self.config
        return diffusion_loss(
            unet=unet,
            scheduler=self.noise_scheduler,
            latents=self.latents[idx],
            encoder_hidden_states=hidden,
            generator=generator,
            timestep_min=config.timestep_min,
            min_snr_gamma=config.min_snr_gamma,
            mask=None if self.masks is None else self.masks[idx],
            shard=self.shard,
        )


def _prepare(
    model: str | Path, dataset: Dataset, out: str | Path, config: TrainConfig, procs: Processes
) -> _Run:
    """Load the model, check ``config``, seed torch, freeze the VAE and text encoder on this
    process's device and encode the dataset's latents."""
    import torch

    components = load_components(model)
    noise_scheduler = _training_scheduler(components["scheduler"])
    config.check(noise_scheduler.config.num_train_timesteps)
    prediction_type(noise_scheduler)  # an unknown target stops here, not at the first step
    torch.manual_seed(config.seed)
    root = Path(out)
    shard = procs.shard(config.batch_size) if procs.count > 1 else None
    for module in (components["vae"], components["text_encoder"]):
        module.requires_grad_(False)
        module.to(procs.device)
    examples = load_examples(
        dataset, config.resolution, jpeg_quality=config.jpeg_quality, mask_dir=config.mask_dir
    )
    latents, masks = _latents(components["vae"], examples)
    return _Run(config, root, components, noise_scheduler, procs, shard, examples, latents, masks)


def _scratch_unet(unet_config: str | Path | dict[str, Any] | None) -> Any:
    """A new UNet2DConditionModel from ``unet_config`` (a dict or a JSON file)."""
    from diffusers import UNet2DConditionModel

    if unet_config is None:
        raise ValueError("scratch needs unet_config= (a UNet2DConditionModel config, JSON or dict)")
    if not isinstance(unet_config, dict) and not Path(unet_config).is_file():
        raise FileNotFoundError(f"unet_config= file {str(unet_config)!r} does not exist")
    try:
        cfg = (
            unet_config
            if isinstance(unet_config, dict)
            else json.loads(Path(unet_config).read_text())
        )
    except ValueError as exc:
        raise ValueError(f"unet_config= {str(unet_config)!r} is not JSON: {exc}") from exc
    return UNet2DConditionModel.from_config(cfg)


def _train_unet(
    run: _Run, mode: str, unet_config: str | Path | dict[str, Any] | None, progress: bool
) -> TrainResult:
    """``finetune`` (the folder's UNet) or ``scratch`` (a new one): the UNet trains on the
    captions encoded once; the pipeline is saved under ``out/model``."""
    import torch

    config, components, procs = run.config, run.components, run.procs
    unet = _scratch_unet(unet_config) if mode == "scratch" else components["unet"]
    unet.to(procs.device).train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    with torch.no_grad():
        encoded = _encode_text(
            components["tokenizer"], components["text_encoder"], [e.caption for e in run.examples]
        )

    def loss(step: int, generator: Any) -> Any:
        idx = run.pick(step)
        return run.loss(unet, idx, encoded[idx], generator)

    result = run_loop(
        config=config,
        out=run.root,
        parameters=list(unet.parameters()),
        compute_loss=loss,
        progress=progress,
        procs=procs,
    )
    unet.eval()
    if procs.main:
        _save_pipeline(components, unet, run.root)
    procs.barrier()
    return result


def _train_textual_inversion(
    run: _Run,
    placeholder: str | None,
    initializer: str | None,
    num_vectors: int,
    progress: bool,
) -> TrainResult:
    """Textual inversion: only the placeholder's embedding rows train (the others are put
    back after every step); they are saved to ``out/learned_embeds.safetensors``."""
    import torch

    config, procs = run.config, run.procs
    tokenizer, text_encoder = run.components["tokenizer"], run.components["text_encoder"]
    if not placeholder or not initializer:
        raise ValueError(
            "textual-inversion needs placeholder= (e.g. '<cat-toy>') and initializer= (a word)"
        )
    tokens = [placeholder] + [f"{placeholder}_{i}" for i in range(1, num_vectors)]
    if tokenizer.add_tokens(tokens) != len(tokens):
        raise ValueError(f"the tokenizer already has {placeholder!r}; choose a new placeholder")
    init_ids = tokenizer.encode(initializer, add_special_tokens=False)
    if len(init_ids) != 1:
        raise ValueError(f"initializer {initializer!r} must be a single token, got {len(init_ids)}")
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    new_ids = tokenizer.convert_tokens_to_ids(tokens)
    embedding = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        embedding[new_ids] = embedding[init_ids[0]].clone()
    original = embedding.detach().clone()
    embedding.requires_grad_(True)
    keep = torch.ones(embedding.shape[0], dtype=torch.bool)
    keep[new_ids] = False
    unet = run.components["unet"].to(procs.device).eval()
    unet.requires_grad_(False)
    phrase = " ".join(tokens)

    def ti_loss(step: int, generator: Any) -> Any:
        idx = run.pick(step)
        choice = torch.randint(len(TEMPLATES), (len(idx),), generator=generator)
        captions = [TEMPLATES[int(c)].format(phrase) for c in choice]
        hidden = _encode_text(tokenizer, text_encoder, captions)
        return run.loss(unet, idx, hidden, generator)

    def restore_others() -> None:
        with torch.no_grad():
            embedding[keep] = original[keep]

    result = run_loop(
        config=config,
        out=run.root,
        parameters=[embedding],
        compute_loss=ti_loss,
        after_step=restore_others,
        progress=progress,
        procs=procs,
    )
    from safetensors.torch import save_file

    if procs.main:
        with atomic_path(run.root / "learned_embeds.safetensors") as tmp:
            save_file(
                {placeholder: embedding[new_ids].detach().cpu().clone().contiguous()}, str(tmp)
            )
    procs.barrier()
    return result


def _training_scheduler(scheduler: Any) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config)


def with_preset(config: TrainConfig, preset: str | None) -> TrainConfig:
    if preset is None:
        return config
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return replace(config, **PRESETS[preset])
