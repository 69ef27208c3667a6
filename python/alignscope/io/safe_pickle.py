"""Reading the pickle-per-pair format ({"img": HWC uint8 array, "text": str}) without letting
the file run code, or crash the interpreter.

A pickle names the callables that rebuild its objects; a hostile one names os.system. The
restricted unpickler resolves only the few names a numpy array needs, and maps each to a
stand-in written here: numpy's own reconstruction code never sees the file's bytes (a fuzzed
pickle that reached it segfaulted the interpreter). The stand-ins validate shape, dtype and
buffer length, then build the array with ``np.frombuffer``. Every other global is refused with
an error that names it.

The opcodes that act on objects are narrowed to what numpy's pickles use: REDUCE may call only
the stand-ins, BUILD may set the state only of a dtype or array being rebuilt, and the opcodes
that create instances without their constructor (NEWOBJ, NEWOBJ_EX, OBJ, INST) are refused.
Without that, BUILD's ``setattr`` could turn the ndarray marker into a dtype that skipped the
allow-list (``__class__``), or change the stand-in classes for every later load.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any, ClassVar

import numpy as np

# Element types a pair image (or a simple array) can have. Each is a fixed-size number or
# boolean: the array holds no references (object dtype would need Python objects, which only
# code can make), every byte pattern of the right length is a value (a bool byte other than
# 0/1 is read as True), and ``np.frombuffer`` copies bytes without interpreting them. Refused:
# object ("O"), structured and void ("V", fields may be objects), subarray dtypes, strings
# ("S", "U"), complex, and datetime/timedelta (their unit travels in the dtype's metadata,
# which would need parsing, and no image is a date).
_DTYPES = {"u1", "i1", "b1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"}
_BYTE_ORDERS = ("<", ">", "|", "=")
_MAX_ELEMENTS = 1 << 31
# Budgets of one pair pickle (a dict with an image array and a caption needs a few dozen
# opcodes): a 6 KB pickle of memo references drove the unpickler to 94 s and 2.65 GB, one
# buffer referenced 1,500 times to 1.5 GB, and colliding dict keys to quadratic time.
_MAX_STEPS = 200_000  # opcodes executed
_MAX_DICT_ITEMS = 1_000  # items of any one dict
_MAX_NODES = 100_000  # containers and values visited when arrays are rebuilt
_MAX_ARRAY_BYTES = 512 * 2**20  # bytes of all arrays rebuilt (a 64-Mpixel RGB image is 192 MB)


class UnsafePickleError(ValueError):
    """The pickle asked for a global outside the pickle-per-pair format, or its array data
    is malformed."""


def _brief(value: object) -> str:
    """repr of a value read from the file, cut short: an error message stays one short line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _DType:
    """Stands in for numpy.dtype while unpickling: only the codes of :data:`_DTYPES`."""

    def __init__(self, code: object = None, align: object = False, copy: object = False) -> None:
        if not isinstance(code, str) or code not in _DTYPES:
            raise UnsafePickleError(f"unsupported array dtype {_brief(code)} in a pair pickle")
        self.code = code
        self.order = "|"

    def __setstate__(self, state: object) -> None:
        # numpy writes (3, order, subarray, names, fields, elsize, alignment, flags), and a 9th
        # item, metadata, as version 4. Sizes and flags follow from the code, so they are not
        # read; a subarray, fields or metadata would change what the code means: refused.
        if (
            not isinstance(state, tuple)
            or len(state) not in (8, 9)
            or state[0] not in (3, 4)
            or state[1] not in _BYTE_ORDERS
        ):
            raise UnsafePickleError("malformed dtype state in a pair pickle")
        metadata = state[8] if len(state) == 9 else None
        if any(part is not None for part in state[2:5]) or not (
            metadata is None or (type(metadata) is dict and not metadata)
        ):
            raise UnsafePickleError(
                f"a structured, subarray or annotated {self.code!r} dtype in a pair pickle; "
                f"arrays of {', '.join(sorted(_DTYPES))} only"
            )
        self.order = state[1]

    def numpy(self) -> np.dtype:
        # checked here too, where the dtype is used: the check must not depend on how the
        # object was made
        code, order = getattr(self, "code", None), getattr(self, "order", None)
        if type(self) is not _DType or code not in _DTYPES or order not in _BYTE_ORDERS:
            raise UnsafePickleError(f"unsupported array dtype {_brief(code)} in a pair pickle")
        return np.dtype(("=" if order in ("|", "=") else order) + code)


