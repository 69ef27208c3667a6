"""``evaluate``: generate, score and dissect one or more trained models, then report.

For each model: the concepts' images (``generate.py``), their CLIP scores (raw cosine with the
prompt), aesthetics (optional head on a second CLIP), the paper's metrics over all concepts and
split into clean / poisoned / bleed-through when the poisoned concepts are known, token maps of
cross-attention for a few concepts, and optionally BiBadDiff's G1-G4 dissection of a target
prompt and the replication of generations in the training set (SSCD). The output directory
holds ``report.json``, ``report.html``, per-model ``scores.csv``, image grids and attention
overlays, and the record of what produced them (:func:`evaluate_identity`): a rerun resumes
(generating only the missing images) when the record matches, and is refused naming what
differs otherwise.

This module runs the models one after the other; the settings are in
:mod:`alignscope.evaluate.config`, the parts of a model's report in
:mod:`alignscope.evaluate.sections`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._diffusers import check_pipeline_folder
from alignscope._files import atomic_path, claimed_output, fingerprint_tree
from alignscope.evaluate._images import load_images
from alignscope.evaluate.config import (
    DEFAULT_AESTHETICS_CLIP,
    DEFAULT_CLIP,
    Classification,
    Dissection,
    EvalConfig,
)
from alignscope.evaluate.generate import generate_images, model_fingerprint
from alignscope.evaluate.labels import caption_label, p_t_from_manifest
from alignscope.evaluate.metrics import bleed_through_concepts, poisoned_prompts, split_metrics
from alignscope.evaluate.sections import (
    DISSECTION_SEED_OFFSET,
    attention_section,
    classification_section,
    dissection_section,
    image_grid,
    per_concept,
    replication_section,
    save_png,
    write_scores,
)


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def load_pipeline(model: str | Path, device: str = "cpu") -> Any:
    """A diffusers Stable Diffusion pipeline from a local folder, safety checker off, no
    per-step progress bar (generation has its own)."""
    from alignscope._diffusers import load_sd_pipeline

    pipe = load_sd_pipeline(model, device=device, purpose="evaluation")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _encode_images(
    encoder: Any, paths: Sequence[Path], batch: int = 32, progress: bool = False
) -> np.ndarray:
    starts = range(0, len(paths), batch)
    if progress and len(paths) > batch:
        from tqdm import tqdm

        starts = tqdm(starts, desc="score", unit="batch", file=sys.stderr, leave=False)
    chunks = [encoder.encode_images(load_images(paths[i : i + batch])) for i in starts]
    return np.concatenate(chunks, axis=0)


def _encode_texts(encoder: Any, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
    chunks = [
        encoder.encode_texts(list(texts[i : i + 256]), normalize=normalize)
        for i in range(0, len(texts), 256)
    ]
    return np.concatenate(chunks, axis=0)


def resolve_poisoned(config: EvalConfig) -> list[str]:
    """The poisoned concepts: those given, then those the poison manifest attacks."""
    poisoned = list(dict.fromkeys(config.poisoned))
    if config.poison_manifest is not None:
        poisoned += [p for p in poisoned_prompts(config.poison_manifest) if p not in poisoned]
    return poisoned


def load_aesthetics(config: EvalConfig, clip: Any = None) -> tuple[Any, Any] | None:
    """(head, its CLIP encoder), checked against each other, or None without a head."""
    if config.aesthetics is None:
        return None
    from alignscope.embed.clip import load_clip
    from alignscope.evaluate.aesthetics import AestheticsHead

    head = AestheticsHead.load(config.aesthetics)
    encoder = clip or load_clip(config.aesthetics_clip, config.device)
    if encoder.dim != head.dim:
        raise ValueError(
            f"aesthetics head {config.aesthetics!r} takes {head.dim}-d embeddings but "
            f"{encoder.spec!r} gives {encoder.dim}-d (the published heads need CLIP ViT-L/14)"
        )
    return head, encoder


def evaluate_model(
    model: str | Path,
    out: str | Path,
    config: EvalConfig,
    *,
    clip: Any = None,
    aesthetics: tuple[Any, Any] | None = None,
    poisoned: list[str] | None = None,
    progress: bool = True,
    quiet: bool = False,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """Evaluate one model into ``out`` (images/, attention/, scores.csv, metrics.json).

    ``clip`` (a ClipEncoder) and ``aesthetics`` ((head, encoder) from ``load_aesthetics``) are
    reused across models; None loads them from ``config``. ``poisoned`` defaults to
    ``resolve_poisoned(config)``; ``fingerprint`` to ``model_fingerprint(model)``. Returns
    the model's section of ``report.json``.
    """
    from alignscope.embed.clip import load_clip

    config.check()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    poisoned = resolve_poisoned(config) if poisoned is None else poisoned
    clip = clip or load_clip(config.clip, config.device)
    if aesthetics is None:
        aesthetics = load_aesthetics(config)
    pipe = load_pipeline(model, config.device)
    # the attention pass is short (one image per chosen concept): run it first, so a bad
    # resolution fails before the long generation
    attention = attention_section(pipe, config, poisoned, root / "attention")
    _log(f"{model}: generating {len(config.concepts)} concepts", quiet)
    # read once: the concept and G1-G4 images share it
    fingerprint = fingerprint or model_fingerprint(model)
    items = generate_images(
        pipe,
        config.concepts,
        root / "images",
        config.generation,
        fingerprint=fingerprint,
        progress=progress,
    )
    paths = [g.path for g in items]
    image_emb = _encode_images(clip, paths, progress=progress)
    prompts = list(dict.fromkeys(g.prompt for g in items))
    text_emb = dict(zip(prompts, _encode_texts(clip, prompts), strict=True))
    clip_scores = np.array(
        [float(image_emb[i] @ text_emb[g.prompt]) for i, g in enumerate(items)], dtype=np.float64
    )
    aes_scores = None
    if aesthetics is not None:
        head, encoder = aesthetics
        aes_scores = head(_encode_images(encoder, paths, progress=progress))
    bleed: dict[str, str] = {}
    if poisoned:
        raw = _encode_texts(clip, config.concepts, normalize=False)
        bleed = bleed_through_concepts(
            raw, config.concepts, poisoned, threshold=config.bleed_threshold
        )
    concepts_of = [g.concept for g in items]
    metrics = split_metrics(
        concepts_of,
        clip_scores,
        aes_scores,
        poisoned=poisoned,
        bleed_through=list(bleed),
        clip_threshold=config.clip_threshold,
        aesthetics_threshold=config.aesthetics_threshold,
    )
    write_scores(root / "scores.csv", items, clip_scores, aes_scores, set(poisoned), bleed)

    section: dict[str, Any] = {
        "model": str(model),
        "images": len(items),
        "metrics": metrics,
        "poisoned_concepts": [c for c in config.concepts if c in poisoned],
        "bleed_through": bleed,
        "per_concept": per_concept(concepts_of, clip_scores, aes_scores, config),
    }
    shown = config.concepts[: config.grid_concepts]
    by_concept = {c: [g.path for g in items if g.concept == c] for c in shown}
    if shown:
        section["grid"] = save_png(image_grid(list(by_concept.values()), shown), root / "grid.png")
    section["attention"] = attention
    if config.dissection is not None:
        section["dissection"] = dissection_section(
            pipe, clip, config, root / "dissection", fingerprint, progress
        )
    if config.classification is not None:
        section["diffusion_classifier"] = classification_section(
            pipe, config.classification, progress
        )
    if config.replication_store is not None:
        section["replication"] = replication_section(paths, config)
    section["seconds"] = round(time.perf_counter() - started, 3)
    with atomic_path(root / "metrics.json") as tmp:
        tmp.write_text(json.dumps(section, indent=2))
    return section


def evaluate(
    models: dict[str, str | Path] | Sequence[str | Path],
    out: str | Path,
    config: EvalConfig,
    *,
    progress: bool = True,
    quiet: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate every model into ``out/<name>/`` and write ``report.json`` and ``report.html``.

    Parameters
    ----------
    models : {name: diffusers folder} or a list of folders (named by their directory names).
    out : output directory (created), claimed with a record of :func:`evaluate_identity`
        (``alignscope._files.claimed_output``): a rerun with the same record resumes, reusing
        the images already generated; another is refused naming what differs, unless
        ``overwrite``, which deletes the earlier run's outputs first.

    Returns
    -------
    The report: settings, and per model its metrics, groups, maps and optional sections.
    """
    config.check()
    named = _names(models)
    poisoned = resolve_poisoned(config)
    missing = [p for p in poisoned if p not in config.concepts]
    if missing:  # the poisoned concepts are always evaluated (the paper's Poisoned column)
        _log(f"adding the poisoned concepts {missing} to the evaluated concepts", quiet)
        config = replace(config, concepts=[*config.concepts, *missing])
    fingerprints = {name: model_fingerprint(path) for name, path in named.items()}
    identity = evaluate_identity(fingerprints, config)
    with claimed_output(out, "evaluate", identity, overwrite=overwrite) as root:
        return _evaluate_into(named, fingerprints, root, config, poisoned, progress, quiet)


