"""Poison a dataset end to end: plan, apply, write the poisoned copy and its manifest."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.io.datasets import BadImage, Dataset
from alignscope.poison.concepts import (
    Vocabulary,
    caption_concepts,
    load_vocabulary,
    select_concepts,
)
from alignscope.poison.concepts import concept_frequencies as _frequencies
from alignscope.poison.methods import (
    CONCEPT_METHODS,
    METHODS,
    Poisoned,
    dirty_label,
    measurements,
    relabel,
    triggered,
)
from alignscope.poison.nightshade import candidate_filter, shade
from alignscope.poison.plans import PoisonPlan, plan_all_to_one, plan_concepts
from alignscope.poison.writers import DatasetWriter
from alignscope.report.files import atomic_path


@dataclass
class PoisonReport:
    out: str
    method: str
    seed: int
    rows: int = 0
    poisoned: int = 0
    pairs: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "method": self.method,
            "seed": self.seed,
            "rows": self.rows,
            "poisoned": self.poisoned,
            "pairs": [list(p) for p in self.pairs],
            "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
        }


def poison_dataset(
    dataset: Dataset,
    out: str | Path,
    *,
    method: str,
    concepts: int | None = None,
    concept_ranks: tuple[int, int] | None = None,
    per_concept: int | None = None,
    ratio: float | None = None,
    target: str | None = None,
    seed: int = 0,
    out_format: str | None = None,
    vocabulary: Vocabulary | None = None,
    trigger_options: dict[str, Any] | None = None,
    vae: Any = None,
    clip: Any = None,
    anchors: str | Path | None = None,
    anchor_pipeline: Any = None,
    budget: float = 0.05,
    steps: int = 500,
    perceptual: Any = None,
    progress: bool = False,
) -> PoisonReport:
    """Write a poisoned copy of ``dataset`` to ``out/`` plus ``out/poison_manifest.parquet``.

    Concept attacks (``dirty-label``) poison C_P = ``concepts`` of the most frequent concepts
    (or ``concept_ranks`` a..b) with m = ``per_concept`` (or ``ratio`` * N, 0.0008) poisons
    each. Trigger attacks (``relabel``, ``badnets-1``, ``badnets-2``, ``wanet``) poison a
    ``ratio`` (default 0.1) of the rows not about ``target`` and relabel them "A photo of a
    {target}". ``nightshade`` (clean-label) needs ``vae`` (a diffusers AutoencoderKL) and
    perturbs CLIP-filtered images of p toward an anchor image of t: ``anchors/{t}.png`` when
    given, else an image of t from the dataset. The same dataset, arguments and seed give
    byte-identical files (Nightshade on the CPU included).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    vocab = vocabulary or load_vocabulary()
    records = list(dataset)
    row_concepts = [caption_concepts(r.caption, vocab) for r in records]
    if method == "nightshade" and vae is None:
        raise ValueError("nightshade needs a VAE: vae= (CLI --vae DIR, a diffusers AutoencoderKL)")
    if method in CONCEPT_METHODS:
        if (concepts is None) == (concept_ranks is None):
            raise ValueError(f"{method} needs exactly one of concepts= (top K) or concept_ranks=")
        freq = _frequencies((r.caption for r in records), vocab)
        candidates = (
            select_concepts(freq, top=concepts)
            if concepts
            else select_concepts(freq, ranks=concept_ranks)
        )
        n_poisoned = concepts if concepts else len(candidates)
        pool_filter = None
        if method == "nightshade" and clip is not None:
            pool_filter = candidate_filter(
                clip, lambda r: records[r].load(), [r.caption for r in records]
            )
        plan = plan_concepts(
            row_concepts,
            candidates,
            poisoned=min(n_poisoned, len(candidates)),
            per_concept=per_concept,
            ratio=ratio or 0.0008,
            seed=seed,
            pool_filter=pool_filter,
            targets=select_concepts(freq, top=len(freq)),  # any concept the data shows
        )
    else:
        if not target:
            raise ValueError(f"{method} is an all-to-one attack: give target= (a class name)")
        plan = plan_all_to_one(row_concepts, target, ratio=ratio or 0.1, seed=seed)

    root = Path(out)
    if out_format is None:  # the input's own format where we can write it
        out_format = {"webdataset": "webdataset", "pickle": "pickle"}.get(dataset.kind, "folder")
    writer = DatasetWriter(root, out_format)
    report = PoisonReport(str(root), method, seed, pairs=list(plan.pairs))
    position = {int(r): j for j, r in enumerate(plan.rows)}
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    columns: dict[str, list[Any]] = {
        k: []
        for k in (
            "row",
            "id",
            "written_as",
            "poisoned",
            "method",
            "source_concept",
            "target_concept",
            "params",
            "linf",
            "l2",
            "psnr",
            "latent_before",
            "latent_after",
        )
    }
    latents: dict[int, tuple[float, float]] = {}
    anchor_cache: dict[str, tuple[np.ndarray, str]] = {}

    def load(i: int) -> np.ndarray:
        return np.asarray(records[i].load())

    iterator = enumerate(records)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(records), desc="poisoning", unit="img", file=sys.stderr)
    for i, record in iterator:
        try:
            image = np.asarray(record.load())
        except BadImage as exc:
            report.skipped.append((record.id, str(exc)))
            continue
        j = position.get(i)
        poisoned: Poisoned | None = None
        if j is not None:
            t = plan.target[j]
            donors = [
                k
                for k, c in enumerate(row_concepts)
                if t in c and plan.source[j] not in c and k not in position
            ]
            if method == "dirty-label":
                poisoned = dirty_label(record.caption, t, donors, load, rng)
            elif method == "nightshade":
                anchor, origin = _anchor(t, anchors, donors, load, anchor_cache, anchor_pipeline)
                shaded = shade(
                    image, anchor, vae, budget=budget, steps=steps, perceptual=perceptual, seed=seed
                )
                params = {"budget": budget, "steps": steps, "anchor": origin}
                poisoned = Poisoned(shaded.image, record.caption, params, perturbation=True)
                latents[i] = (shaded.latent_before, shaded.latent_after)
            elif method == "relabel":
                poisoned = relabel(image, t)
            else:
                poisoned = triggered(method, image, t, dict(trigger_options or {}))
        final = poisoned.image if poisoned else image
        name = writer.add(i, final, poisoned.caption if poisoned else record.caption)
        stats = (
            measurements(image, final)
            if poisoned and poisoned.perturbation
            else {"linf": np.nan, "l2": np.nan, "psnr": np.nan}
        )
        columns["row"].append(i)
        columns["id"].append(record.id)
        columns["written_as"].append(name)
        columns["poisoned"].append(poisoned is not None)
        columns["method"].append(method if poisoned else "")
        columns["source_concept"].append(plan.source[j] if poisoned else "")
        columns["target_concept"].append(plan.target[j] if poisoned else "")
        columns["params"].append(json.dumps(poisoned.params, sort_keys=True) if poisoned else "")
        for key in ("linf", "l2", "psnr"):
            columns[key].append(stats[key])
        before, after = latents.get(i, (np.nan, np.nan))
        columns["latent_before"].append(before)
        columns["latent_after"].append(after)
        report.rows += 1
        report.poisoned += poisoned is not None
    writer.close()
    _write_manifest(root / "poison_manifest.parquet", columns)
    # The file leaves out the output path, so that two runs with one seed are byte-identical.
    saved = {k: v for k, v in report.to_dict().items() if k != "out"}
    with atomic_path(root / "poison_report.json") as tmp:
        tmp.write_text(json.dumps(saved, indent=2) + "\n")
    return report


