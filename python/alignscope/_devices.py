"""Torch device arguments, checked before any model moves: a clear error instead of a driver
traceback from deep inside torch."""

from __future__ import annotations

import re


def check_device(device: object, name: str = "device") -> str:
    """Return ``device`` if it is "cpu", "cuda", "cuda:N" or "mps" and torch can use it.

    Raises
    ------
    ValueError naming ``name`` when the string is malformed or the device is not visible.
    """
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
        raise ValueError(f"{name} must be cpu, cuda, cuda:N or mps; got {device!r}")
    if device == "cpu":
        return device
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name} {device!r}: torch sees no CUDA device here "
                "(torch.cuda.is_available() is False); use cpu"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"{name} {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif not torch.backends.mps.is_available():
        raise ValueError(f"{name} 'mps': torch sees no Apple GPU here; use cpu")
    return device


def pick_device(device: object = None, name: str = "device") -> str:
    """The torch device to run on: ``device`` checked by :func:`check_device`, or, for None,
    "cuda" when torch sees a GPU and "cpu" otherwise.

    The one rule for every ``--device`` that defaults to the GPU when there is one (the
    classifiers, the availability poisons' surrogate, the defences), so that a bad or absent
    device gets the same message from each.

    Raises
    ------
    ValueError naming ``name`` when ``device`` is malformed or not visible.
    """
    if device is not None:
        return check_device(device, name)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def array_device(x: object) -> str | None:
    """Where ``x`` keeps its values when that is not host memory, else None.

    Recognises torch tensors on any non-CPU device ("cuda:0", "mps:0") and any object exposing
    ``__cuda_array_interface__`` (CuPy, Numba, JAX and torch CUDA arrays): reading such an
    object with ``np.asarray`` fails deep inside its library, or silently copies the whole
    array, so the entry points ask here first.
    """
    device = getattr(x, "device", None)
    kind = getattr(device, "type", None)
    if isinstance(kind, str) and kind != "cpu":
        return str(device)
    # On the instance, not its type: torch.Tensor defines the property for every tensor and it
    # raises AttributeError for CPU ones, which hasattr reads as "host memory".
    if hasattr(x, "__cuda_array_interface__"):
        return "a CUDA device (__cuda_array_interface__)"
    return None


def host_only_error(name: str, where: str) -> TypeError:
    """The one-line error for a device array handed to an entry point that reads host memory.

    The compiled CUDA bridge (``alignscope._cuda.pair_abs_sum_host``) takes host arrays and
    copies them to the GPU itself; it has no entry for device pointers and streams yet, so the
    message says to copy to the host rather than suggesting a backend that would not help.
    """
    return TypeError(
        f"{name} is in device memory on {where}; alignscope reads host arrays only (the CUDA "
        f"backend copies host rows to the GPU itself): pass {name}.cpu() for a torch tensor or "
        f"cupy.asnumpy({name}) for a CuPy array"
    )