def _evaluate_into(
    named: dict[str, Path],
    fingerprints: dict[str, str],
    root: Path,
    config: EvalConfig,
    poisoned: list[str],
    progress: bool,
    quiet: bool,
) -> dict[str, Any]:
    """:func:`evaluate`'s work, once ``root`` is claimed."""
    from alignscope.embed.clip import load_clip
    from alignscope.report.evaluation import write_html

    clip = load_clip(config.clip, config.device)
    aesthetics = load_aesthetics(config, clip if config.aesthetics_clip == config.clip else None)
    report: dict[str, Any] = {
        "settings": _settings(config),
        "thresholds": {
            "clip": config.clip_threshold,
            "aesthetics": config.aesthetics_threshold,
            "bleed_through_l2": config.bleed_threshold,
        },
        "models": {},
    }
    for name, path in named.items():
        report["models"][name] = evaluate_model(
            path,
            root / name,
            config,
            clip=clip,
            aesthetics=aesthetics,
            poisoned=poisoned,
            progress=progress,
            quiet=quiet,
            fingerprint=fingerprints[name],
        )
    with atomic_path(root / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    write_html(report, root / "report.html")
    return report


def _names(models: dict[str, str | Path] | Sequence[str | Path]) -> dict[str, Path]:
    if isinstance(models, dict):
        named = {str(k): Path(v) for k, v in models.items()}
    else:
        named = {}
        for m in models:
            p = Path(m)
            name = p.name if p.name != "model" else p.parent.name
            while name in named:
                name += "_"
            named[name] = p
    if not named:
        raise ValueError("models is empty: give at least one diffusers model folder")
    for name in named:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"model name {name!r} must be a plain directory name")
    for path in named.values():
        check_pipeline_folder(path)  # every folder, before any model loads
    return named


