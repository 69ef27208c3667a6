"""``evaluate``: generate, score and dissect one or more trained models, then report.

For each model: the concepts' images (``generate.py``), their CLIP scores (raw cosine with the
prompt), aesthetics (optional head on a second CLIP), the paper's metrics over all concepts and
split into clean / poisoned / bleed-through when the poisoned concepts are known, token maps of
cross-attention for a few concepts, and optionally BiBadDiff's G1-G4 dissection of a target
prompt and the replication of generations in the training set (SSCD). The output directory
holds ``report.json``, ``report.html``, per-model ``scores.csv``, image grids and attention
overlays.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._diffusers import check_pipeline_folder
from alignscope._files import atomic_path
from alignscope.evaluate.generate import (
    GenerationSettings,
    generate_images,
    model_fingerprint,
    slug,
)
from alignscope.evaluate.metrics import (
    AESTHETICS_THRESHOLD,
    BLEED_THROUGH_DISTANCE,
    CLIP_THRESHOLD,
    bleed_through_concepts,
    generation_metrics,
    poisoned_prompts,
    split_metrics,
)

DEFAULT_CLIP = "open_clip:ViT-B-32:openai"
DEFAULT_AESTHETICS_CLIP = "open_clip:ViT-L-14:openai"
DISSECTION_SEED_OFFSET = 1_000_003


@dataclass
class Dissection:
    """BiBadDiff's dissection of generations for ``target_class``'s prompt."""

    target_class: str
    class_names: list[str]
    trigger: str = "badnets-1"  # badnets-1 | badnets-2 | path of a TorchScript detector
    # "clip" (zero-shot with the scoring CLIP) | torchvision:NAME:WEIGHTS | timm:... | TorchScript
    classifier: str = "clip"
    images: int = 20
    p_t: float | None = None
    template: str = "A photo of a {}"  # the poisoned captions' prompt (poison.methods)
    threshold: float | None = None  # trigger detector threshold (None: the detector's default)

    def check(self) -> None:
        if self.target_class not in self.class_names:
            raise ValueError(
                f"dissection target_class {self.target_class!r} is not one of class_names"
            )
        if self.images < 1:
            raise ValueError(f"dissection images must be >= 1, got {self.images}")
        if self.p_t is not None and not 0.0 < self.p_t <= 1.0:
            raise ValueError(f"p_t must be in (0, 1], got {self.p_t}")
        if self.trigger not in ("badnets-1", "badnets-2") and not Path(self.trigger).is_file():
            raise ValueError(
                f"trigger must be badnets-1, badnets-2 or a TorchScript detector file; "
                f"{self.trigger!r} is neither"
            )
        checkpoint = self.classifier.startswith(("torchvision:", "timm:"))
        if self.classifier != "clip" and not checkpoint and not Path(self.classifier).is_file():
            raise ValueError(
                f"classifier must be 'clip', torchvision:NAME:WEIGHTS, timm:NAME:WEIGHTS or a "
                f"TorchScript classifier file; {self.classifier!r} is none of them"
            )
        if self.template.count("{}") != 1:
            raise ValueError(f"dissection template must contain {{}} once, got {self.template!r}")


@dataclass
class Classification:
    """The model as a diffusion classifier (Li et al.) on a labelled image dataset.

    A record's label is the class whose name its caption contains (longest name first); records
    naming no class are skipped. ``target_class`` adds the rate at which images of other classes
    are classified as it: the attack success rate when the dataset carries a trigger.
    """

    dataset: str
    class_names: list[str]
    template: str = "a photo of a {}"
    n_samples: int = 32
    filter_fraction: float = 0.0
    max_images: int = 200
    target_class: str | None = None

    def check(self) -> None:
        if not Path(self.dataset).exists():
            raise FileNotFoundError(f"classification dataset {self.dataset!r} does not exist")
        if not self.class_names:
            raise ValueError("classification class_names is empty")
        if self.target_class is not None and self.target_class not in self.class_names:
            raise ValueError(f"classification target_class {self.target_class!r} is not a class")
        if self.n_samples < 1 or self.max_images < 1:
            raise ValueError("classification n_samples and max_images must be >= 1")
        if not 0.0 <= self.filter_fraction < 1.0:
            raise ValueError(
                f"classification filter_fraction must be in [0, 1), got {self.filter_fraction}"
            )


@dataclass
class EvalConfig:
    """What to evaluate and how (the defaults are the Implosion paper's protocol)."""

    concepts: list[str]
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    clip: str = DEFAULT_CLIP
    aesthetics: str | None = None  # weights file of the LAION head
    aesthetics_clip: str = DEFAULT_AESTHETICS_CLIP
    poisoned: list[str] = field(default_factory=list)
    poison_manifest: str | None = None
    clip_threshold: float = CLIP_THRESHOLD
    aesthetics_threshold: float = AESTHETICS_THRESHOLD
    bleed_threshold: float = BLEED_THROUGH_DISTANCE
    attention_concepts: int = 4
    attention_resolution: int = 16
    attention_layers: str = "matching"
    dissection: Dissection | None = None
    classification: Classification | None = None
    replication_store: str | None = None  # an embedding store with an sscd view
    sscd: str | None = None
    grid_concepts: int = 8
    device: str = "cpu"
    trust_models: bool = False  # run TorchScript files without checking their operators

    def check(self) -> None:
        from alignscope._devices import check_device

        check_device(self.device)
        if not self.concepts:
            raise ValueError("concepts is empty: give the concepts to evaluate")
        if len(set(self.concepts)) != len(self.concepts):
            raise ValueError("concepts has duplicates; each concept is evaluated once")
        self.generation.check()
        if self.attention_concepts < 0 or self.grid_concepts < 0:
            raise ValueError("attention_concepts and grid_concepts must be >= 0")
        if (self.replication_store is None) != (self.sscd is None):
            raise ValueError("replication needs both replication_store= and sscd=")
        for name in ("replication_store", "sscd", "aesthetics", "poison_manifest"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise FileNotFoundError(f"{name} {value!r} does not exist")
        for name in ("clip_threshold", "aesthetics_threshold", "bleed_threshold"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if self.attention_resolution < 1:
            raise ValueError(f"attention_resolution must be >= 1, got {self.attention_resolution}")
        if self.dissection is not None:
            self.dissection.check()
        self._check_model_files()
        if self.classification is not None:
            self.classification.check()

    def _check_model_files(self) -> None:
        """Refuse an untrusted TorchScript file now, not after hours of generation."""
        from alignscope._torchscript import load_torchscript
        from alignscope.embed.sscd import TORCHSCRIPT_SUFFIXES

        files = [self.sscd] if self.sscd and Path(self.sscd).suffix in TORCHSCRIPT_SUFFIXES else []
        if self.dissection is not None:
            d = self.dissection
            files += [f for f in (d.trigger, d.classifier) if Path(f).is_file()]
        if not self.trust_models:
            for file in files:
                load_torchscript(file, "cpu")


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


def _images(paths: Sequence[Path]) -> list[Any]:
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(im.convert("RGB"))
    return out


def _encode_images(
    encoder: Any, paths: Sequence[Path], batch: int = 32, progress: bool = False
) -> np.ndarray:
    starts = range(0, len(paths), batch)
    if progress and len(paths) > batch:
        from tqdm import tqdm

        starts = tqdm(starts, desc="score", unit="batch", file=sys.stderr, leave=False)
    chunks = [encoder.encode_images(_images(paths[i : i + batch])) for i in starts]
    return np.concatenate(chunks, axis=0)


def _encode_texts(encoder: Any, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
    chunks = [
        encoder.encode_texts(list(texts[i : i + 256]), normalize=normalize)
        for i in range(0, len(texts), 256)
    ]
    return np.concatenate(chunks, axis=0)


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


def _save_png(image: Any, path: Path) -> str:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path.name


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
) -> dict[str, Any]:
    """Evaluate one model into ``out`` (images/, attention/, scores.csv, metrics.json).

    ``clip`` (a ClipEncoder) and ``aesthetics`` ((head, encoder) from ``load_aesthetics``) are
    reused across models; None loads them from ``config``. ``poisoned`` defaults to
    ``resolve_poisoned(config)``. Returns the model's section of ``report.json``.
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
    attention = _attention(pipe, config, poisoned, root / "attention")
    _log(f"{model}: generating {len(config.concepts)} concepts", quiet)
    fingerprint = model_fingerprint(model)  # read once: the concept and G1-G4 images share it
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
    _write_scores(root / "scores.csv", items, clip_scores, aes_scores, set(poisoned), bleed)

    section: dict[str, Any] = {
        "model": str(model),
        "images": len(items),
        "metrics": metrics,
        "poisoned_concepts": [c for c in config.concepts if c in poisoned],
        "bleed_through": bleed,
        "per_concept": _per_concept(concepts_of, clip_scores, aes_scores, config),
    }
    shown = config.concepts[: config.grid_concepts]
    by_concept = {c: [g.path for g in items if g.concept == c] for c in shown}
    if shown:
        section["grid"] = _save_png(image_grid(list(by_concept.values()), shown), root / "grid.png")
    section["attention"] = attention
    if config.dissection is not None:
        section["dissection"] = _dissect(
            pipe, clip, config, root / "dissection", fingerprint, progress
        )
    if config.classification is not None:
        section["diffusion_classifier"] = _classify(pipe, config.classification, progress)
    if config.replication_store is not None:
        section["replication"] = _replicate(paths, config)
    section["seconds"] = round(time.perf_counter() - started, 3)
    with atomic_path(root / "metrics.json") as tmp:
        tmp.write_text(json.dumps(section, indent=2))
    return section


def _per_concept(
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


def _write_scores(
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


def _attention(pipe: Any, cfg: EvalConfig, poisoned: list[str], out: Path) -> list[dict[str, Any]]:
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
        _save_png(Image.fromarray(overlay(image, maps[c])), out / name)
        # a file handle: np.save would add ".npy" to the temp file's name
        with atomic_path(out / f"{Path(name).stem}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, maps[c])
        entries.append({"concept": c, "prompt": prompt, "overlay": f"attention/{name}"})
    return entries


def _dissect(
    pipe: Any, clip: Any, cfg: EvalConfig, out: Path, fingerprint: str, progress: bool
) -> dict[str, Any]:
    from alignscope.evaluate.dissection import (
        ClassClassifier,
        TriggerDetector,
        dissect_generations,
    )

    d = cfg.dissection
    assert d is not None
    settings = GenerationSettings(
        images_per_concept=d.images,
        steps=cfg.generation.steps,
        guidance=cfg.generation.guidance,
        seed=cfg.generation.seed + DISSECTION_SEED_OFFSET,  # not the concept images' seeds
        batch_size=cfg.generation.batch_size,
        template=d.template,
        height=cfg.generation.height,
        width=cfg.generation.width,
    )
    items = generate_images(
        pipe, [d.target_class], out, settings, fingerprint=fingerprint, progress=progress
    )
    images = [np.asarray(im) for im in _images([g.path for g in items])]
    if d.classifier == "clip":
        classifier = ClassClassifier.zero_shot(clip, d.class_names)
    elif d.classifier.startswith(("torchvision:", "timm:")):
        classifier = ClassClassifier.checkpoint(d.classifier, d.class_names, device=cfg.device)
    else:
        classifier = ClassClassifier.torchscript(
            d.classifier, d.class_names, device=cfg.device, trust_models=cfg.trust_models
        )
    detector = (
        TriggerDetector.template(d.trigger, d.threshold)
        if d.trigger in ("badnets-1", "badnets-2")
        else TriggerDetector.torchscript(
            d.trigger,
            0.5 if d.threshold is None else d.threshold,
            trust_models=cfg.trust_models,
        )
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
        for name in ("G1", "G2", "G3", "G4")
    ]
    labels = [f"{name} ({len(r)})" for name, r in zip(("G1", "G2", "G3", "G4"), rows, strict=True)]
    grid = _save_png(image_grid(rows, labels), out.parent / "dissection_grid.png")
    return {
        "target_class": d.target_class,
        "prompt": d.template.format(d.target_class),
        "trigger": d.trigger,
        "grid": grid,
        **result.to_dict(),
    }


def caption_label(caption: str, class_names: Sequence[str]) -> int | None:
    """Index of the class named in the caption (whole words, longest name first), or None."""
    import re

    text = caption.lower()
    for i in sorted(range(len(class_names)), key=lambda k: -len(class_names[k])):
        if re.search(rf"\b{re.escape(class_names[i].lower())}\b", text):
            return i
    return None


def p_t_from_manifest(manifest: str | Path, target_class: str, class_names: Sequence[str]) -> float:
    """BiBadDiff's p_t measured on a poisoned dataset: of the rows whose caption names the
    target class, the fraction that carry a trigger (poisoned rows relabelled as the target).

    The dataset is the manifest's folder (``alignscope poison`` writes it there)."""
    from alignscope.io.datasets import open_dataset
    from alignscope.io.manifest import read_manifest

    table = read_manifest(manifest, ("written_as", "poisoned", "target_concept"))
    poisoned_ids = {
        name
        for name, flag, target in zip(
            table["written_as"], table["poisoned"], table["target_concept"], strict=True
        )
        if flag and target == target_class
    }
    if not poisoned_ids:
        raise ValueError(
            f"the poison manifest {str(manifest)!r} relabels no row as {target_class!r}"
        )
    target = class_names.index(target_class)
    labelled = [
        r.id
        for r in open_dataset(Path(manifest).parent)
        if caption_label(r.caption, class_names) == target
    ]
    carrying = sum(1 for i in labelled if i in poisoned_ids)
    if not carrying:
        raise ValueError(
            f"no record of {str(Path(manifest).parent)!r} that names {target_class!r} matches a "
            "poisoned row of its manifest: give p_t (--p-t) yourself"
        )
    return carrying / len(labelled)


def _classify(pipe: Any, task: Classification, progress: bool) -> dict[str, Any]:
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


def _replicate(paths: list[Path], cfg: EvalConfig) -> dict[str, Any]:
    from alignscope.embed.sscd import SSCDEncoder
    from alignscope.io.store import open_store
    from alignscope.search.replication import replication

    assert cfg.sscd is not None and cfg.replication_store is not None
    encoder = SSCDEncoder(cfg.sscd, device=cfg.device, trust_models=cfg.trust_models)
    generated = np.concatenate(
        [encoder.encode(_images(paths[i : i + 32])) for i in range(0, len(paths), 32)]
    )
    result = replication(generated, open_store(cfg.replication_store), k=1, view="sscd")
    return result.summary()


def evaluate(
    models: dict[str, str | Path] | Sequence[str | Path],
    out: str | Path,
    config: EvalConfig,
    *,
    progress: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Evaluate every model into ``out/<name>/`` and write ``report.json`` and ``report.html``.

    Parameters
    ----------
    models : {name: diffusers folder} or a list of folders (named by their directory names).
    out : output directory (created); reruns reuse the images already generated.

    Returns
    -------
    The report: settings, and per model its metrics, groups, maps and optional sections.
    """
    from alignscope.embed.clip import load_clip
    from alignscope.report.evaluation import write_html

    config.check()
    named = _names(models)
    poisoned = resolve_poisoned(config)
    missing = [p for p in poisoned if p not in config.concepts]
    if missing:  # the poisoned concepts are always evaluated (the paper's Poisoned column)
        _log(f"adding the poisoned concepts {missing} to the evaluated concepts", quiet)
        config = replace(config, concepts=[*config.concepts, *missing])
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
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


def _settings(cfg: EvalConfig) -> dict[str, Any]:
    out = asdict(cfg)
    out["concepts"] = len(cfg.concepts)
    return out


__all__ = [
    "Classification",
    "Dissection",
    "EvalConfig",
    "evaluate",
    "evaluate_model",
    "load_pipeline",
]
