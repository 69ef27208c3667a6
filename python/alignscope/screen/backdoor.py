"""Backdoor detectors on an image set, given a classifier: STRIP, Cognitive Distillation, FCT.

BiBadDiff (Pan et al., Tab. 3) runs these detectors with a classifier trained on the poisoned
training set, on that training set and on a generated set of the same size, and reports the
AUROC of telling the triggered images from the rest. Both work on images in [0, 1] and a
model that takes them (``alignscope.train.classifier`` builds its models so).

- STRIP (Gao et al. 2019): each image is superimposed with ``n`` held-out clean images,
  ``clip(x + overlay, 0, 1)`` (STRIP's ``cv2.addWeighted(x, 1, overlay, 1, 0)`` on 8-bit
  images, saturating), and scored by the mean entropy (nats) of the classifier's softmax over
  the ``n`` blends. A trigger keeps forcing its target through the blend, so a poisoned image
  has LOW entropy.
- Cognitive Distillation (Huang et al., ICLR 2023): the mask m (one channel, H x W, in
  (0, 1)) found by minimising
  ``mean|f(x m + (1 - m) d) - f(x)| + gamma ||m||_1 + beta TV(m)`` over ``steps`` Adam steps,
  d a random colour (one value per channel, uniform in [0, 1)) drawn anew each step,
  TV(m) = (sum of squared differences of vertical and horizontal neighbours) / (H W), and f
  the logits. The score is ||m||_1: a trigger is a small pattern that alone keeps the output,
  so a poisoned image has a SMALL mask. The settings (m = (tanh(p) + 1) / 2 from p = 1,
  Adam with lr 0.1 and betas (0.1, 0.1), gamma 0.01, beta 1, 100 steps) are those of the
  authors' code (github.com/HanxunH/CognitiveDistillation, ``detection/
  cognitive_distillation.py``, read for them; none of its code is used here). Their loss
  averages over the batch; it is summed here, so a mask does not depend on its batch.
  gamma is the setting they choose per experiment (their ``--gamma``; CLI ``--cd-gamma``):
  it weighs the mask's size against logit units, so it depends on the classifier's logit
  scale. On the tests' small CNN at 32 px (the authors' CIFAR size, so not an image-size
  effect; ``tests/screen/test_backdoor.py``'s ``backdoored`` fixture, training seed 0) the
  default 0.01 ranks triggered images as the cleaner ones (AUROC 0.16; tested: below 0.5) and
  0.0005 separates them (0.95; tested: at least 0.9). Why: the masks of triggered images do
  keep the trigger's corner (mean mask there 1.0 against 0.003 on clean images; tested), but
  the logit term is absolute and these images' logits are 2-3x larger (mean |logit| 15 against
  4.5; tested: over 2x), which acts as a 2-3x smaller gamma for them: their masks also keep
  the object (median ||m||_1 151 against 120 of 1024 pixels; tested: larger), so the score
  follows the classifier's confidence. With a smaller gamma every mask keeps most of the image
  (median 885 clean, 711 triggered) and what is left out is what the trigger makes
  unnecessary. Measured once and not tested: AUROC 0.24 at 0.01 and 0.92 at 0.0005 with
  training seed 1, and, on the seed-0 CNN, AUROC 1.0 for gamma 1e-4 to 2e-3 when each image's
  logit change is divided by its own mean |logit|, which removes the confound; that is not the
  authors' objective, so the default stays theirs. Choose gamma for your classifier;
  :func:`cd_collapse_warning` (printed by ``alignscope detect``; tested) flags a gamma that
  has driven every mask to all-off or all-on, where the ranking means nothing.
- FCT (Chen et al. 2022, as Huang et al.'s code runs it, ``detection/fct.py``): the
  classifier fine-tuned on its labelled training set to pull class centres apart, then the
  change of each image's penultimate features under a random rotation and shift
  (:func:`fct_scores`); a trigger does not survive them, so a poisoned image moves MORE.

:func:`detection_scores` turns them into suspicion scores (higher = more likely poisoned:
minus the entropy, minus the mask norm, the feature change) and :func:`detect_backdoors`
evaluates them against a poison manifest with
:func:`alignscope.screen.evaluation.evaluate_scores`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DETECTORS = ("strip", "cd", "fct")
DEFAULT_DETECTORS = ("strip", "cd")  # FCT also needs the labelled training set
FCT_EPOCHS = 10  # the L_intra fine-tuning epochs of Huang et al.'s FCT
STRIP_OVERLAYS = 100  # STRIP's N (the paper's and Huang et al.'s default)
CD_STEPS = 100
CD_LR = 0.1
CD_GAMMA = 0.01
CD_BETA = 1.0


def _float_images(images: Any) -> Any:
    """(N, H, W, 3) uint8 arrays -> (N, 3, H, W) floats in [0, 1]; a float tensor is kept."""
    import torch

    if isinstance(images, torch.Tensor):
        return images.float()
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255.0


def _device_of(model: Any) -> Any:
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:  # a parameter-free model (a test's fixed function)
        return torch.device("cpu")


# --------------------------------------------------------------------------- STRIP


def strip_entropy(
    model: Any,
    images: Any,
    overlays: Any,
    *,
    n: int = STRIP_OVERLAYS,
    seed: int = 0,
    batch: int = 512,
) -> np.ndarray:
    """STRIP's entropy of each image: the mean over ``n`` overlays of the entropy (nats) of
    ``softmax(model(clip(x + overlay, 0, 1)))``.

    Parameters
    ----------
    model : maps (B, 3, H, W) floats in [0, 1] to logits (B, C).
    images, overlays : (N, H, W, 3) uint8 arrays (or float tensors in [0, 1]) of one size;
        ``overlays`` are held-out clean images.
    n : overlays per image, drawn with replacement from ``overlays`` by
        ``numpy.random.default_rng(seed)``, the same ones for every image (so scores compare).
    batch : blends per forward pass.

    Returns
    -------
    (N,) entropies; low = suspicious.
    """
    import torch

    x = _float_images(images)
    pool = _float_images(overlays)
    if len(pool) == 0:
        raise ValueError("STRIP needs held-out clean images to superimpose; none were given")
    if pool.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"overlays are {tuple(pool.shape[2:])} and images {tuple(x.shape[2:])}: give "
            "held-out images at the classifier's resolution"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (STRIP's overlays per image) must be a positive integer, got {n!r}")
    chosen = pool[np.random.default_rng(seed).integers(0, len(pool), size=n)]
    device = _device_of(model)
    chosen = chosen.to(device)
    out = np.empty(len(x))
    per = max(1, batch // n)  # images per forward pass
    with torch.no_grad():
        for start in range(0, len(x), per):
            xb = x[start : start + per].to(device)
            blends = (xb[:, None] + chosen[None]).clamp(0.0, 1.0).flatten(0, 1)
            logp = torch.log_softmax(model(blends).double(), dim=1)
            entropy = -(logp.exp() * logp).sum(dim=1)
            out[start : start + len(xb)] = entropy.view(len(xb), n).mean(dim=1).cpu().numpy()
    return out


# --------------------------------------------------------------------------- CD


def total_variation(mask: Any) -> Any:
    """(B,) TV of (B, C, H, W) masks: squared differences of vertical and horizontal
    neighbours, summed, over C H W."""
    _, c, h, w = mask.shape
    tv_h = (mask[:, :, 1:, :] - mask[:, :, :-1, :]).pow(2).sum(dim=(1, 2, 3))
    tv_w = (mask[:, :, :, 1:] - mask[:, :, :, :-1]).pow(2).sum(dim=(1, 2, 3))
    return (tv_h + tv_w) / (c * h * w)


def cd_objective(
    model: Any,
    x: Any,
    logits: Any,
    mask: Any,
    colour: Any,
    *,
    gamma: float = CD_GAMMA,
    beta: float = CD_BETA,
) -> Any:
    """Cognitive Distillation's objective per image (B,): the mean absolute change of the
    logits when x is kept where ``mask`` (B, 1, H, W) is 1 and replaced by ``colour``
    (B, 3, 1, 1) where it is 0, plus ``gamma`` ||mask||_1 plus ``beta`` TV(mask)."""
    blended = x * mask + (1.0 - mask) * colour
    change = (model(blended) - logits).abs().mean(dim=1)
    return change + gamma * mask.abs().sum(dim=(1, 2, 3)) + beta * total_variation(mask)


def cd_masks(
    model: Any,
    images: Any,
    *,
    steps: int = CD_STEPS,
    lr: float = CD_LR,
    gamma: float = CD_GAMMA,
    beta: float = CD_BETA,
    seed: int = 0,
    batch: int = 128,
) -> np.ndarray:
    """The distilled masks (N, H, W) in (0, 1) of Cognitive Distillation (module docstring).

    ``images``: (N, H, W, 3) uint8 (or floats in [0, 1]); ``model`` maps them, as floats in
    [0, 1], to logits. The random colours come from ``torch.Generator`` seeded ``seed`` per
    batch, so the same call gives the same masks."""
    import torch

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"steps (Cognitive Distillation's) must be a positive integer, got {steps!r}"
        )
    x_all = _float_images(images)
    device = _device_of(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    masks = []
    try:
        for start in range(0, len(x_all), batch):
            x = x_all[start : start + batch].to(device)
            b, c, h, w = x.shape
            generator = torch.Generator().manual_seed(seed + start)
            with torch.no_grad():
                logits = model(x)
            param = torch.ones(b, 1, h, w, device=device, requires_grad=True)
            optimiser = torch.optim.Adam([param], lr=lr, betas=(0.1, 0.1))
            for _ in range(steps):
                optimiser.zero_grad()
                mask = (torch.tanh(param) + 1.0) / 2.0
                colour = torch.rand(b, c, 1, 1, generator=generator).to(device)
                objective = cd_objective(model, x, logits, mask, colour, gamma=gamma, beta=beta)
                objective.sum().backward()  # summed: each image's mask its own problem
                optimiser.step()
            with torch.no_grad():
                masks.append(((torch.tanh(param) + 1.0) / 2.0)[:, 0].cpu().numpy())
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return np.concatenate(masks) if masks else np.zeros((0, 0, 0))


def cd_collapse_warning(norms: np.ndarray, pixels: int) -> str | None:
    """A one-line warning when every Cognitive Distillation mask has collapsed: each keeps
    less than half a pixel (||m||_1 < 0.5: not even a one-pixel trigger; gamma too large for
    the classifier's logit scale) or each leaves out less than half a pixel (too small); None
    otherwise, or for no masks. ``pixels``: H x W of the masks."""
    norms = np.asarray(norms, dtype=float)
    if norms.size == 0:
        return None
    off, on = norms.max() < 0.5, norms.min() > pixels - 0.5
    if not (off or on):
        return None
    return (
        f"every Cognitive Distillation mask is all {'off' if off else 'on'} (||m||_1 "
        f"{norms.min():.3g}..{norms.max():.3g} of {pixels} pixels): the cd ranking means "
        f"nothing; try a {'smaller' if off else 'larger'} --cd-gamma (it weighs the mask "
        "against the classifier's logit units)"
    )


def cd_norms(model: Any, images: Any, **options: Any) -> np.ndarray:
    """||m||_1 of each image's Cognitive Distillation mask (:func:`cd_masks`); small =
    suspicious."""
    return cd_masks(model, images, **options).reshape(len(images), -1).sum(axis=1)


# --------------------------------------------------------------------------- FCT


def _last_linear(model: Any) -> Any:
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("FCT needs a classifier ending in a linear layer (its features' input)")
    return linears[-1]


def penultimate_features(model: Any, x: Any) -> Any:
    """The input of ``model``'s last linear layer for the batch ``x`` (FCT's "activations of
    the last hidden layer")."""
    captured: list[Any] = []
    handle = _last_linear(model).register_forward_hook(
        lambda module, inputs, output: captured.append(inputs[0])
    )
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0].flatten(1)