# Settings that change no number of the report: where it runs (images come from CPU generators
# whatever the device, and the arithmetic is the same) and whether model files are checked.
# The concepts are not in the record: every run recomputes its metrics and report from the
# concepts it is given, and each images folder guards its own images (generate.py), so adding
# concepts to an evaluation generates only theirs (the README promises it).
_NOT_IN_IDENTITY = ("device", "trust_models", "concepts")


def evaluate_identity(fingerprints: dict[str, str], config: EvalConfig) -> dict[str, Any]:
    """What an evaluation's outputs depend on: each model's ``model_fingerprint`` by its name
    in the report, and every setting of ``config`` but the device, the model-file check, the
    concept list and the generation batch size (``GenerationSettings.identity``); settings
    naming local files (model specs with checkpoints, the aesthetics head, the poison
    manifest, the replication store and SSCD model, trigger and classifier files, the
    classification dataset) carry those files' fingerprints."""
    settings = asdict(config)
    for key in _NOT_IN_IDENTITY:
        del settings[key]
    settings["generation"] = config.generation.identity()
    for key in ("clip", "aesthetics", "aesthetics_clip", "poison_manifest"):
        settings[key] = _with_files(getattr(config, key))
    for key in ("replication_store", "sscd"):
        settings[key] = _with_files(getattr(config, key))
    if config.dissection is not None:
        for key in ("trigger", "classifier"):
            settings["dissection"][key] = _with_files(getattr(config.dissection, key))
    if config.classification is not None:
        settings["classification"]["dataset"] = _with_files(config.classification.dataset)
    return {"models": fingerprints, **settings}


def _with_files(value: str | None) -> Any:
    """A setting that may name local files (a path, or a model spec such as
    ``open_clip:NAME:CHECKPOINT``): the value and the fingerprints of the files it names,
    or the value alone when it names none (a hub name, "badnets-1")."""
    if value is None:
        return None
    parts = dict.fromkeys([value, *value.split(":")[1:]])
    files = [fingerprint_tree(p) for p in parts if p and Path(p).exists()]
    return {"spec": value, "files": files} if files else value


def _settings(cfg: EvalConfig) -> dict[str, Any]:
    out = asdict(cfg)
    out["concepts"] = len(cfg.concepts)
    return out


# DEFAULT_*, DISSECTION_SEED_OFFSET, caption_label, image_grid and p_t_from_manifest are
# re-exported: they lived in this module before the split into config, labels and sections.
__all__ = [
    "DEFAULT_AESTHETICS_CLIP",
    "DEFAULT_CLIP",
    "DISSECTION_SEED_OFFSET",
    "Classification",
    "Dissection",
    "EvalConfig",
    "caption_label",
    "evaluate",
    "evaluate_identity",
    "evaluate_model",
    "image_grid",
    "load_pipeline",
    "p_t_from_manifest",
]
