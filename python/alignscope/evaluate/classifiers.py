"""Class classifiers of BiBadDiff's dissection: does a generated image show its prompt's class?

A :class:`ClassClassifier` is CLIP zero-shot, a torchvision or timm architecture with the
user's trained weights, or a user's TorchScript classifier; the last two run through
:func:`~alignscope.evaluate._models.run_image_model` on ImageNet-normalised inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.embed.clip import ClipEncoder
from alignscope.evaluate._images import as_pil, image_list
from alignscope.evaluate._models import check_size, load_model_file, run_image_model

ZERO_SHOT = "clip"  # a dissection's classifier spec for CLIP zero-shot
CHECKPOINT_LIBRARIES = ("torchvision", "timm")  # a checkpoint spec is LIBRARY:NAME:WEIGHTS


def _check_class_names(class_names: Any) -> tuple[str, ...]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names must be a list of strings, got {type(class_names).__name__}")
    names = tuple(class_names)
    if not names:
        raise ValueError("class_names is empty: give at least one class name")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ValueError(f"class_names[{i}] must be a non-empty string, got {name!r}")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"class_names has {dup!r} more than once: names must be unique")
    return names


class ClassClassifier:
    """Predicts which of ``class_names`` an image shows.

    Build one with :meth:`zero_shot` (CLIP), :meth:`checkpoint` (torchvision / timm) or
    :meth:`torchscript`.
    """

    def __init__(
        self,
        class_names: tuple[str, ...],
        predict_images: Callable[[list[Any]], np.ndarray],
        kind: str,
    ) -> None:
        self.class_names = class_names
        self._predict_images = predict_images
        self.kind = kind

    @classmethod
    def zero_shot(
        cls, clip: ClipEncoder, class_names: Sequence[str], template: str = "a photo of a {}"
    ) -> ClassClassifier:
        """CLIP zero-shot classifier: the class whose prompt ``template.format(name)`` has the
        largest cosine similarity with the image.

        Parameters
        ----------
        clip : a :class:`~alignscope.embed.clip.ClipEncoder` (see ``load_clip``).
        class_names : the classes, e.g. ImageNette's ten.
        template : prompt with one ``{}`` for the class name.
        """
        if not (hasattr(clip, "encode_images") and hasattr(clip, "encode_texts")):
            raise TypeError(
                f"clip must be a ClipEncoder (alignscope.embed.clip.load_clip), "
                f"got {type(clip).__name__}"
            )
        names = _check_class_names(class_names)
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                f"template must be a string with exactly one '{{}}' for the class name, "
                f"got {template!r}"
            )
        texts = np.asarray(clip.encode_texts([template.format(n) for n in names]))

        def predict_images(images: list[Any]) -> np.ndarray:
            pil = [as_pil(im, f"images[{i}]") for i, im in enumerate(images)]
            sims = np.asarray(clip.encode_images(pil), dtype=np.float64) @ texts.T
            return np.argmax(sims, axis=1).astype(np.int64)

        return cls(names, predict_images, "zero-shot")

    @classmethod
    def torchscript(
        cls,
        path: str | Path,
        class_names: Sequence[str],
        size: int = 224,
        device: str = "cpu",
        *,
        trust_models: bool = False,
    ) -> ClassClassifier:
        """A user's TorchScript classifier (e.g. the paper's ResNet-50).

        The model takes a (n, 3, size, size) float32 batch: RGB images resized to size x size
        (bilinear, aspect not kept), scaled to [0, 1], normalised with the ImageNet mean and
        std; it returns (n, len(class_names)) logits (or probabilities) in the order of
        ``class_names``; ``trust_models`` runs the file without checking its operators.
        """
        model = load_model_file(path, device, trust_models)
        return cls._from_module(model, class_names, size, device, f"torchscript:{Path(path).name}")

    @classmethod
    def checkpoint(
        cls, spec: str, class_names: Sequence[str], size: int = 224, device: str = "cpu"
    ) -> ClassClassifier:
        """A torchvision or timm architecture with the user's trained weights.

        ``spec`` is ``torchvision:NAME:WEIGHTS`` or ``timm:NAME:WEIGHTS``: the architecture is
        built with ``num_classes=len(class_names)`` and the state dict (a ``.pth``, read with
        ``weights_only=True``; a ``state_dict`` or ``model`` entry and ``module.`` prefixes are
        accepted) is loaded strictly. Inputs are prepared as for :meth:`torchscript`.
        """
        library, _, rest = str(spec).partition(":")
        name, _, weights = rest.partition(":")
        if library not in CHECKPOINT_LIBRARIES or not name or not weights:
            raise ValueError(
                f"classifier spec must be torchvision:NAME:WEIGHTS or timm:NAME:WEIGHTS, "
                f"got {spec!r}"
            )
        if not Path(weights).is_file():
            raise ValueError(f"classifier weights {weights!r} do not exist")
        names = _check_class_names(class_names)
        import torch

        try:
            if library == "torchvision":
                import torchvision

                model = torchvision.models.get_model(name, weights=None, num_classes=len(names))
            else:
                import timm

                model = timm.create_model(name, pretrained=False, num_classes=len(names))
        except ImportError as exc:
            raise ValueError(f"classifier spec {spec!r} needs: pip install {library}") from exc
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(f"{library} has no model {name!r}: {exc}") from exc
        state = torch.load(weights, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"classifier weights {weights!r} do not fit {library}:{name} with "
                f"{len(names)} classes: {str(exc).splitlines()[0]}"
            ) from exc
        model = model.to(device).eval()
        return cls._from_module(model, names, size, device, f"{library}:{name}")

    @classmethod
    def _from_module(
        cls, model: Any, class_names: Sequence[str], size: int, device: str, kind: str
    ) -> ClassClassifier:
        names = _check_class_names(class_names)
        side = check_size(size)

        def predict_images(images: list[Any]) -> np.ndarray:
            out = run_image_model(model, images, side, device)
            if out.shape[1] != len(names):
                raise ValueError(
                    f"the classifier returned {out.shape[1]} logits per image for "
                    f"{len(names)} class_names: give the classes in the model's output order"
                )
            return np.argmax(out, axis=1).astype(np.int64)

        return cls(names, predict_images, kind)

    def predict(self, images: Sequence[Any]) -> np.ndarray:
        """Class indices.

        Parameters
        ----------
        images : n HWC uint8 RGB arrays or PIL images.

        Returns
        -------
        (n,) int64 indices into ``class_names``.
        """
        items = image_list(images)
        if not items:
            return np.zeros(0, dtype=np.int64)
        return self._predict_images(items)

    def __repr__(self) -> str:
        return f"ClassClassifier({self.kind!r}, {len(self.class_names)} classes)"


def is_checkpoint_spec(spec: str) -> bool:
    """Whether a classifier spec names a torchvision or timm checkpoint (LIBRARY:NAME:WEIGHTS)."""
    return spec.startswith(tuple(f"{library}:" for library in CHECKPOINT_LIBRARIES))


def classifier_from_spec(
    spec: str,
    class_names: Sequence[str],
    clip: ClipEncoder,
    device: str = "cpu",
    *,
    trust_models: bool = False,
) -> ClassClassifier:
    """The classifier a dissection's ``classifier`` names.

    Parameters
    ----------
    spec : :data:`ZERO_SHOT` ("clip": zero-shot with ``clip``), ``torchvision:NAME:WEIGHTS``,
        ``timm:NAME:WEIGHTS`` or a TorchScript file.
    class_names : the classes, in the model's output order.
    clip : the CLIP encoder of the zero-shot classifier.
    device : torch device of a checkpoint or TorchScript model.
    trust_models : run a TorchScript file without checking its operators.
    """
    if spec == ZERO_SHOT:
        return ClassClassifier.zero_shot(clip, class_names)
    if is_checkpoint_spec(spec):
        return ClassClassifier.checkpoint(spec, class_names, device=device)
    return ClassClassifier.torchscript(spec, class_names, device=device, trust_models=trust_models)