def intra_class_loss(features: Any, labels: Any, num_classes: int) -> Any:
    """FCT's L_intra: the mean, over all pairs of the batch's class centres (their diagonal
    counted as 0), of the cosine similarity of the centres (each the mean feature of its class
    in the batch)."""
    import torch

    centres = [features[labels == k].mean(dim=0) for k in range(num_classes) if (labels == k).any()]
    c = torch.nn.functional.normalize(torch.stack(centres), dim=1)
    sim = c @ c.T
    return (sim - torch.diag(torch.diag(sim))).mean()


def fct_transform(x: Any, generator: Any) -> Any:
    """FCT's transformation of each image: a rotation by an angle uniform in [-180, 180]
    degrees, then a shift uniform in +-20% of the width and height (whole pixels), nearest
    neighbour, empty area black (torchvision's RandomRotation(180) then RandomAffine(0,
    translate=(0.2, 0.2)), as Chen et al.'s code composes them)."""
    import torch
    from torchvision.transforms.v2 import functional as tvf

    out = []
    _, _, h, w = x.shape
    for img in x:
        angle = float(torch.empty(1).uniform_(-180.0, 180.0, generator=generator))
        dx = round(float(torch.empty(1).uniform_(-0.2 * w, 0.2 * w, generator=generator)))
        dy = round(float(torch.empty(1).uniform_(-0.2 * h, 0.2 * h, generator=generator)))
        img = tvf.affine(img, angle=angle, translate=[0.0, 0.0], scale=1.0, shear=[0.0, 0.0])
        out.append(tvf.affine(img, angle=0.0, translate=[dx, dy], scale=1.0, shear=[0.0, 0.0]))
    return torch.stack(out)


