"""Image classifiers trained on a class dataset, as BiBadDiff's Tab. 4 trains them.

BiBadDiff (Pan et al., appendix "Implementation details") trains a ResNet-50 on the poisoned
training set and another on the set the poisoned diffusion model generates, with SGD (learning
rate 0.01, weight decay 5e-4) and cosine annealing, and reports test accuracy (TA) on the clean
test set and attack success rate (ASR): the share of triggered non-target test images
classified as the target. The paper does not give the momentum; 0.9 is used here. The
architectures are torchvision's ``resnet18`` and ``resnet50`` (``weights=None``: trained from
the data given, nothing downloaded) and ``small``, a tiny CNN for tests and CPU runs.

A record's class is read from its caption, "A photo of a {class}" (what ``alignscope poison``
writes for a poison and what the class-conditional prompts generate), or, with no such
caption, from its folder (``DATA/cat/001.png``): :func:`record_class`, the one rule that the
availability poisons and ``defend vespr`` use too. A run writes ``classifier.pt`` in its output
folder after every epoch (a temporary file, then a rename) and resumes from it when the data
and settings match, repeating exactly what an uninterrupted run does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._devices import pick_device

ARCHS = ("small", "resnet18", "resnet50")
CHECKPOINT_NAME = "classifier.pt"
METRICS_NAME = "classifier_metrics.json"
# "A photo of a {class}" (methods.TARGET_CAPTION) and its lower-case / "an" / "the" variants,
# with or without a final full stop. The article is required: "a photo of two cats on a sofa"
# is a description, and reading it as a class would make a class-folder set with descriptive
# captions one class per caption. (A lone article repeated is no class.)
# Shards of archive datasets (webdataset tars): the first part of their members' ids.
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
_CLASS_CAPTION = re.compile(
    r"^\s*an?\s+photo\s+of\s+(?:an?|the)\s+(?!(?:an?|the)\s*\.?\s*$)(.+?)\s*\.?\s*$",
    re.IGNORECASE,
)


@dataclass
class ClassifierConfig:
    """Settings of a classifier run (BiBadDiff's optimiser; the epochs are the user's).

    Parameters
    ----------
    arch : one of :data:`ARCHS`.
    epochs : passes over the training set.
    lr : SGD's initial learning rate, annealed to 0 over ``epochs`` (cosine).
    batch : images per step.
    seed : seeds the initial weights and each epoch's shuffle.
    momentum, weight_decay : SGD's.
    device : "cpu", "cuda", "cuda:N" or "mps"; None: cuda when torch sees one, else cpu.
    """

    arch: str = "resnet50"
    epochs: int = 30
    lr: float = 0.01
    batch: int = 64
    seed: int = 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    device: str | None = None

    def check(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        for name in ("epochs", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")


@dataclass
class ClassImages:
    """A class dataset in memory: ``images`` (N, R, R, 3) uint8, ``labels`` (N,) int64,
    ``class_names`` and the records' ``ids``."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    ids: list[str] = field(default_factory=list)

    def digest(self) -> str:
        """sha256 of the pixels, labels and class names: what a resumed run must match."""
        h = hashlib.sha256()
        h.update(json.dumps(self.class_names).encode())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        h.update(np.ascontiguousarray(self.images).tobytes())
        return h.hexdigest()


def caption_class(caption: str) -> str | None:
    """The class a caption "A photo of a {class}" names (lower-cased), or None.

    "a"/"an" before "photo", "a"/"an"/"the" before the class and a final full stop are all
    accepted: "A photo of the cat." -> "cat", "a photo of an apple" -> "apple". A caption of
    another form names no class ("a dog on a sofa" -> None, and with no article before the
    class, "a photo of two cats on a sofa" -> None): taking any caption as a class would make
    each row of a captioned (not class-labelled) set its own class.
    """
    match = _CLASS_CAPTION.match(caption or "")
    return match.group(1).strip().lower() if match else None


def named_class(caption: str, class_names: Sequence[str]) -> str | None:
    """The first of ``class_names`` that ``caption`` names as whole words, longest name first
    (case-insensitive), or None: how a test set is labelled with its classifier's classes
    (:func:`alignscope.evaluate.labels.caption_label` gives its index)."""
    text = caption.lower()
    for name in sorted(class_names, key=len, reverse=True):
        if re.search(rf"\b{re.escape(name.lower())}\b", text):
            return name
    return None


