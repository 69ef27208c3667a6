"""Reading the pickle-per-pair format ({"img": HWC uint8 array, "text": str}) without letting
the file run code.

A pickle names the callables that rebuild its objects; a hostile one names os.system. The
restricted unpickler resolves only what a numpy array, a dict and strings need and refuses
every other global with an error that names it.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

# (module, name) pairs a pickled numpy array needs, across numpy 1.x and 2.x module paths.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"),
}


class UnsafePickleError(ValueError):
    """The pickle asked for a global outside the pickle-per-pair format."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refused to load global {module}.{name}: the pickle-per-pair format needs only "
            "numpy arrays, dicts and strings (pass trust_pickles=True / --trust-pickles only "
            "for files you trust: a pickle can run any code)"
        )


def load_pair_pickle(data: bytes, *, trust: bool = False) -> Any:
    """Unpickle one pair file; ``trust`` switches to the full (code-executing) unpickler."""
    if trust:
        return pickle.loads(data)
    return _RestrictedUnpickler(io.BytesIO(data)).load()
