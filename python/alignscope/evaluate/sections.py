"""The sections of a model's evaluation: the per-concept table and ``scores.csv``, image grids,
and the optional parts (cross-attention overlays, BiBadDiff's G1-G4 dissection, the diffusion
classifier, replication in the training set), each returning its part of ``report.json``."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path
from alignscope.evaluate._images import load_images
from alignscope.evaluate.classifiers import classifier_from_spec
from alignscope.evaluate.config import Classification, EvalConfig
from alignscope.evaluate.detectors import detector_from_spec
from alignscope.evaluate.dissection import (
    GROUPS,
    dissect_generations,
    dissection_sampler,
    dissection_settings,
)
from alignscope.evaluate.generate import generate_images, slug
from alignscope.evaluate.labels import caption_label, p_t_from_manifest
from alignscope.evaluate.metrics import generation_metrics

DISSECTION_SEED_OFFSET = 1_000_003  # the G1-G4 images' seeds are not the concept images'


# --------------------------------------------------------------------------- files


def image_grid(paths: Sequence[Sequence[Path]], labels: Sequence[str], cell: int = 128) -> Any:
    """A PIL grid: one row of images per label."""
    from PIL import Image, ImageDraw

    cols = max((len(r) for r in paths), default=1)
    label_w = 160
    grid = Image.new("RGB", (label_w + cols * cell, max(1, len(paths)) * cell), "white")
    draw = ImageDraw.Draw(grid)
    for r, (row, label) in enumerate(zip(paths, labels, strict=True)):
        draw.text((4, r * cell + cell // 2 - 6), label[:24], fill="black")
        for c, p in enumerate(row):
            with Image.open(p) as im:
                grid.paste(im.convert("RGB").resize((cell, cell)), (label_w + c * cell, r * cell))
    return grid


def save_png(image: Any, path: Path) -> str:
    """Write a PIL image as a PNG (temp file, then renamed); returns the file's name."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path.name


def per_concept(
    concepts_of: list[str], clip_scores: np.ndarray, aesthetics: np.ndarray | None, cfg: EvalConfig
) -> dict[str, dict[str, float]]:
    """Each concept's mean CLIP score, accuracy and (with a head) mean aesthetics score, by
    :func:`generation_metrics`: the per-concept rows count a score as the totals do."""
    names = np.asarray(concepts_of, dtype=object)
    out = {}
    for c in cfg.concepts:
        mask = names == c
        m = generation_metrics(
            clip_scores[mask],
            None if aesthetics is None else aesthetics[mask],
            clip_threshold=cfg.clip_threshold,
            aesthetics_threshold=cfg.aesthetics_threshold,
        )
        entry = {"clip_mean": m["clip_mean"], "accuracy": m["accuracy"]}
        if aesthetics is not None:
            entry["aesthetics_mean"] = m["aesthetics_mean"]
        out[c] = entry
    return out


