"""Short seeded fuzz runs (the long ones: benchmarks/fuzz.py) of every reader and the command
line. Each input is either random bytes or a valid file with a few bytes overwritten and maybe
cut short. A reader fails only with the error its docstring names; when it succeeds its result
is checked: a decoded image has the size its header declares (and, for an untouched file, the
pixels written), a parsed pair has a str caption and an image of its array's size, a store
that opens has its views' rows aligned and the values numpy reads from the files."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from alignscope.cli import main  # noqa: E402
from alignscope.io import open_store  # noqa: E402
from alignscope.io.datasets import (  # noqa: E402
    MAX_IMAGE_PIXELS,
    BadImage,
    clean_caption,
    decode_image,
    open_dataset,
)
from alignscope.io.safe_pickle import UnsafePickleError, load_pair_pickle  # noqa: E402

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLEAR = (ValueError, FileNotFoundError)  # BadImage and UnsafePickleError are ValueErrors
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@st.composite
def damaged(draw, data: bytes) -> tuple[bytes, bool]:
    """``data`` with up to 4 bytes overwritten and maybe cut short; and whether it is intact."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return bytes(out), bytes(out) == data


@st.composite
def png_images(draw) -> tuple[bytes, np.ndarray, bool]:
    """(bytes, the RGB pixels written, intact) of a small PNG in one of PIL's modes."""
    w, h = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1"]))
    pixels = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, (h, w, 3))
    image = Image.fromarray(pixels.astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data, intact = draw(damaged(buf.getvalue()))
    return data, np.asarray(image.convert("RGB")), intact


def _png_declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG's IHDR chunk, read from the bytes; None when not a PNG."""
    if not data.startswith(PNG_SIGNATURE) or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


@FUZZ
@given(st.one_of(st.binary(max_size=2048).map(lambda b: (b, None, False)), png_images()))
def test_image_decoder(case):
    data, pixels, intact = case
    try:
        image = decode_image(data)
    except BadImage:
        assert not intact  # an untouched PNG always decodes
        return
    assert image.mode == "RGB" and image.width * image.height <= MAX_IMAGE_PIXELS
    declared = _png_declared_size(data)
    if declared is not None:
        assert image.size == declared
    if intact:
        np.testing.assert_array_equal(np.asarray(image), pixels)


ARRAYS = st.tuples(
    st.sampled_from([np.uint8, np.uint8, np.int16, np.float32, np.bool_]),
    st.lists(st.integers(0, 6), min_size=1, max_size=4),
)


def _is_hwc_uint8(a: np.ndarray) -> bool:
    """The documented input of decode_image: (H, W) or (H, W, 1|3|4) uint8, H, W >= 1."""
    channels_ok = a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))
    return a.dtype == np.uint8 and channels_ok and a.shape[0] >= 1 and a.shape[1] >= 1


def _as_rgb(a: np.ndarray) -> np.ndarray:
    """The RGB pixels of an HWC uint8 array: grey repeated, alpha dropped."""
    if a.ndim == 2:
        a = a[:, :, None]
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[:, :, :3]


@FUZZ
@given(ARRAYS)
def test_image_decoder_arrays(spec):
    dtype, shape = spec
    a = (np.arange(int(np.prod(shape))) * 37 % 256).astype(dtype).reshape(shape)
    try:
        image = decode_image(a)
    except BadImage:
        assert not _is_hwc_uint8(a)
        return
    assert _is_hwc_uint8(a)
    assert image.mode == "RGB" and image.size == (a.shape[1], a.shape[0])
    np.testing.assert_array_equal(np.asarray(image), _as_rgb(a))


# What a pickle's "img" may hold besides an array: the restricted unpickler allows any plain
# object, and a nested list may be ragged.
NOT_ARRAYS = st.one_of(
    st.recursive(st.integers(-300, 300), lambda inner: st.lists(inner, max_size=3), max_leaves=8),
    st.text(max_size=4),
    st.none(),
)


@st.composite
def pair_pickles(draw) -> tuple[bytes, dict, bool]:
    """(bytes, the pair written, intact) of a pickled {"img": array, "text": str} pair."""
    shape = draw(st.sampled_from([(4, 3, 3), (2, 5), (3, 2, 4), (1, 1, 1), (2, 2, 2)]))
    dtype = draw(st.sampled_from([np.uint8, np.uint8, np.float32]))
    img = (np.arange(int(np.prod(shape))) * 29 % 256).astype(dtype).reshape(shape)
    pair = {
        "img": img if draw(st.integers(0, 3)) else draw(NOT_ARRAYS),
        "text": draw(st.text(max_size=12)),
    }
    data, intact = draw(damaged(pickle.dumps(pair, protocol=draw(st.integers(2, 5)))))
    return data, pair, intact


_PLAIN = (dict, list, tuple, str, bytes, bytearray, int, float, complex, bool, type(None))