def concept_folder(name: str) -> str:
    """The folder ``alignscope evaluate`` generates a concept's images into (its
    ``generate.slug``): the name's filesystem-safe form, "-", its crc32 in 8 hex digits."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40]
    return f"{safe or 'concept'}-{zlib.crc32(name.encode('utf-8')):08x}"


def record_class(record: Any, class_names: Sequence[str] | None = None) -> str | None:
    """The class of a dataset row, or None when it names none: the one rule of every
    class-labelled set (the classifiers here, the availability poisons and ``defend vespr``).

    With no ``class_names``: the class its caption "A photo of a {class}" names
    (:func:`caption_class`), else the folder it is in (``DATA/cat/001.png`` and
    ``DATA/train/cat/001.png``: "cat"; a webdataset shard such as ``00000.tar`` is no
    folder). With ``class_names`` (a test set takes its classifier's): the one its caption
    names as whole words (:func:`named_class`), else that folder, by name or as ``alignscope
    evaluate`` names a generated class's folder (:func:`concept_folder`).
    """
    caption = record.caption or ""
    # the immediate parent folder: DATA/train/cat/001.png is a "cat" (its first folder,
    # "train", is how the set is split, not a class); a webdataset member's id starts with its
    # shard ("00000.tar/000001"), which is no class either
    folder = record.id.rsplit("/", 2)[-2] if "/" in record.id else None
    if folder is not None and folder.lower().endswith(_ARCHIVE_SUFFIXES):
        folder = None
    if class_names is None:
        return caption_class(caption) or folder
    named = named_class(caption, class_names) if caption else None
    if named is not None:
        return named
    folders = {c: c for c in class_names} | {concept_folder(c): c for c in class_names}
    return folders.get(folder) if folder is not None else None


def no_class_error(source: object, record: Any, class_names: Sequence[str] | None) -> ValueError:
    """The error for a row :func:`record_class` finds no class for, naming the dataset, the
    row and its caption, and saying what a class-labelled set looks like."""
    wanted = "one of " + ", ".join(class_names) if class_names else "a class"
    return ValueError(
        f"{source}: record {record.id!r} names no class (caption {record.caption!r}); "
        f"give captions 'A photo of a {{class}}' naming {wanted}, or class folders"
    )


def resize_square(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` (HWC uint8) resized to side x side, bilinear (PIL); as is when it is already."""
    from PIL import Image

    if image.shape[:2] == (side, side):
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))


def load_class_images(
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    resolution: int | None = None,
    before_resize: Callable[[np.ndarray], np.ndarray] | None = None,
    trust_pickles: bool = False,
) -> ClassImages:
    """Read a class dataset into memory.

    Parameters
    ----------
    path : any dataset :func:`~alignscope.io.datasets.open_dataset` reads.
    class_names : the classes, in label order (a test set takes its classifier's). None: the
        classes the captions (or folders) name, sorted.
    resolution : square side to resize to (bilinear); None: the first image's smaller side.
    before_resize : applied to each HWC uint8 image at its own size first (a trigger).
    trust_pickles : passed to ``open_dataset``.

    Raises
    ------
    ValueError naming the dataset and record when a record names no class.
    """
    from alignscope.io.datasets import open_dataset

    dataset = open_dataset(path, trust_pickles=trust_pickles)
    images, names, ids = [], [], []
    for record, image in dataset.images():
        name = record_class(record, class_names)
        if name is None:
            raise no_class_error(path, record, class_names)
        arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        if before_resize is not None:
            arr = before_resize(arr)
        if resolution is None:
            resolution = min(arr.shape[:2])
        images.append(resize_square(arr, resolution))
        names.append(name)
        ids.append(record.id)
    if not images:
        raise ValueError(f"{path}: no decodable image")
    classes = list(class_names) if class_names is not None else sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[n] for n in names], dtype=np.int64)
    return ClassImages(np.stack(images), labels, classes, ids)


# --------------------------------------------------------------------------- models