def _array(raw: object, dtype: object, shape: object, order: str = "C") -> np.ndarray:
    if isinstance(raw, pickle.PickleBuffer):
        raw = bytes(raw.raw())
    if not isinstance(raw, (bytes, bytearray)) or type(dtype) is not _DType:
        raise UnsafePickleError("malformed array data in a pair pickle")
    if not isinstance(shape, tuple) or not all(
        isinstance(s, int) and 0 <= s < _MAX_ELEMENTS for s in shape
    ):
        raise UnsafePickleError(f"malformed array shape {_brief(shape)} in a pair pickle")
    dt = dtype.numpy()
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count > _MAX_ELEMENTS or count * dt.itemsize != len(raw):
        raise UnsafePickleError("array data does not match its shape and dtype in a pair pickle")
    if order not in ("C", "F"):
        raise UnsafePickleError(f"malformed array order {_brief(order)} in a pair pickle")
    arr = np.frombuffer(bytes(raw), dtype=dt).reshape(shape, order=order).copy()
    if dt.kind == "b":  # a byte of 2 is True: store it as 1, the value numpy itself writes
        arr = arr.view(np.uint8).astype(bool)
    return arr


class _ArrayShell:
    """Stands in for numpy.ndarray under ``_reconstruct``: keeps the pickled state, which
    :func:`_finish` turns into an array after validating it."""

    def __init__(self) -> None:
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def build(self) -> np.ndarray:
        s = self.state
        if not isinstance(s, tuple) or len(s) != 5 or s[0] != 1:
            raise UnsafePickleError("malformed array state in a pair pickle")
        _, shape, dtype, fortran, raw = s
        return _array(raw, dtype, shape, "F" if fortran is True else "C")


class _NDArrayMarker:
    """Stands in for the class numpy.ndarray: only ever the first argument of
    :func:`_reconstruct` (never called, never given state)."""


def _reconstruct(cls: object, shape: object, code: object) -> _ArrayShell:
    """numpy's ``_reconstruct(ndarray, (0,), b"b")``: an empty array of the class, whose
    real dtype, shape and data come with the BUILD that follows. Only the plain ndarray class
    (no subclass: ``numpy.matrix``, masked arrays and the like are refused globals) and
    numpy's placeholder type code, or an allowed dtype, are accepted."""
    if cls is not _NDArrayMarker:
        raise UnsafePickleError(
            f"refused to rebuild {_name(cls)} as an array in a pair pickle; only numpy.ndarray"
        )
    if not (code in (b"b", "b") or type(code) is _DType):
        raise UnsafePickleError(f"unsupported array type code {_brief(code)} in a pair pickle")
    if not isinstance(shape, tuple) or not all(isinstance(s, int) for s in shape):
        raise UnsafePickleError(f"malformed array shape {_brief(shape)} in a pair pickle")
    return _ArrayShell()


def _frombuffer(buf: object, dtype: object, shape: object, order: object) -> np.ndarray:
    return _array(buf, dtype, shape, order if isinstance(order, str) else "?")


def _scalar(dtype: object, data: object = b"") -> Any:
    return _array(data, dtype, ())[()]


def _latin1(text: object, encoding: object = "latin1") -> bytes:
    """Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("malformed bytes in a pair pickle")
    return text.encode("latin-1")


_ALLOWED = {
    ("_codecs", "encode"): _latin1,
    ("numpy", "ndarray"): _NDArrayMarker,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
}
# What REDUCE may call (the marker class is not among them: calling it would make an instance
# whose state BUILD could then set).
_CALLABLE = (_latin1, _DType, _reconstruct, _frombuffer, _scalar)


def _name(obj: object) -> str:
    """How an error names ``obj``: the global a stand-in replaces, or the value's type."""
    for (module, name), standin in _ALLOWED.items():
        if obj is standin:
            return f"{module}.{name}"
    return f"a {type(obj).__name__}"


def _load_reduce(self: Any) -> None:
    """REDUCE, calling only a stand-in, with a tuple of arguments."""
    args = self.stack.pop()
    func = self.stack[-1]
    if not any(func is allowed for allowed in _CALLABLE):
        raise UnsafePickleError(f"refused to call {_name(func)} in a pair pickle")
    if not isinstance(args, tuple):
        raise UnsafePickleError("malformed call arguments in a pair pickle")
    self.stack[-1] = func(*args)


def _load_build(self: Any) -> None:
    """BUILD, only on a dtype or array being rebuilt (whose ``__setstate__`` validates). The
    stock BUILD sets attributes of any object: of a stand-in class or function, which would
    change it for every later load, or ``__class__``, which turned the ndarray marker into a
    dtype that never passed the allow-list (a void, string or datetime array loaded)."""
    state = self.stack.pop()
    inst = self.stack[-1]
    if type(inst) not in (_DType, _ArrayShell):
        raise UnsafePickleError(
            f"refused to set the state of {_name(inst)} in a pair pickle (only dtypes and "
            "arrays have state)"
        )
    inst.__setstate__(state)


def _refused_opcode(name: str) -> Any:
    def refuse(self: Any) -> None:
        raise UnsafePickleError(
            f"refused pickle opcode {name}: it makes objects without their constructor, which "
            "numpy's array pickles never do"
        )

    return refuse