def _only_plain_objects(obj: object, depth: int = 0) -> None:
    """No stand-in of the restricted unpickler survives into the result."""
    assert depth < 12
    assert isinstance(obj, (*_PLAIN, np.ndarray, np.generic)), type(obj)
    if isinstance(obj, dict):
        for k, v in obj.items():
            _only_plain_objects(k, depth + 1)
            _only_plain_objects(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _only_plain_objects(v, depth + 1)


def _pickled(pair: dict, protocol: int = 5) -> tuple[bytes, dict, bool]:
    return pickle.dumps(pair, protocol=protocol), pair, True


@FUZZ
@given(st.one_of(st.binary(max_size=4096).map(lambda b: (b, None, False)), pair_pickles()))
@example(_pickled({"img": [[1, 2], [3]], "text": "ragged"}))  # no array can hold it
@example(_pickled({"img": np.zeros((0, 4, 3), np.uint8), "text": "empty"}))  # no pixels
def test_pair_pickles(tmp_path_factory, case):
    data, pair, intact = case
    try:
        parsed = load_pair_pickle(data)
    except UnsafePickleError:  # the one clear error; the reader lists the file as skipped
        assert not intact
        parsed = None
    else:
        _only_plain_objects(parsed)
        if intact and isinstance(pair["img"], np.ndarray):
            assert parsed["text"] == pair["text"] and parsed["img"].dtype == pair["img"].dtype
            np.testing.assert_array_equal(parsed["img"], pair["img"])
        elif intact:
            assert parsed == pair
    # the pickle-per-pair reader on the same file
    root = tmp_path_factory.mktemp("pkl")
    (root / "x.pkl").write_bytes(data)
    ds = open_dataset(root)
    records = list(ds)
    is_pair = isinstance(parsed, dict) and "img" in parsed
    # every file is a record; one the reader cannot use fails to load, saying why
    assert [r.id for r in records] == ["x.pkl"]
    record = records[0]
    text = parsed.get("text") if is_pair else None
    if not is_pair or not (text is None or isinstance(text, (str, bytes))):
        assert record.caption == ""
        reason = r"^(unreadable pickle|not a \{'img'|'text' of the pair)"
        with pytest.raises(BadImage, match=reason):
            record.load()
        return
    assert record.caption == clean_caption(text)
    assert isinstance(record.caption, str)
    try:
        image = record.load()
    except BadImage:
        assert not (isinstance(parsed["img"], np.ndarray) and _is_hwc_uint8(parsed["img"]))
        return
    img = parsed["img"]
    assert isinstance(img, np.ndarray) and _is_hwc_uint8(img)
    assert image.mode == "RGB" and image.size == (img.shape[1], img.shape[0])
    np.testing.assert_array_equal(np.asarray(image), _as_rgb(img))


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _small_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (3, 2, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@st.composite
def webdataset_shards(draw) -> tuple[bytes, list[tuple[str, str, bytes]], bool]:
    """(bytes, the (key, caption, png) samples written, intact) of a webdataset shard."""
    samples = [
        (f"s{i}", draw(st.text(max_size=8)), _small_png(i)) for i in range(draw(st.integers(1, 3)))
    ]
    members = []
    for key, caption, png in samples:
        members += [(f"{key}.png", png), (f"{key}.txt", caption.encode("utf-8", "replace"))]
    data, intact = draw(damaged(_tar(members)))
    return data, samples, intact


@FUZZ
@given(st.one_of(st.binary(max_size=4096).map(lambda b: (b, None, False)), webdataset_shards()))
def test_webdataset_tars(tmp_path_factory, case):
    data, samples, intact = case
    root = tmp_path_factory.mktemp("tar")
    (root / "x.tar").write_bytes(data)
    ds = open_dataset(root / "x.tar")
    records = list(ds)  # a damaged archive ends the shard with a warning, never an error
    for record in records:
        assert isinstance(record.id, str) and record.id.startswith("x/")
        assert isinstance(record.caption, str)
        try:
            image = record.load()
        except BadImage:
            assert not intact
        else:
            assert image.mode == "RGB"
    if intact:
        assert ds.warnings == []
        assert [(r.id, r.caption) for r in records] == [
            (f"x/{key}", clean_caption(caption.encode("utf-8", "replace")))
            for key, caption, _ in samples
        ]
        for record, (_, _, png) in zip(records, samples, strict=True):
            expected = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            np.testing.assert_array_equal(np.asarray(record.load()), expected)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a.jpg", "a.txt", "b.png", "../c.png", "/d.png", "e.json"]),
            st.binary(max_size=256),
        ),
        max_size=6,
    )
)
def test_webdataset_members(tmp_path_factory, members):
    root = tmp_path_factory.mktemp("tarm")
    (root / "x.tar").write_bytes(_tar(members))
    ds = open_dataset(root / "x.tar")
    records = [record for record, _ in ds.images()]
    # members outside the archive are refused, each with a warning, never read
    unsafe = [name for name, _ in members if name.startswith(("/", ".."))]
    refused = [w for w in ds.warnings if "path outside the archive" in w]
    assert len(refused) == len(unsafe)
    for name, warning in zip(unsafe, refused, strict=True):
        assert repr(name) in warning
    # webdataset groups consecutive members by key; a group with an image is a sample
    groups: list[tuple[str, dict[str, bytes]]] = []
    for name, data in members:
        if name.startswith(("/", "..")):
            continue
        key, ext = name.split(".")
        if not groups or groups[-1][0] != key:
            groups.append((key, {}))
        groups[-1][1][ext] = data
    samples = [(key, g) for key, g in groups if "jpg" in g or "png" in g]
    # a key that comes back after another one is a new sample with the same id: made unique
    by_id: dict[str, dict[str, bytes]] = {}
    seen: dict[str, int] = {}
    for key, group in samples:
        rid = f"x/{key}"
        seen[rid] = seen.get(rid, 0) + 1
        by_id[rid if seen[rid] == 1 else f"{rid}#{seen[rid]}"] = group
    loaded = set(by_id)
    assert {r.id for r in records} <= loaded
    assert {r.id for r in records} | {rid for rid, _ in ds.skipped} == loaded
    for record in records:
        assert record.caption == clean_caption(by_id[record.id].get("txt"))


