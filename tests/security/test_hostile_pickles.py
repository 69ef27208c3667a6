"""Hand-built pickles against the restricted unpickler's array path: the dtype allow-list holds
for every object the reconstruction receives, and no opcode changes the stand-ins."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from alignscope.io import safe_pickle
from alignscope.io.safe_pickle import UnsafePickleError, load_pair_pickle

# ---- a small pickle assembler (protocol 4 opcodes; see pickletools for their meaning)
PROTO, STOP, MARK, TUPLE, EMPTY_TUPLE = b"\x80\x04", b".", b"(", b"t", b")"
TUPLE1, TUPLE2, TUPLE3 = b"\x85", b"\x86", b"\x87"
REDUCE, BUILD, NONE = b"R", b"b", b"N"
EMPTY_DICT, SETITEM, NEWTRUE, NEWFALSE, NEWOBJ = b"}", b"s", b"\x88", b"\x89", b"\x81"


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def raw(data: bytes) -> bytes:
    return b"C" + bytes([len(data)]) + data


def integer(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def shape(*dims: int) -> bytes:
    return MARK + b"".join(integer(d) for d in dims) + TUPLE


def dtype(code: str, state: bytes | None = None) -> bytes:
    """numpy.dtype(code, False, True) with BUILD state (numpy's own by default)."""
    if state is None:
        state = dtype_state()
    return (
        glob("numpy", "dtype") + text(code) + NEWFALSE + NEWTRUE + TUPLE3 + REDUCE + state + BUILD
    )


def dtype_state(
    version: int = 3, subarray: bytes = NONE, names: bytes = NONE, fields: bytes = NONE
) -> bytes:
    items = integer(version) + text("|") + subarray + names + fields
    return MARK + items + integer(-1) + integer(-1) + integer(0) + TUPLE


def frombuffer(data: bytes, dtype_ops: bytes, dims: tuple[int, ...]) -> bytes:
    return (
        glob("numpy._core.numeric", "_frombuffer")
        + MARK
        + raw(data)
        + dtype_ops
        + shape(*dims)
        + text("C")
        + TUPLE
        + REDUCE
    )


def pair(img_ops: bytes) -> bytes:
    return PROTO + EMPTY_DICT + text("img") + img_ops + SETITEM + STOP


def test_the_assembler_builds_pickles_that_load():
    """The positive control: the hand-built form of an allowed array loads as numpy made it."""
    loaded = load_pair_pickle(pair(frombuffer(bytes(range(6)), dtype("u1"), (2, 3))))
    np.testing.assert_array_equal(loaded["img"], np.arange(6, dtype=np.uint8).reshape(2, 3))


ALLOWED = ["u1", "i1", "b1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("code", ALLOWED)
def test_every_allowed_dtype_loads_as_numpy_pickled_it(code, order):
    want = np.arange(12).reshape(3, 4).astype(order + code)
    for protocol in (2, 5):  # _reconstruct + BUILD, and _frombuffer
        got = load_pair_pickle(pickle.dumps({"img": want, "x": want[0, 1]}, protocol=protocol))
        assert got["img"].dtype == want.dtype and got["x"].dtype == want[0, 1].dtype
        np.testing.assert_array_equal(got["img"], want)
        assert got["x"] == want[0, 1]


def test_a_bool_byte_other_than_0_or_1_loads_as_a_plain_true():
    loaded = load_pair_pickle(pair(frombuffer(b"\x00\x02\x01", dtype("b1"), (3,))))["img"]
    assert loaded.tolist() == [False, True, True]
    assert loaded.view(np.uint8).tolist() == [0, 1, 1]  # numpy's own encoding of True


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (np.array([None, 1], dtype=object), "O8"),
        (np.zeros(2, dtype=[("a", "O")]), "V8"),  # an object field in a structured dtype
        (np.zeros(2, dtype=[("a", "u1"), ("b", "f4")]), "V5"),
        (np.zeros(2, dtype="V8"), "V8"),
        (np.zeros(2, dtype="M8[ns]"), "M8"),
        (np.zeros(2, dtype="c8"), "c8"),
        (np.zeros(2, dtype="S3"), "S3"),
    ],
    ids=["object", "object-field", "structured", "void", "datetime", "complex", "bytes"],
)
def test_numpy_pickles_of_other_dtypes_are_refused(value, code):
    for protocol in (2, 5):
        with pytest.raises(
            UnsafePickleError, match=rf"^unsupported array dtype '{code}' in a pair pickle$"
        ):
            load_pair_pickle(pickle.dumps({"img": value}, protocol=protocol))


_FIELDS = EMPTY_DICT + text("a") + dtype("u1") + integer(0) + TUPLE2 + SETITEM
_METADATA = EMPTY_DICT + text("unit") + text("ns") + SETITEM  # numpy's 9th item, version 4
_STANDINS = [getattr(safe_pickle, n) for n in ("_NDArrayMarker", "_DType", "_latin1")]