def build_classifier(arch: str, num_classes: int) -> Any:
    """A classifier taking (N, 3, H, W) images in [0, 1]: the inputs are normalised to
    [-1, 1] inside, so detectors (STRIP, Cognitive Distillation) work in pixel space."""
    import torch
    from torch import nn

    class _Normalise(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2.0 - 1.0

    if arch == "small":
        # three conv blocks with batch norm and a global max pool: each channel says whether
        # its pattern is anywhere, so a corner trigger is one strong channel. (A linear head
        # over a spatial map instead learns it too, but its logits add the shape's evidence
        # to the trigger's, and Cognitive Distillation cannot then tell them apart.)
        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

        net = nn.Sequential(
            *block(3, 16),
            nn.MaxPool2d(2),
            *block(16, 32),
            nn.MaxPool2d(2),
            *block(32, 32),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(32, num_classes),
        )
    elif arch in ("resnet18", "resnet50"):
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    else:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    return nn.Sequential(_Normalise(), net)


def to_tensor(images: np.ndarray) -> Any:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def predict_probs(model: Any, images: np.ndarray, *, batch: int = 256) -> np.ndarray:
    """Softmax probabilities (N, C) of ``model`` on (N, H, W, 3) uint8 images."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = to_tensor(images[start : start + batch]).to(device)
            out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


# --------------------------------------------------------------------------- training


def _settings(config: ClassifierConfig, data: ClassImages) -> dict[str, Any]:
    settings = asdict(config)
    settings.pop("device")  # the same run on another device is the same run
    settings["resolution"] = int(data.images.shape[1])
    settings["data"] = data.digest()
    return settings


def classifier_identity(config: ClassifierConfig, data: ClassImages) -> dict[str, Any]:
    """What a classifier run's outputs depend on, as its output folder's record holds it:
    ``data`` (:meth:`ClassImages.digest`, the pixels, labels and class names trained on) and
    ``config``, every setting but the device (the same run on another device is the same
    run), with the images' resolution."""
    settings = _settings(config, data)
    return {"data": settings.pop("data"), "config": settings}


def train_classifier(
    data: ClassImages,
    out: str | Path,
    config: ClassifierConfig | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
    metrics_identity: dict[str, Any] | None = None,
    write_metrics: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``config.arch`` on ``data``; write and return the checkpoint's metadata.

    ``out/classifier.pt`` holds the weights, the optimiser and scheduler state, the epoch,
    ``arch``, ``class_names``, ``resolution`` and the run's ``settings``; it is rewritten
    (temporary file, then rename) after each epoch. ``out`` is claimed with a record of
    :func:`classifier_identity` (:func:`alignscope._files.claimed_output`): a rerun resumes
    from the checkpoint when the record matches (an interrupted run continues; a finished one
    returns at once); otherwise it is refused (:class:`~alignscope._files.OutputConflict`)
    naming what differs, unless ``overwrite``, which deletes the earlier run's outputs. A
    ``classifier.pt`` with no record (written before records existed) is refused, even with
    ``overwrite``: what made it is unknown.

    ``write_metrics``, when given, is called with the returned dict once training is done,
    inside the claim, to write ``out/classifier_metrics.json`` (the CLI's TA and ASR). That
    file has its own claim (:func:`~alignscope._files.claimed_file`) of ``metrics_identity``,
    what the measurement depends on (test set, target, trigger and its settings): another
    measurement is refused before any training, and ``overwrite`` then replaces the file
    without retraining when the training's identity is unchanged.

    Returns
    -------
    dict with ``checkpoint`` (path), ``epochs``, ``resumed_from`` (epoch), ``losses`` (mean
    training loss per epoch, all epochs), ``seconds``.
    """
    from alignscope._files import RECORD_NAME, OutputConflict, claimed_file, claimed_output

    config = config or ClassifierConfig()
    config.check()
    device = pick_device(config.device)  # before the claim: a bad device leaves no folder behind
    root = Path(out)
    if (root / CHECKPOINT_NAME).is_file() and not (root / RECORD_NAME).is_file():
        # alignscope's own checkpoint, but from before output records: which data and settings
        # made it is unknown, so it can be neither resumed nor deleted (--overwrite included)
        raise OutputConflict(
            f"--out {str(root)!r} holds a {CHECKPOINT_NAME} written before alignscope recorded "
            "what made its outputs, so it cannot be resumed or replaced: move it elsewhere, or "
            "choose another --out"
        )
    identity = classifier_identity(config, data)
    with claimed_output(root, "train classifier", identity, overwrite=overwrite):
        with contextlib.ExitStack() as stack:
            if write_metrics is not None:
                # claimed before training: another measurement is refused in seconds
                claim = claimed_file(
                    root / METRICS_NAME,
                    "train classifier: metrics",
                    metrics_identity or {},
                    flag="--out",
                    overwrite=overwrite,
                )
                try:
                    stack.enter_context(claim)
                except OutputConflict as exc:  # worded for the folder the user named
                    message = str(exc).replace(
                        f"--out {str(root / METRICS_NAME)!r}",
                        f"--out {str(root)!r}: its {METRICS_NAME}",
                    )
                    raise OutputConflict(
                        message.replace(
                            "pass --overwrite to replace it, or choose another file",
                            "pass --overwrite to measure again (the trained classifier is "
                            "kept), or choose another --out",
                        )
                    ) from None
            trained = _train_into(data, root, config, device, progress)
            if write_metrics is not None:
                write_metrics(trained)
        return trained


def _train_into(
    data: ClassImages, root: Path, config: ClassifierConfig, device: str, progress: bool
) -> dict[str, Any]:
    """The training of :func:`train_classifier` in its claimed folder ``root``: from the
    checkpoint there when there is one (the record matched), else from the start."""
    import torch

    from alignscope._files import atomic_path

    ckpt_path = root / CHECKPOINT_NAME
    settings = _settings(config, data)
    started = time.perf_counter()

    torch.manual_seed(config.seed)
    model = build_classifier(config.arch, len(data.class_names)).to(device)
    optimiser = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    start_epoch, losses = 0, []
    if ckpt_path.exists():  # the folder's record matched: this run's own checkpoint
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, losses = int(state["epoch"]), list(state["losses"])
    resumed_from = start_epoch

    # kept as uint8 and made float a batch at a time: 4x less memory (ImageNette at 224 px is
    # 1.4 GB of bytes, 5.7 GB of floats)
    x_all = torch.from_numpy(np.ascontiguousarray(data.images))
    y_all = torch.from_numpy(data.labels)
    n = len(data.labels)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        # each epoch's order from (seed, epoch) alone, so a resumed run repeats it
        order = torch.randperm(
            n, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch)
        )
        total = 0.0
        for start in range(0, n, config.batch):
            idx = order[start : start + config.batch]
            x = x_all[idx].to(device).permute(0, 3, 1, 2).float() / 255.0
            y = y_all[idx].to(device)
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        scheduler.step()
        losses.append(total / n)
        state = {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch + 1,
            "losses": losses,
            "arch": config.arch,
            "class_names": list(data.class_names),
            "resolution": int(data.images.shape[1]),
            "settings": settings,
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)
        if progress:
            print(
                f"classifier: epoch {epoch + 1}/{config.epochs} loss {losses[-1]:.4f}",
                file=sys.stderr,
                flush=True,
            )
    return {
        "checkpoint": str(ckpt_path),
        "epochs": config.epochs,
        "resumed_from": resumed_from,
        "losses": losses,
        "seconds": time.perf_counter() - started,
    }


def load_classifier(path: str | Path, device: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The model of a ``classifier.pt`` (a file, or the folder holding it), in eval mode, and
    its metadata (``arch``, ``class_names``, ``resolution``, ``epoch``)."""
    import torch

    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise FileNotFoundError(f"classifier {str(p)!r} does not exist; train one first")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        meta = {k: state[k] for k in ("arch", "class_names", "resolution", "epoch")}
    except Exception as exc:  # torch raises several kinds for a file that is not ours
        raise ValueError(
            f"{p}: not a classifier checkpoint of `alignscope train classifier` ({exc})"
        ) from exc
    model = build_classifier(meta["arch"], len(meta["class_names"]))
    model.load_state_dict(state["model"])
    model.to(pick_device(device)).eval()
    return model, meta


# --------------------------------------------------------------------------- TA and ASR


def attack_success_rate(
    model: Any,
    test_path: str | Path,
    class_names: Sequence[str],
    resolution: int,
    *,
    target: str,
    trigger: str,
    trigger_options: dict[str, Any] | None = None,
) -> tuple[float, int]:
    """ASR: the share of the non-target test images that, with ``trigger`` applied (at their
    own size, as the poisons were made, then resized), ``model`` classifies as ``target``.
    Returns (asr, number of non-target images)."""
    from alignscope.poison.triggers import apply_trigger

    if target not in class_names:
        raise ValueError(f"target {target!r} is not a class; the classes are {list(class_names)}")
    options = trigger_options or {}
    triggered = load_class_images(
        test_path,
        class_names=class_names,
        resolution=resolution,
        before_resize=lambda im: apply_trigger(trigger, im, **options),
    )
    keep = triggered.labels != class_names.index(target)
    if not keep.any():
        raise ValueError(f"{test_path}: every test image is of the target {target!r}; no ASR")
    pred = predict_probs(model, triggered.images[keep]).argmax(axis=1)
    return float(np.mean(pred == class_names.index(target))), int(keep.sum())


def clean_accuracy(model: Any, test: ClassImages) -> float:
    """TA: the share of the clean test images classified as their class."""
    return float(np.mean(predict_probs(model, test.images).argmax(axis=1) == test.labels))


def evaluate_classifier(
    model: Any,
    meta: dict[str, Any],
    test_path: str | Path,
    *,
    target: str | None = None,
    trigger: str | None = None,
    trigger_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """TA on the clean test set at ``test_path`` and, given ``target`` and ``trigger``, ASR."""
    test = load_class_images(
        test_path, class_names=meta["class_names"], resolution=meta["resolution"]
    )
    out: dict[str, Any] = {"ta": clean_accuracy(model, test), "n_test": len(test.labels)}
    if target is not None and trigger is not None:
        asr, count = attack_success_rate(
            model,
            test_path,
            meta["class_names"],
            meta["resolution"],
            target=target,
            trigger=trigger,
            trigger_options=trigger_options,
        )
        out.update(asr=asr, n_asr=count, target=target, trigger=trigger)
    return out


# --------------------------------------------------------------------------- synthetic data

SHAPE_CLASSES = ("cat", "dog", "car", "boat")
_SHAPE_COLOURS = ((200, 40, 40), (40, 190, 40), (40, 80, 210), (190, 170, 30))


def write_shapes_dataset(
    root: str | Path,
    n: int,
    *,
    seed: int = 0,
    side: int = 32,
    classes: Sequence[str] = SHAPE_CLASSES,
) -> Path:
    """A synthetic class set for tests and offline recipes: ``n`` PNGs (``{i:04d}.png``, class
    ``classes[i % len(classes)]``) with captions "a photo of a {class}" (``.txt`` sidecars).

    Image i is dark noise (a mean drawn in [10, 50], sd 6) with one coloured shape of radius
    5-7 px (at 32 px; scaled with ``side``) at a random place away from the bottom-right
    corner (where BadNets-1 paints): class 0 a red disc, 1 a green square, 2 a blue triangle,
    3 a yellow cross; more classes reuse the four shapes with other colours. Dark backgrounds
    keep STRIP's saturating blend (x + o) from washing the shapes out, as on bright images.
    """
    if n < 1 or side < 16:
        raise ValueError(f"need n >= 1 and side >= 16 for the shapes set, got n={n}, side={side}")
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    y, x = np.indices((side, side))
    for i in range(n):
        k = i % len(classes)
        img = np.clip(rng.normal(rng.uniform(10, 50), 6, (side, side, 3)), 0, 255)
        # at 32 px: centre in 9..19, radius 5..7; scaled with the side
        cy, cx = rng.integers(9 * side // 32, side - 12 * side // 32, 2)
        r = int(rng.integers(5 * side // 32, 8 * side // 32))
        dy, dx = np.abs(y - cy), np.abs(x - cx)
        shape = k % 4
        if shape == 0:
            m = dy**2 + dx**2 <= r * r
        elif shape == 1:
            m = (dy <= r) & (dx <= r)
        elif shape == 2:
            m = (dy <= r) & (dx <= (y - cy + r) / 2)
        else:
            m = ((dy <= 1) & (dx <= r)) | ((dx <= 1) & (dy <= r))
        colour = np.roll(np.array(_SHAPE_COLOURS[shape]), k // 4)
        img[m] = colour + rng.normal(0, 10, (int(m.sum()), 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out / f"{i:04d}.png")
        (out / f"{i:04d}.txt").write_text(f"a photo of a {classes[k]}")
    return out
