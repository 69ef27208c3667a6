"""Availability poisons for class-labelled image sets: perturbations tied to the class that
make a supervised model trained on them useless on clean images.

Three of the poisons VESPR (Styborski et al., arXiv:2409.08509) defends against:

- ``unlearnable``: error-minimising noise (Huang et al., *Unlearnable Examples*, ICLR 2021),
  the bi-level min-min problem solved by alternating a few training steps of a surrogate CNN
  on the perturbed images with PGD steps that *lower* its loss over the noise, until the
  surrogate fits the perturbed set; sample-wise (one delta per image) or class-wise (one per
  class). L-infinity budget 8/255.
- ``classwise-noise``: a synthetic pattern per class, no model involved (the class-wise noise
  of Huang et al.'s baselines and the synthetic shortcuts of Yu et al., KDD 2022): one sign
  in {-eps, +eps} per channel of each ``patch`` x ``patch`` block. L-infinity budget 8/255.
- ``ops``: One-Pixel Shortcut (Wu et al., ICLR 2023): one pixel per image, at a position and
  in a colour (a corner of the RGB cube) chosen per class. L0 budget: one pixel.

The class of a row is the one the classifiers read (``alignscope train classifier``, ``defend
vespr``; :func:`alignscope.train.classifier.record_class`): the class its caption "A photo of
a {class}" names, else its folder. ``alignscope poison`` keeps every caption that names the
row's class, so these are clean-label poisons; the copy is written flat, so a row whose class
came from its folder is written with the caption "A photo of a {class}" (the label kept
where the classifiers read it).
Budgets are in 8-bit levels and hold exactly on the written files: the noise is rounded to
whole levels within [-budget, budget] before it is added, and clipping to [0, 255] only
shrinks it.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import (
    atomic_path,
    claimed_output,
    ensure_free_space,
    fingerprint_tree,
    tree_bytes,
)
from alignscope.io.datasets import BadImage, Dataset
from alignscope.io.manifest import COLUMNS as MANIFEST_COLUMNS
from alignscope.poison.methods import AVAILABILITY_METHODS, TARGET_CAPTION
from alignscope.train.classifier import caption_class, no_class_error, record_class

DEFAULT_EPSILON = 8  # 8-bit levels: 8/255, the budget of the error-minimising noise papers
NOISE_MODES = ("sample", "class")


@dataclass
class ClassImages:
    """The decodable rows of a class-labelled set, stacked: ``images`` (N, H, W, 3) uint8,
    ``labels`` (N,) int64 indices into ``classes``, and each row's position, id and caption
    in the dataset; ``skipped`` lists (id, reason) of the rows that did not decode."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    rows: list[int]
    ids: list[str]
    captions: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_class_images(dataset: Dataset) -> ClassImages:
    """Decode every row of ``dataset`` into one array, with its class by the rule of the
    classifiers (:func:`alignscope.train.classifier.record_class`): the class its caption "A
    photo of a {class}" names, else its folder.

    Raises
    ------
    ValueError
        When the images differ in size (naming the first row that differs), when fewer than
        two classes remain, or when a row names no class (naming the row and its caption).
    """
    images: list[np.ndarray] = []
    rows: list[int] = []
    ids: list[str] = []
    captions: list[str] = []
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    for i, record in enumerate(dataset):
        try:
            image = np.asarray(record.load())
        except BadImage as exc:
            skipped.append((record.id, str(exc)))
            continue
        name = record_class(record)
        if name is None:
            raise no_class_error(dataset.source, record, None)
        if images and image.shape != images[0].shape:
            h, w = image.shape[:2]
            h0, w0 = images[0].shape[:2]
            raise ValueError(
                f"row {i} ({record.id}) is {w}x{h} but row {rows[0]} is {w0}x{h0}: availability "
                "poisons need images of one size; resize the set first"
            )
        images.append(image)
        rows.append(i)
        ids.append(record.id)
        captions.append(record.caption)
        names.append(name)
    classes = sorted(set(names))
    if len(classes) < 2:
        raise ValueError(
            f"the captions name {len(classes)} class(es) ({', '.join(classes) or 'none'}): "
            "availability poisons need a class-labelled set with at least two classes"
        )
    index = {c: k for k, c in enumerate(classes)}
    labels = np.asarray([index[n] for n in names], dtype=np.int64)
    return ClassImages(np.stack(images), labels, classes, rows, ids, captions, skipped)