def write_scores(
    path: Path,
    items: list[Any],
    clip_scores: np.ndarray,
    aesthetics: np.ndarray | None,
    poisoned: set[str],
    bleed: dict[str, str],
) -> None:
    """One row per image; ``poisoned`` and ``bleed_through`` (the related poisoned concept, or
    empty) say which of the report's groups it counts in (clean = not poisoned)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "concept",
                "image",
                "seed",
                "prompt",
                "file",
                "poisoned",
                "bleed_through",
                "clip",
                "aesthetics",
            ]
        )
        for i, g in enumerate(items):
            w.writerow(
                [
                    g.concept,
                    g.image_index,
                    g.seed,
                    g.prompt,
                    str(g.path.relative_to(path.parent)),
                    int(g.concept in poisoned),
                    bleed.get(g.concept, ""),
                    f"{clip_scores[i]:.6f}",
                    "" if aesthetics is None else f"{aesthetics[i]:.4f}",
                ]
            )


# --------------------------------------------------------------------------- optional sections


def attention_section(
    pipe: Any, cfg: EvalConfig, poisoned: list[str], out: Path
) -> list[dict[str, Any]]:
    """Cross-attention overlays (PNG) and maps (.npy) in ``out`` of up to
    ``cfg.attention_concepts`` concepts, the poisoned ones first; one entry per concept."""
    from PIL import Image

    from alignscope.evaluate.attention import attention_maps, overlay

    chosen = list(dict.fromkeys([c for c in cfg.concepts if c in poisoned] + list(cfg.concepts)))[
        : cfg.attention_concepts
    ]
    if not chosen:
        return []
    out.mkdir(parents=True, exist_ok=True)
    gen = cfg.generation
    entries = []
    for c in chosen:
        prompt = gen.template.format(c)
        image, maps, _ = attention_maps(
            pipe,
            prompt,
            [c],
            seed=gen.seed,
            steps=gen.steps,
            guidance=gen.guidance,
            resolution=cfg.attention_resolution,
            layers=cfg.attention_layers,
            height=gen.height,
            width=gen.width,
        )
        name = f"{slug(c)}.png"
        save_png(Image.fromarray(overlay(image, maps[c])), out / name)
        # a file handle: np.save would add ".npy" to the temp file's name
        with atomic_path(out / f"{Path(name).stem}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, maps[c])
        entries.append({"concept": c, "prompt": prompt, "overlay": f"attention/{name}"})
    return entries


def dissection_section(
    pipe: Any, clip: Any, cfg: EvalConfig, out: Path, fingerprint: str, progress: bool
) -> dict[str, Any]:
    """BiBadDiff's G1-G4 of ``cfg.dissection``: its images of the target prompt generated into
    ``out``, dissected, and shown in ``dissection_grid.png`` beside ``out`` (one row per
    group). Returns the section, with the per-image groups, scores and classes."""
    d = cfg.dissection
    assert d is not None
    # BiBadDiff's guidance, steps and DDIM sampler, not the concept images' (dissection.py)
    settings = dissection_settings(d, cfg.generation, DISSECTION_SEED_OFFSET)
    with dissection_sampler(pipe, d.sampler):
        items = generate_images(
            pipe, [d.target_class], out, settings, fingerprint=fingerprint, progress=progress
        )
    images = [np.asarray(im) for im in load_images([g.path for g in items])]
    classifier = classifier_from_spec(
        d.classifier, d.class_names, clip, cfg.device, trust_models=cfg.trust_models
    )
    detector = detector_from_spec(
        d.trigger, d.threshold, device=cfg.device, trust_models=cfg.trust_models, pattern=d.pattern
    )
    p_t = d.p_t
    if p_t is None and cfg.poison_manifest is not None:
        p_t = p_t_from_manifest(cfg.poison_manifest, d.target_class, d.class_names)
    result = dissect_generations(
        images, target_class=d.target_class, classifier=classifier, detector=detector, p_t=p_t
    )
    # one row of images per group, as the paper's Fig. 2 shows them
    rows = [
        [g.path for g, group in zip(items, result.groups, strict=True) if group == name]
        for name in GROUPS
    ]
    labels = [f"{name} ({len(r)})" for name, r in zip(GROUPS, rows, strict=True)]
    grid = save_png(image_grid(rows, labels), out.parent / "dissection_grid.png")
    return {
        "target_class": d.target_class,
        "prompt": d.template.format(d.target_class),
        "trigger": d.trigger,
        "grid": grid,
        **result.to_dict(),
    }


def classification_section(pipe: Any, task: Classification, progress: bool) -> dict[str, Any]:
    """The model as a diffusion classifier on ``task.dataset`` (records labelled by
    :func:`~alignscope.evaluate.labels.caption_label`): accuracy, predicted counts and, with a
    target class, the rate at which the other classes are classified as it."""
    from alignscope.evaluate.diffusion_classifier import diffusion_classify
    from alignscope.io.datasets import open_dataset

    if task.target_class is not None and task.target_class not in task.class_names:
        raise ValueError(f"classification target_class {task.target_class!r} is not a class")
    images, labels = [], []
    dataset = open_dataset(task.dataset)
    for record, image in dataset.images():
        label = caption_label(record.caption, task.class_names)
        if label is None:
            continue
        images.append(np.asarray(image.convert("RGB")))
        labels.append(label)
        if len(images) == task.max_images:
            break
    if not images:
        raise ValueError(
            f"no caption in {task.dataset!r} names one of the classes {task.class_names[:5]}..."
        )
    result = diffusion_classify(
        pipe,
        images,
        [task.template.format(c) for c in task.class_names],
        n_samples=task.n_samples,
        filter_fraction=task.filter_fraction,
        progress=progress,
    )
    truth = np.asarray(labels)
    out: dict[str, Any] = {
        "images": len(images),
        "accuracy": float(np.mean(result.predictions == truth)),
        "filter_fraction": task.filter_fraction,
        "n_samples": task.n_samples,
        "predicted_counts": {
            c: int(np.sum(result.predictions == i)) for i, c in enumerate(task.class_names)
        },
    }
    if task.target_class is not None:
        target = task.class_names.index(task.target_class)
        others = truth != target
        out["target_class"] = task.target_class
        out["target_rate_on_other_classes"] = (
            float(np.mean(result.predictions[others] == target)) if others.any() else None
        )
    return out


def replication_section(paths: list[Path], cfg: EvalConfig) -> dict[str, Any]:
    """SSCD top-1 replication of the generated images in ``cfg.replication_store``."""
    from alignscope.embed.sscd import SSCDEncoder
    from alignscope.io.store import open_store
    from alignscope.search.replication import replication

    assert cfg.sscd is not None and cfg.replication_store is not None
    encoder = SSCDEncoder(cfg.sscd, device=cfg.device, trust_models=cfg.trust_models)
    generated = np.concatenate(
        [encoder.encode(load_images(paths[i : i + 32])) for i in range(0, len(paths), 32)]
    )
    result = replication(generated, open_store(cfg.replication_store), k=1, view="sscd")
    return result.summary()