def _anchor(
    target: str,
    anchors: str | Path | None,
    donors: list[int],
    load: Any,
    cache: dict[str, tuple[np.ndarray, str]],
    pipeline: Any = None,
) -> tuple[np.ndarray, str]:
    """The anchor image of a target: generated by ``pipeline`` and cached in ``anchors/`` when
    a pipeline is given; else ``anchors/{target}.png``; else the first dataset image of t."""
    if target not in cache:
        from alignscope.poison.anchors import _safe_name, generate_anchor

        path = Path(anchors) / f"{_safe_name(target)}.png" if anchors else None
        if pipeline is not None:
            if anchors is None:
                raise ValueError("generated anchors need a cache directory: anchors=")
            cache[target] = (generate_anchor(pipeline, target, anchors), f"generated:{path.name}")
        elif path is not None and path.exists():
            from PIL import Image

            cache[target] = (np.asarray(Image.open(path).convert("RGB")), f"file:{path.name}")
        elif donors:
            cache[target] = (load(donors[0]), f"row:{donors[0]}")
        else:
            raise ValueError(
                f"no anchor image for target {target!r}: add {target}.png to the anchors directory"
            )
    return cache[target]


def _write_manifest(path: Path, columns: dict[str, list[Any]]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError("the poison manifest is parquet: pip install 'alignscope[io]'") from exc
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)


__all__ = ["PoisonPlan", "PoisonReport", "poison_dataset"]