def fct_scores(
    model: Any,
    images: Any,
    train_images: Any,
    train_labels: np.ndarray,
    *,
    epochs: int = 10,
    lr: float = 0.01,
    batch: int = 128,
    seed: int = 0,
) -> np.ndarray:
    """FCT (feature consistency towards transformations, Chen et al. 2022, as Huang et al.'s
    code runs it): a copy of ``model`` is fine-tuned for ``epochs`` with L_intra alone
    (:func:`intra_class_loss`; SGD, ``lr``, momentum 0.9, weight decay 5e-4) on the labelled
    ``train_images``; each image's score is then the mean squared change of its penultimate
    features under :func:`fct_transform`. A trigger does not survive the rotation and shift
    while an object's class does, so a poisoned image's features move MORE: high = suspicious.
    """
    import copy

    import torch

    x_train = _float_images(train_images)
    y_train = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    num_classes = int(y_train.max()) + 1
    tuned = copy.deepcopy(model)
    device = _device_of(tuned)
    optimiser = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(seed)
    tuned.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            features = penultimate_features(tuned, x_train[idx].to(device))
            loss = intra_class_loss(features, y_train[idx].to(device), num_classes)
            if not loss.requires_grad:  # no weight before the last layer: nothing to tune
                break
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    tuned.eval()
    x = _float_images(images)
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = x[start : start + batch]
            moved = fct_transform(xb, generator)
            f1 = penultimate_features(tuned, xb.to(device))
            f2 = penultimate_features(tuned, moved.to(device))
            out.append(((f1 - f2) ** 2).mean(dim=1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


# --------------------------------------------------------------------------- evaluation


def _check_methods(methods: Sequence[str], overlays: Any, fct_train: Any = None) -> None:
    unknown = [m for m in methods if m not in DETECTORS]
    if unknown or not methods:
        name = unknown[0] if unknown else ""
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    if "strip" in methods and overlays is None:
        raise ValueError(
            "STRIP needs held-out clean images: give --clean DIR (e.g. the clean test set)"
        )
    if "fct" in methods and fct_train is None:
        raise ValueError(
            "FCT fine-tunes on the classifier's labelled training set: give --fct-train DIR"
        )


def detection_scores(
    model: Any,
    images: Any,
    *,
    methods: Sequence[str] = DEFAULT_DETECTORS,
    overlays: Any = None,
    fct_train: tuple[Any, np.ndarray] | None = None,
    fct_epochs: int = FCT_EPOCHS,
    strip_n: int = STRIP_OVERLAYS,
    cd_steps: int = CD_STEPS,
    cd_gamma: float = CD_GAMMA,
    cd_beta: float = CD_BETA,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Suspicion scores (higher = more likely poisoned) of ``images`` per detector:
    ``strip`` minus STRIP's entropy (needs ``overlays``, held-out clean images), ``cd`` minus
    the Cognitive Distillation mask's l1 norm."""
    _check_methods(methods, overlays, fct_train)
    out: dict[str, np.ndarray] = {}
    if "strip" in methods:
        out["strip"] = -strip_entropy(model, images, overlays, n=strip_n, seed=seed)
    if "cd" in methods:
        out["cd"] = -cd_norms(
            model, images, steps=cd_steps, gamma=cd_gamma, beta=cd_beta, seed=seed
        )
    if "fct" in methods:
        assert fct_train is not None
        out["fct"] = fct_scores(model, images, *fct_train, epochs=fct_epochs, seed=seed)
    return out


def manifest_flags(ids: Sequence[str], manifest: str | Path) -> np.ndarray:
    """(N,) poison flags of the records ``ids`` (their paths in the dataset), from a
    manifest's ``written_as`` and ``poisoned`` columns (``alignscope poison`` writes one)."""
    from alignscope.io.manifest import read_manifest

    table = read_manifest(manifest, ("written_as", "poisoned"))
    flags = dict(zip(table["written_as"], table["poisoned"], strict=True))
    missing = [i for i in ids if i not in flags]
    if missing:
        raise ValueError(
            f"{manifest}: no row for record {missing[0]!r} ({len(missing)} of {len(ids)} "
            "records unlisted); give the manifest written with this dataset"
        )
    return np.array([bool(flags[i]) for i in ids])


def trigger_truth(
    data: str | Path,
    spec: str,
    *,
    threshold: float | None = None,
    pattern: np.ndarray | str | Path | None = None,
) -> dict[str, bool]:
    """Whether each image of ``data`` (by record id) holds the trigger, as the dissection
    decides it (:func:`alignscope.evaluate.detectors.detector_from_spec`): the template
    matcher of "badnets-1" / "badnets-2" / "picture-patch" (``pattern``: the picture the
    poisoning used, as an array or image file; None: the trigger's default), or a TorchScript
    detector file. The ground truth of a generated set, which has no manifest."""
    from alignscope.evaluate.detectors import detector_from_spec
    from alignscope.io.datasets import open_dataset

    detector = detector_from_spec(spec, threshold, pattern=pattern)
    ids, images = [], []
    for record, image in open_dataset(data).images():
        ids.append(record.id)
        images.append(np.asarray(image))
    return dict(zip(ids, detector(images).tolist(), strict=True))


def detect_backdoors(
    data: str | Path,
    classifier: str | Path,
    manifest: str | Path | None = None,
    *,
    truth: dict[str, bool] | None = None,
    clean: str | Path | None = None,
    fct_train: str | Path | None = None,
    fct_epochs: int = FCT_EPOCHS,
    methods: Sequence[str] = DEFAULT_DETECTORS,
    strip_n: int = STRIP_OVERLAYS,
    cd_steps: int = CD_STEPS,
    cd_gamma: float = CD_GAMMA,
    cd_beta: float = CD_BETA,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the detectors on the image set ``data`` with a ``classifier.pt`` and evaluate them
    against the ground truth, ``manifest`` (a poison manifest) or ``truth`` (record id ->
    poisoned, e.g. :func:`trigger_truth` of a generated set): AUROC, AUPRC and TPR at 1% and
    5% FPR per detector, plus the per-record scores. ``clean``: held-out clean images for
    STRIP (its overlays)."""
    if (manifest is None) == (truth is None):
        raise ValueError("give the ground truth as a poison manifest or a trigger detector")
    from alignscope.screen.evaluation import evaluate_scores
    from alignscope.train.classifier import load_classifier

    _check_methods(methods, clean, fct_train)  # before minutes of loading
    model, meta = load_classifier(classifier, device)
    images = _images_only(data, meta["resolution"])
    if truth is not None:
        flags = np.array([bool(truth[i]) for i in images[1]])
    else:
        flags = manifest_flags(images[1], manifest)
    overlays = _images_only(clean, meta["resolution"])[0] if clean is not None else None
    labelled = None
    if fct_train is not None and "fct" in methods:
        from alignscope.train.classifier import load_class_images

        train = load_class_images(
            fct_train, class_names=meta["class_names"], resolution=meta["resolution"]
        )
        labelled = (train.images, train.labels)
    if progress:
        print(f"detect: {len(flags)} images, {int(flags.sum())} poisoned", file=sys.stderr)
    scores = detection_scores(
        model,
        images[0],
        methods=methods,
        overlays=overlays,
        fct_train=labelled,
        fct_epochs=fct_epochs,
        strip_n=strip_n,
        cd_steps=cd_steps,
        cd_gamma=cd_gamma,
        cd_beta=cd_beta,
        seed=seed,
    )
    warnings = []
    if "cd" in scores:
        warning = cd_collapse_warning(-scores["cd"], images[0].shape[1] * images[0].shape[2])
        warnings += [warning] if warning else []
    note = None
    if flags.all() or not flags.any():
        # a generated set can hold no triggered image at all: the tables say so, no AUROC
        note = f"{'every' if flags.all() else 'no'} image is poisoned: no AUROC without both"
        keys = ("auroc", "auprc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr")
        metrics = {name: dict.fromkeys(keys) for name in scores}
    else:
        metrics = evaluate_scores(scores, flags)
        for result in metrics.values():
            result.pop("tradeoff")
    return {
        "data": str(data),
        "n": len(flags),
        "poisoned": int(flags.sum()),
        "metrics": metrics,
        "note": note,
        "warnings": warnings,
        "ids": list(images[1]),
        "flags": flags.tolist(),
        "scores": {k: v.tolist() for k, v in scores.items()},
    }


def _images_only(path: str | Path, resolution: int) -> tuple[np.ndarray, list[str]]:
    """(images resized to ``resolution``, ids) of a dataset, whatever its captions say."""
    from alignscope.io.datasets import open_dataset
    from alignscope.train.classifier import resize_square

    images, ids = [], []
    for record, image in open_dataset(path).images():
        arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        images.append(resize_square(arr, resolution))
        ids.append(record.id)
    if not images:
        raise ValueError(f"{path}: no decodable image")
    return np.stack(images), ids


# --------------------------------------------------------------------------- Tab. 3 / Tab. 4


def castle_walls_tables(
    detections: dict[str, dict[str, Any]], classifiers: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """BiBadDiff's Tab. 3 and Tab. 4 from :func:`detect_backdoors` reports and
    ``train classifier`` metrics, each keyed by set ("training set", "generation set").

    Tab. 3: per detector, the AUROC on each set and the generation set's gain. Tab. 4: per
    set, the TA and ASR of the classifier trained on it, and the ASR's drop."""
    sets = list(detections)
    detectors = sorted({d for r in detections.values() for d in r["metrics"]})
    tab3 = []
    for name in detectors:
        row: dict[str, Any] = {"detector": name}
        for s in sets:
            row[s] = detections[s]["metrics"].get(name, {}).get("auroc")
        if len(sets) == 2 and None not in (row[sets[0]], row[sets[1]]):
            row["improvement"] = row[sets[1]] - row[sets[0]]
        tab3.append(row)
    tab4 = [
        {"set": s, "ta": m.get("ta"), "asr": m.get("asr"), "n_train": m.get("n_train")}
        for s, m in classifiers.items()
    ]
    if len(tab4) == 2 and None not in (tab4[0]["asr"], tab4[1]["asr"]):
        tab4[1]["asr_reduction"] = tab4[0]["asr"] - tab4[1]["asr"]
    return {
        "tab3": tab3,
        "tab4": tab4,
        "sets": {s: {"n": r["n"], "poisoned": r["poisoned"]} for s, r in detections.items()},
    }


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def write_castle_walls_report(out: str | Path, tables: dict[str, Any]) -> tuple[Path, Path]:
    """``out/report.json`` (the tables) and ``out/report.html`` (the tables in the paper's
    layout), each written to a temporary file and renamed."""
    import html

    from alignscope._files import atomic_path

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    sets = list(tables["sets"])

    def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
            for r in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    sizes = ", ".join(
        f"{s}: {v['n']} images, {v['poisoned']} poisoned" for s, v in tables["sets"].items()
    )
    page = (
        "<!doctype html><meta charset='utf-8'><title>castle walls</title>"
        "<style>td,th{padding:2px 8px;text-align:right}</style>"
        "<h1>BiBadDiff's castle walls</h1>"
        f"<p>{html.escape(sizes)}</p>"
        "<h2>Tab. 3: detection AUROC</h2>"
        + table(tables["tab3"], ["detector", *sets, "improvement"])
        + "<h2>Tab. 4: classifiers trained on each set</h2>"
        + table(tables["tab4"], ["set", "n_train", "ta", "asr", "asr_reduction"])
    )
    json_path, html_path = root / "report.json", root / "report.html"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(tables, indent=2))
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return json_path, html_path