def _npy(dtype: type, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, (np.arange(int(np.prod(shape))) - 3).astype(dtype).reshape(shape))
    return buf.getvalue()


@st.composite
def npy_files(draw) -> tuple[bytes, bool]:
    """(bytes, intact) of a small .npy array of a store dtype (or not), maybe damaged."""
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64, np.int8]))
    shape = draw(st.sampled_from([(3, 4), (1, 2), (5, 1), (4,), (2, 2, 2), (0, 3)]))
    return draw(damaged(_npy(dtype, shape)))


def _numpy_reads(path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except Exception:  # any header or length numpy itself refuses
        return None


@FUZZ
@given(
    st.one_of(st.binary(max_size=512).map(lambda b: (b, False)), npy_files()),
    st.sampled_from([None, 3, 5]),
)
@example((_npy(np.float32, (3, 4)), True), 3)  # aligned views open
@example((_npy(np.float32, (3, 4)), True), 5)  # misaligned views are refused
@example((_npy(np.float64, (4,)), True), None)  # 1-D, 3-D and integer shards are refused
@example((_npy(np.float64, (2, 2, 2)), True), None)
@example((_npy(np.int8, (3, 4)), True), 3)
def test_store_shards(tmp_path_factory, image_file, text_rows):
    data, intact = image_file
    root = tmp_path_factory.mktemp("store")
    (root / "img_emb").mkdir()
    (root / "img_emb" / "img_emb_0.npy").write_bytes(data)
    text = None
    if text_rows is not None:
        text = np.full((text_rows, 2), 0.5, np.float32)
        (root / "text_emb").mkdir()
        np.save(root / "text_emb" / "text_emb_0.npy", text)
    try:
        store = open_store(root)
        image = store.read(0, store.n)
    except CLEAR:
        return
    # it opened: numpy reads the same 2-D float rows, row-aligned with the text view
    expected = _numpy_reads(root / "img_emb" / "img_emb_0.npy")
    assert expected is not None and expected.ndim == 2 and expected.shape[0] >= 1
    assert expected.dtype in (np.float16, np.float32, np.float64)
    assert store.n == expected.shape[0] and store.d_image == expected.shape[1]
    np.testing.assert_array_equal(image, expected)
    assert store.has_text == (text is not None)
    if text is not None:
        assert store.n == text.shape[0]
        np.testing.assert_array_equal(store.read(0, store.n, "text"), text)
    del intact  # an intact file can still be refused (int8, 1-D, 3-D, empty)


ARGS = st.lists(
    st.sampled_from(
        [
            "ad",
            "demo",
            "info",
            "screen",
            "poison",
            "--json",
            "--images",
            "x.npy",
            "--texts",
            "--alpha",
            "2",
            "-1",
            "--profile",
            "nope",
            "--method",
            "auto",
            "--n",
            "0",
            "--poisoned",
            "a,b",
            "--k",
            "--out",
            "/nonexistent/dir",
        ]
    ),
    max_size=6,
)


@FUZZ
@given(ARGS)
def test_command_line(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        code = exc.code
    out, err = capsys.readouterr()
    assert code in (0, 2)
    if code == 2:  # one line on stderr, nothing on stdout
        assert out == ""
        assert err.startswith("alignscope: error: ") and err.count("\n") == 1, err
    elif "--json" in argv and argv and argv[0] in ("ad", "demo", "info"):
        assert isinstance(json.loads(out), dict)  # a JSON object, nothing else