def _load_bytearray8(self: Any) -> None:
    """BYTEARRAY8 without pre-allocating the declared length (the stock loader allocates it
    first: a fuzzed 700 GB length must be an error, not an allocation)."""
    head = self.read(8)
    if len(head) < 8:
        raise UnsafePickleError("a pair pickle ends inside a length field")
    (n,) = struct.unpack("<Q", head)
    if n > self._size:
        raise UnsafePickleError(f"a length of {n} bytes exceeds the pickle's {self._size} bytes")
    data = self.read(n)
    if len(data) < n:
        raise UnsafePickleError("a pair pickle ends inside a bytearray")
    self.append(bytearray(data))


def _counted(step: Any) -> Any:
    """An opcode handler that counts the steps of the whole load against _MAX_STEPS."""

    def counted(self: Any) -> None:
        self._steps += 1
        if self._steps > _MAX_STEPS:
            raise UnsafePickleError(f"pair pickle runs more than {_MAX_STEPS:,} opcodes")
        step(self)

    return counted


def _bounded_setitems(step: Any) -> Any:
    def setitems(self: Any) -> None:
        step(self)
        top = self.stack[-1] if self.stack else None
        if isinstance(top, dict) and len(top) > _MAX_DICT_ITEMS:
            raise UnsafePickleError(f"a dict in a pair pickle has over {_MAX_DICT_ITEMS:,} items")

    return setitems


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python unpickler (every step in Python: fuzzed input crashed the C one) with
    a global allow-list, calls and state only for the stand-ins, no out-of-band buffers or
    persistent ids, a bounded BYTEARRAY8, and budgets of opcodes and dict sizes."""

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.BUILD[0]] = _load_build
    for _name_, _code in (
        ("NEWOBJ", pickle.NEWOBJ),
        ("NEWOBJ_EX", pickle.NEWOBJ_EX),
        ("OBJ", pickle.OBJ),
        ("INST", pickle.INST),
    ):
        dispatch[_code[0]] = _refused_opcode(_name_)
    for _code in (pickle.SETITEM, pickle.SETITEMS):
        dispatch[_code[0]] = _bounded_setitems(dispatch[_code[0]])
    for _code in (
        pickle.NEXT_BUFFER,
        pickle.READONLY_BUFFER,
        pickle.PERSID,
        pickle.BINPERSID,
        pickle.EXT1,
        pickle.EXT2,
        pickle.EXT4,
    ):
        dispatch.pop(_code[0], None)
    dispatch = {code: _counted(step) for code, step in dispatch.items()}

    def __init__(self, data: bytes) -> None:
        self._size = len(data)
        self._steps = 0
        super().__init__(io.BytesIO(data))

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        raise UnsafePickleError(
            f"refused to load global {module}.{name}: the pickle-per-pair format needs only "
            "numpy arrays, dicts and strings (pass trust_pickles=True / --trust-pickles only "
            "for files you trust: a pickle can run any code)"
        )


class _Budget:
    """What :func:`_finish` may still spend: memo references make a small pickle a large DAG,
    which rebuilding would expand into a tree (nodes) or copy (array bytes) many times."""

    def __init__(self) -> None:
        self.nodes = _MAX_NODES
        self.array_bytes = _MAX_ARRAY_BYTES


def _finish(obj: object, depth: int = 0, budget: _Budget | None = None) -> object:
    """Replace array stand-ins by arrays (inside dicts, lists and tuples, a few levels deep),
    within the node and byte budgets."""
    budget = budget or _Budget()
    budget.nodes -= 1
    if budget.nodes < 0:
        raise UnsafePickleError(f"a pair pickle with over {_MAX_NODES:,} values")
    if depth > 8:
        raise UnsafePickleError("a pair pickle nested too deeply")
    if isinstance(obj, _ArrayShell):
        s = obj.state
        raw = s[4] if isinstance(s, tuple) and len(s) == 5 else b""
        budget.array_bytes -= len(raw) if isinstance(raw, (bytes, bytearray)) else 0
        if budget.array_bytes < 0:
            raise UnsafePickleError(
                f"a pair pickle whose arrays hold over {_MAX_ARRAY_BYTES:,} bytes"
            )
        return obj.build()
    if isinstance(obj, _DType) or any(obj is standin for standin in _ALLOWED.values()):
        # a stand-in is no data: only the arrays it rebuilds are
        what = "numpy.dtype" if isinstance(obj, _DType) else _name(obj)
        raise UnsafePickleError(f"a bare {what} in a pair pickle, not an array")
    if isinstance(obj, dict):
        return {k: _finish(v, depth + 1, budget) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish(v, depth + 1, budget) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v, depth + 1, budget) for v in obj)
    return obj


def load_pair_pickle(data: bytes, *, trust: bool = False) -> Any:
    """Unpickle one pair file; ``trust`` switches to the full (code-executing) unpickler."""
    if trust:  # the user's explicit choice: this runs whatever the file says
        return pickle.loads(data)
    try:
        return _finish(_RestrictedUnpickler(bytes(data)).load())
    except UnsafePickleError:
        raise
    except (
        pickle.UnpicklingError,
        struct.error,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        UnicodeDecodeError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as exc:
        raise UnsafePickleError(f"unreadable pair pickle: {type(exc).__name__}: {exc}") from exc