HOSTILE = {
    # an allowed code whose state adds fields (the fields could hold objects)
    "fields-on-an-allowed-code": (
        pair(
            frombuffer(
                b"\x00" * 2,
                dtype("u1", dtype_state(names=text("a") + TUPLE1, fields=_FIELDS)),
                (2,),
            )
        ),
        r"^a structured, subarray or annotated 'u1' dtype in a pair pickle; arrays of ",
    ),
    "subarray-on-an-allowed-code": (
        pair(frombuffer(b"\x00" * 2, dtype("u1", dtype_state(subarray=dtype("u1"))), (2,))),
        r"^a structured, subarray or annotated 'u1' dtype",
    ),
    "metadata-on-an-allowed-code": (
        pair(frombuffer(b"\x00" * 2, dtype("u1", dtype_state(4)[:-1] + _METADATA + TUPLE), (2,))),
        r"^a structured, subarray or annotated 'u1' dtype",
    ),
    # the marker class (numpy.ndarray) called for an instance, whose BUILD set __class__ to the
    # dtype stand-in and code "V8": a void array loaded past the allow-list (so did complex,
    # datetime and bytes; numpy itself refused only object)
    "ndarray-instance-made-a-dtype": (
        pair(
            frombuffer(
                b"A" * 8,
                glob("numpy", "ndarray")
                + EMPTY_TUPLE
                + REDUCE
                + EMPTY_DICT
                + text("code")
                + text("V8")
                + SETITEM
                + text("order")
                + text("|")
                + SETITEM
                + EMPTY_DICT
                + text("__class__")
                + glob("numpy", "dtype")
                + SETITEM
                + TUPLE2
                + BUILD,
                (1,),
            )
        ),
        r"^refused to call numpy\.ndarray in a pair pickle$",
    ),
    # BUILD on the stand-in classes and functions: the stock BUILD sets their attributes, for
    # every later load in the process
    "state-of-the-ndarray-class": (
        pair(
            glob("numpy", "ndarray")
            + NONE
            + EMPTY_DICT
            + text("poisoned")
            + NEWTRUE
            + SETITEM
            + TUPLE2
            + BUILD
        ),
        r"^refused to set the state of numpy\.ndarray in a pair pickle \(only dtypes and arrays "
        r"have state\)$",
    ),
    "state-of-a-function": (
        pair(glob("_codecs", "encode") + EMPTY_DICT + text("poisoned") + NEWTRUE + SETITEM + BUILD),
        r"^refused to set the state of _codecs\.encode in a pair pickle",
    ),
    "class-of-a-dtype": (  # a dtype's BUILD goes to its own __setstate__, which validates
        pair(
            glob("numpy", "dtype")
            + text("u1")
            + TUPLE1
            + REDUCE
            + NONE
            + EMPTY_DICT
            + text("__class__")
            + glob("numpy", "ndarray")
            + SETITEM
            + TUPLE2
            + BUILD
        ),
        r"^malformed dtype state in a pair pickle$",
    ),
    # instances made without their constructor (the dtype check is in __init__)
    "newobj-dtype": (
        pair(glob("numpy", "dtype") + EMPTY_TUPLE + NEWOBJ + dtype_state() + BUILD),
        r"^refused pickle opcode NEWOBJ: ",
    ),
    "inst-dtype": (
        pair(MARK + b"inumpy\ndtype\n" + dtype_state() + BUILD),
        r"^refused pickle opcode INST: ",
    ),
    # what _reconstruct receives: the class to rebuild and numpy's placeholder type code
    "reconstruct-another-class": (
        pair(
            glob("numpy._core.multiarray", "_reconstruct")
            + glob("numpy", "dtype")
            + shape(0)
            + raw(b"b")
            + TUPLE3
            + REDUCE
        ),
        r"^refused to rebuild numpy\.dtype as an array in a pair pickle; only numpy\.ndarray$",
    ),
    "reconstruct-object-code": (
        pair(
            glob("numpy._core.multiarray", "_reconstruct")
            + glob("numpy", "ndarray")
            + shape(0)
            + text("O")
            + TUPLE3
            + REDUCE
        ),
        r"^unsupported array type code 'O' in a pair pickle$",
    ),
    "scalar-of-an-object-dtype": (
        pair(
            glob("numpy._core.multiarray", "scalar")
            + dtype("O8")
            + raw(b"\x00" * 8)
            + TUPLE2
            + REDUCE
        ),
        r"^unsupported array dtype 'O8' in a pair pickle$",
    ),
    "a-bare-function": (
        pair(glob("_codecs", "encode")),
        r"^a bare _codecs\.encode in a pair pickle, not an array$",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hand_built_pickles_through_the_array_path_are_refused(case):
    data, message = HOSTILE[case]
    before = [dict(vars(s)) for s in _STANDINS]
    with pytest.raises(UnsafePickleError, match=message):
        load_pair_pickle(data)
    assert [dict(vars(s)) for s in _STANDINS] == before  # the stand-ins are as they were
    # and the next file loads as usual
    img = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    np.testing.assert_array_equal(load_pair_pickle(pickle.dumps({"img": img}))["img"], img)


def test_a_refused_pickle_is_a_listed_record_of_its_dataset(tmp_path):
    from alignscope.io.datasets import open_dataset

    img = np.zeros((8, 8, 3), np.uint8)
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"img": img, "text": "fine"}))
    (tmp_path / "b.pkl").write_bytes(HOSTILE["state-of-the-ndarray-class"][0])
    ds = open_dataset(tmp_path)
    assert [r.id for r, _ in ds.images()] == ["a.pkl"]
    assert ds.skipped == [
        (
            "b.pkl",
            "unreadable pickle: refused to set the state of numpy.ndarray in a pair pickle "
            "(only dtypes and arrays have state)",
        )
    ]