def written_caption(data: ClassImages, j: int) -> str:
    """The caption row ``j`` of ``data`` is written with: its own when it names the row's
    class, else "A photo of a {class}" (a class read from a folder that the flat copy does
    not keep)."""
    caption, name = data.captions[j], data.classes[data.labels[j]]
    return caption if caption_class(caption) == name else TARGET_CAPTION.format(target=name)


def _check_epsilon(epsilon: int) -> None:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, np.integer)):
        raise ValueError(f"epsilon is a whole number of 8-bit levels (8 = 8/255), got {epsilon!r}")
    if not 1 <= epsilon <= 255:
        raise ValueError(f"epsilon must be 1..255 8-bit levels (8 = 8/255), got {epsilon}")


def add_noise(images: np.ndarray, noise: np.ndarray, epsilon: int) -> np.ndarray:
    """``images`` (uint8) plus ``noise`` (float, in 8-bit levels) rounded to whole levels and
    clipped to [-epsilon, epsilon], the sum clipped to [0, 255]: the written L-infinity
    distance is at most ``epsilon`` levels, exactly."""
    levels = np.clip(np.rint(noise), -epsilon, epsilon).astype(np.int16)
    return np.clip(images.astype(np.int16) + levels, 0, 255).astype(np.uint8)


def classwise_patterns(
    shape: tuple[int, int, int], n_classes: int, *, epsilon: int = DEFAULT_EPSILON,
    patch: int = 8, seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """One synthetic noise pattern per class, (n_classes, H, W, C) in 8-bit levels.

    Each ``patch`` x ``patch`` block of each channel is +epsilon or -epsilon, drawn at random
    (seeded): a pattern a network picks up far sooner than the images' own features, and
    linearly separable between classes, which is what makes such noise a shortcut (Yu et al.).
    """
    _check_epsilon(epsilon)
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise ValueError(f"patch must be a whole number of pixels >= 1, got {patch!r}")
    h, w, c = shape
    rng = np.random.default_rng(np.random.SeedSequence([seed, 23]))
    gh, gw = -(-h // patch), -(-w // patch)
    signs = rng.choice(np.array([-1, 1], dtype=np.int16), size=(n_classes, gh, gw, c))
    blocks = np.repeat(np.repeat(signs, patch, axis=1), patch, axis=2)[:, :h, :w]
    return (blocks * epsilon).astype(np.int16)


# The eight corners of the RGB cube, the colours OPS may paint its pixel with.
OPS_COLOURS = np.array(list(itertools.product((0, 255), repeat=3)), dtype=np.uint8)


def ops_search(images: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, ...]:
    """Per class, the pixel position and corner colour that change the class's images most.

    The objective is Wu et al.'s: the mean, over the class's images, of the summed per-channel
    distance between the pixel and the colour (in [0, 1] units). Classes are served in order
    and a position taken by an earlier class is not offered again, so that no two classes
    share a shortcut. Returns ``positions`` (n_classes, 2) as (row, column) and ``colours``
    (n_classes, 3) uint8; ties go to the first colour, then the first position in row order.
    """
    x = images.astype(np.float32) / 255.0
    h, w = x.shape[1:3]
    taken = np.zeros((h, w), dtype=bool)
    positions = np.zeros((n_classes, 2), dtype=np.int64)
    colours = np.zeros((n_classes, 3), dtype=np.uint8)
    corners = OPS_COLOURS.astype(np.float32) / 255.0
    for k in range(n_classes):
        members = x[labels == k]
        if members.shape[0] == 0:
            raise ValueError(f"class {k} has no images: OPS searches each class's own images")
        score = np.stack([np.abs(members - c).sum(axis=-1).mean(axis=0) for c in corners])
        score[:, taken] = -np.inf
        best = int(np.argmax(score))  # first maximum: colour-major, then row-major position
        colour, flat = divmod(best, h * w)
        r, col = divmod(flat, w)
        taken[r, col] = True
        positions[k] = (r, col)
        colours[k] = OPS_COLOURS[colour]
    return positions, colours


def apply_ops(
    images: np.ndarray, labels: np.ndarray, positions: np.ndarray, colours: np.ndarray
) -> np.ndarray:
    """Each image with its class's pixel painted its class's colour (an L0 of one pixel)."""
    out = images.copy()
    rows, cols = positions[labels, 0], positions[labels, 1]
    out[np.arange(len(out)), rows, cols] = colours[labels]
    return out


@dataclass
class NoiseResult:
    """Error-minimising noise in 8-bit levels, one (H, W, C) array per image, and how the
    min-min search ended: ``rounds`` of (train, perturb), the surrogate's accuracy on the
    perturbed set after the last, and whether it reached ``stop_accuracy``."""

    noise: np.ndarray
    rounds: int
    accuracy: float
    stopped: bool


def error_minimising_noise(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    mode: str = "sample",
    epsilon: int = DEFAULT_EPSILON,
    pgd_steps: int = 20,
    step_size: float = 0.8,
    train_steps: int = 10,
    stop_accuracy: float = 0.99,
    max_rounds: int = 30,
    batch_size: int = 128,
    lr: float = 0.1,
    arch: str = "small",
    width: int = 16,
    seed: int = 0,
    device: str | None = None,
) -> NoiseResult:
    """Error-minimising (unlearnable) noise by Huang et al.'s min-min optimisation.

    Each round trains a surrogate network for ``train_steps`` batches on the perturbed images,
    then takes ``pgd_steps`` signed-gradient steps of ``step_size`` levels per batch that lower
    its cross-entropy over the noise (sample-wise: each image's own delta; class-wise: one
    delta per class, stepped by the sign of the gradient summed over the batch's images of the
    class), projected onto the L-infinity ball of ``epsilon`` levels. It stops once the
    surrogate classifies ``stop_accuracy`` of the perturbed set correctly, or after
    ``max_rounds``. Defaults follow the authors' CIFAR-10 settings (eps 8/255, step 0.8/255, 20
    PGD steps, 10 training steps, stop at 99% accuracy) with a CPU-sized surrogate
    (``arch="small"``; ``"resnet18"`` is the paper's).

    Parameters
    ----------
    images : ndarray
        (N, H, W, 3) uint8.
    labels : ndarray
        (N,) class indices in [0, n_classes).
    mode : str
        ``"sample"`` or ``"class"``.

    Returns
    -------
    NoiseResult
        ``noise`` (N, H, W, 3) float32 in levels, within [-epsilon, epsilon].
    """
    import torch
    import torch.nn.functional as F

    from alignscope._devices import pick_device
    from alignscope.defend.models import build_network

    if mode not in NOISE_MODES:
        raise ValueError(f"mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
    _check_epsilon(epsilon)
    dev = pick_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(dev)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(dev)
    n = x.shape[0]
    eps, alpha = epsilon / 255.0, step_size / 255.0
    shape = (n if mode == "sample" else n_classes, *x.shape[1:])
    delta = ((torch.rand(shape, generator=gen) * 2 - 1) * eps).to(dev)
    model = build_network(arch, n_classes, width=width).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)

    def noise_of(idx: Any) -> Any:
        return delta[idx] if mode == "sample" else delta[y[idx]]

    order: list[Any] = []

    def next_batch() -> Any:
        if not order:
            order.extend(torch.randperm(n, generator=gen).split(batch_size))
        return order.pop(0).to(dev)

    accuracy, rounds = 0.0, 0
    while rounds < max_rounds:
        rounds += 1
        model.train()
        for _ in range(train_steps):
            idx = next_batch()
            loss = F.cross_entropy(model((x[idx] + noise_of(idx)).clamp(0, 1)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()  # the noise is fitted to the surrogate as it stands (BatchNorm frozen)
        for idx in torch.arange(n, device=dev).split(batch_size):
            xb, yb = x[idx], y[idx]
            d = noise_of(idx).clone()
            for _ in range(pgd_steps):
                d.requires_grad_(True)
                loss = F.cross_entropy(model((xb + d).clamp(0, 1)), yb)
                (grad,) = torch.autograd.grad(loss, d)
                if mode == "sample":
                    d = (d.detach() - alpha * grad.sign()).clamp(-eps, eps)
                else:
                    total = torch.zeros_like(delta).index_add_(0, yb, grad)
                    present = torch.zeros(n_classes, dtype=torch.bool, device=dev)
                    present[yb] = True
                    step = torch.where(
                        present.view(-1, 1, 1, 1), alpha * total.sign(), torch.zeros_like(total)
                    )
                    delta = (delta - step).clamp(-eps, eps)
                    d = delta[yb].clone()
            if mode == "sample":
                delta[idx] = d.detach()
        with torch.no_grad():
            correct = sum(
                int((model((x[i] + noise_of(i)).clamp(0, 1)).argmax(1) == y[i]).sum())
                for i in torch.arange(n, device=dev).split(batch_size)
            )
        accuracy = correct / n
        if accuracy >= stop_accuracy:
            break
    full = delta if mode == "sample" else delta[y]
    noise = full.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32) * 255.0
    return NoiseResult(noise, rounds, float(accuracy), accuracy >= stop_accuracy)


def availability_poison(
    data: ClassImages,
    method: str,
    *,
    epsilon: int = DEFAULT_EPSILON,
    mode: str = "sample",
    patch: int = 8,
    seed: int = 0,
    noise_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
    """The poisoned images (N, H, W, 3) uint8 of ``data`` by ``method``, each row's params for
    the manifest, and what the run as a whole found (the min-min search's end, OPS's pixels)."""
    if method not in AVAILABILITY_METHODS:
        raise ValueError(f"method must be one of {', '.join(AVAILABILITY_METHODS)}, got {method!r}")
    k = len(data.classes)
    if method == "ops":
        positions, colours = ops_search(data.images, data.labels, k)
        out = apply_ops(data.images, data.labels, positions, colours)
        params = [
            {"l0": 1, "position": positions[c].tolist(), "colour": colours[c].tolist()}
            for c in data.labels
        ]
        summary = {
            "pixels": {
                data.classes[c]: {"position": positions[c].tolist(), "colour": colours[c].tolist()}
                for c in range(k)
            }
        }
        return out, params, summary
    _check_epsilon(epsilon)
    budget = {"linf": f"{epsilon}/255"}
    if method == "classwise-noise":
        patterns = classwise_patterns(data.images.shape[1:], k, epsilon=epsilon, patch=patch,
                                      seed=seed)  # fmt: skip
        out = add_noise(data.images, patterns[data.labels].astype(np.float32), epsilon)
        return out, [{**budget, "patch": patch} for _ in data.labels], {"patch": patch}
    result = error_minimising_noise(
        data.images, data.labels, k, mode=mode, epsilon=epsilon, seed=seed,
        **(noise_options or {}),
    )  # fmt: skip
    out = add_noise(data.images, result.noise, epsilon)
    summary = {"mode": mode, "rounds": result.rounds, "surrogate_accuracy": result.accuracy,
               "stopped": result.stopped}  # fmt: skip
    return out, [{**budget, "mode": mode} for _ in data.labels], summary


def poison_availability(
    dataset: Dataset,
    out: str | Path,
    *,
    method: str,
    epsilon: int = DEFAULT_EPSILON,
    mode: str = "sample",
    patch: int = 8,
    seed: int = 0,
    out_format: str | None = None,
    noise_options: dict[str, Any] | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> Any:
    """Write ``dataset`` with every decodable row poisoned by ``method`` to ``out/``, plus the
    poison manifest and ``poison_report.json`` (as :func:`~alignscope.poison.poison_dataset`).

    Captions are kept (clean label); the manifest's ``source_concept`` is the row's class and
    its ``params`` the budget (and OPS's pixel). ``noise_options`` go to
    :func:`error_minimising_noise` (``pgd_steps``, ``train_steps``, ``max_rounds``, ``arch``,
    ``device``, ...). The same dataset, settings and seed give byte-identical files on one
    device and thread count.
    """
    from alignscope.poison.methods import measurements
    from alignscope.poison.run import PoisonReport, _write_outputs
    from alignscope.poison.writers import DatasetWriter

    if method not in AVAILABILITY_METHODS:
        raise ValueError(f"method must be one of {', '.join(AVAILABILITY_METHODS)}, got {method!r}")
    if mode not in NOISE_MODES:
        raise ValueError(f"mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
    if method != "ops":
        _check_epsilon(epsilon)
    ensure_free_space(
        out, tree_bytes(dataset.source) - tree_bytes(out), "the poisoned copy of the dataset"
    )
    data = load_class_images(dataset)
    if out_format is None:
        out_format = {"webdataset": "webdataset", "pickle": "pickle"}.get(dataset.kind, "folder")
    settings = {"epsilon": epsilon, "mode": mode, "patch": patch, **(noise_options or {})}
    if method == "unlearnable":
        import torch

        settings["torch_threads"] = torch.get_num_threads()
    identity = {
        "dataset": fingerprint_tree(dataset.source),
        "dataset_kind": dataset.kind,
        "method": method,
        "seed": int(seed),
        "format": out_format,
        "settings": json.dumps(settings, sort_keys=True, default=str),
    }
    # claimed first: a folder of another run is refused before minutes of noise search
    with claimed_output(out, "poison", identity, overwrite=overwrite):
        if progress:
            print(f"{method}: poisoning {len(data.rows):,} images of {len(data.classes)} "
                  "classes", file=sys.stderr)  # fmt: skip
        poisoned, params, summary = availability_poison(
            data, method, epsilon=epsilon, mode=mode, patch=patch, seed=seed,
            noise_options=noise_options,
        )  # fmt: skip
        root = Path(out)
        writer = DatasetWriter(root, out_format)
        report = PoisonReport(str(root), method, seed, planned=len(data.rows))
        report.skipped = list(data.skipped)
        columns: dict[str, list[Any]] = {key: [] for key in MANIFEST_COLUMNS}
        try:
            for j, row in enumerate(data.rows):
                name = writer.add(row, poisoned[j], written_caption(data, j))
                stats = measurements(data.images[j], poisoned[j])
                columns["row"].append(row)
                columns["id"].append(data.ids[j])
                columns["written_as"].append(name)
                columns["poisoned"].append(True)
                columns["method"].append(method)
                columns["source_concept"].append(data.classes[data.labels[j]])
                columns["target_concept"].append("")
                columns["params"].append(json.dumps(params[j], sort_keys=True))
                for key in ("linf", "l2", "psnr"):
                    columns[key].append(stats[key])
                columns["latent_before"].append(np.nan)
                columns["latent_after"].append(np.nan)
                report.rows += 1
                report.poisoned += 1
        except BaseException:
            writer.abort()
            raise
        writer.close()
        _write_outputs(root, columns, report)
        found = {"method": method, "classes": data.classes, **settings, **summary}
        with atomic_path(root / "availability.json") as tmp:
            tmp.write_text(json.dumps(found, indent=2, sort_keys=True, default=str) + "\n")
    return report


__all__ = [
    "AVAILABILITY_METHODS",
    "DEFAULT_EPSILON",
    "NOISE_MODES",
    "ClassImages",
    "NoiseResult",
    "add_noise",
    "apply_ops",
    "availability_poison",
    "classwise_patterns",
    "error_minimising_noise",
    "load_class_images",
    "ops_search",
    "poison_availability",
]
