"""Long fuzz runs of every reader and the command line (the test suite runs 60 seeded inputs
of each; this runs many more). Prints, per target, the inputs tried and any failure: an
exception other than the clear errors the target documents.

    python benchmarks/fuzz.py [--seconds 120]
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from alignscope.cli import main
from alignscope.io import open_store
from alignscope.io.datasets import BadImage, decode_image, open_dataset
from alignscope.io.safe_pickle import UnsafePickleError, load_pair_pickle


def _image(rng: np.random.Generator, root: Path) -> None:
    try:
        decode_image(rng.bytes(int(rng.integers(0, 4096))))
    except BadImage:
        pass


def _valid_png_mutated(rng: np.random.Generator, root: Path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    for _ in range(int(rng.integers(1, 8))):
        data[int(rng.integers(len(data)))] = int(rng.integers(256))
    try:
        decode_image(bytes(data))
    except BadImage:
        pass


def _pickle(rng: np.random.Generator, root: Path) -> None:
    base = bytearray(
        pickle.dumps({"img": rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), "text": "x"})
    )
    for _ in range(int(rng.integers(1, 6))):
        base[int(rng.integers(len(base)))] = int(rng.integers(256))
    try:
        load_pair_pickle(bytes(base))
    except UnsafePickleError:
        pass


def _tar(rng: np.random.Generator, root: Path) -> None:
    path = root / f"{rng.integers(1 << 30)}.tar"
    with tarfile.open(path, "w") as tar:
        for _ in range(int(rng.integers(0, 5))):
            name = str(rng.choice(["a.jpg", "a.txt", "../b.png", "/c.png", "d.json", "e.png"]))
            data = rng.bytes(int(rng.integers(0, 300)))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = bytearray(path.read_bytes())
    if raw and rng.random() < 0.5:
        raw[int(rng.integers(len(raw)))] = int(rng.integers(256))
        path.write_bytes(bytes(raw))
    for record, _ in open_dataset(path).images():
        assert ".." not in record.id


def _store(rng: np.random.Generator, root: Path) -> None:
    store = Path(tempfile.mkdtemp(prefix="s", dir=root))
    (store / "img_emb").mkdir()
    buf = io.BytesIO()
    np.save(buf, rng.normal(size=(int(rng.integers(1, 20)), 4)).astype(np.float16))
    data = bytearray(buf.getvalue())
    for _ in range(int(rng.integers(0, 6))):
        data[int(rng.integers(len(data)))] = int(rng.integers(256))
    (store / "img_emb" / "img_emb_0.npy").write_bytes(bytes(data))
    try:
        s = open_store(store)
        s.read(0, s.n)
    except (ValueError, FileNotFoundError):
        pass


def _folder(rng: np.random.Generator, root: Path) -> None:
    """An image folder with a fuzzed captions.jsonl / captions.csv and fuzzed image files."""
    folder = Path(tempfile.mkdtemp(prefix="f", dir=root))
    (folder / "a.png").write_bytes(rng.bytes(int(rng.integers(0, 200))))
    table = "captions.jsonl" if rng.random() < 0.5 else "captions.csv"
    (folder / table).write_bytes(rng.bytes(int(rng.integers(0, 200))))
    try:
        for _record, _image in open_dataset(folder).images():
            pass
    except ValueError:  # a caption table that cannot be read is a clear error
        pass


def _manifest(rng: np.random.Generator, root: Path) -> None:
    from alignscope.screen.run import load_truth

    path = root / f"m{rng.integers(1 << 30)}{rng.choice(['.npz', '.npy', '.parquet'])}"
    path.write_bytes(rng.bytes(int(rng.integers(0, 400))))
    try:
        load_truth(path, 10)
    except ValueError:
        pass


def _hf_dataset(rng: np.random.Generator, root: Path) -> None:
    """A saved Hugging Face dataset with fuzzed image bytes and captions."""
    try:
        import datasets
    except ImportError:
        return
    folder = Path(tempfile.mkdtemp(prefix="h", dir=root)) / "hf"
    images = [{"bytes": rng.bytes(int(rng.integers(0, 100))), "path": None} for _ in range(3)]
    captions = [rng.bytes(int(rng.integers(0, 50))).decode("latin-1") for _ in range(3)]
    feats = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": images, "text": captions}, features=feats).save_to_disk(
        str(folder)
    )
    for _record, _image in open_dataset(folder).images():
        pass


# Formats Pillow writes: the allowed ones and others that must be refused (ICO, TGA, ...).
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "TGA", "PPM", "PCX", "SGI"]


def _any_format_mutated(rng: np.random.Generator, root: Path) -> None:
    """A small image saved in one of many formats, a few bytes mutated: decode_image returns
    an RGB image of the allowed formats within the limits, or BadImage, never another error."""
    from PIL import Image

    buf = io.BytesIO()
    size = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format=str(rng.choice(FORMATS)))
    data = bytearray(buf.getvalue())
    for _ in range(int(rng.integers(0, 6))):
        data[int(rng.integers(len(data)))] = int(rng.integers(256))
    try:
        image = decode_image(bytes(data))
        assert image.mode == "RGB"
    except BadImage:
        pass


_MODEL: list[bytes] = []


def _torchscript_mutated(rng: np.random.Generator, root: Path) -> None:
    """A tiny TorchScript model file with mutated bytes: load_torchscript returns a module
    made of allowed operators or raises ValueError (one line naming the file)."""
    try:
        import torch
    except ImportError:
        return
    from alignscope._torchscript import ALLOWED_OPS, load_torchscript, operators

    if not _MODEL:
        path = root / "model.pt"
        torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())).save(
            str(path)
        )
        _MODEL.append(path.read_bytes())
    data = bytearray(_MODEL[0])
    for _ in range(int(rng.integers(1, 8))):
        data[int(rng.integers(len(data)))] = int(rng.integers(256))
    path = root / f"m{rng.integers(1 << 30)}.pt"
    path.write_bytes(bytes(data))
    try:
        module = load_torchscript(path)
        assert set(operators(module)) <= ALLOWED_OPS
    except ValueError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)[:300]
    finally:
        path.unlink()


def _store_names(rng: np.random.Generator, root: Path) -> None:
    """Shard file names drawn from a few spellings: a store opens only as a series 0..K-1
    with one file per index, else a ValueError naming the files."""
    store = Path(tempfile.mkdtemp(prefix="n", dir=root))
    for view in ("img_emb", "text_emb"):
        (store / view).mkdir()
        for name in rng.choice(["0", "1", "01", "2", "00"], size=int(rng.integers(1, 4))):
            np.save(store / view / f"{view}_{name}.npy", np.ones((3, 4), np.float32))
    try:
        s = open_store(store)
        assert s.n == 3 * len(s.files()) // 2
    except ValueError:
        pass


# JSON values a caption may be given: text, and everything that is not (a number of 20,000
# digits, objects, lists, booleans, nesting past the parser's recursion limit, bad escapes)
_CAPTION_VALUES = [
    '"a cat"',
    '"one\u2028two"',
    '"\\ud800"',
    "null",
    "true",
    "1" * 20_000,
    "-1e999999",
    "NaN",
    '{"a": {"b": [1, 2]}}',
    '["x", "y"]',
    "[" * 5_000 + "]" * 5_000,
    "[" * 100_000,
    '"\\x"',
    "",
]


def _caption_values(rng: np.random.Generator, root: Path) -> None:
    """An image folder whose captions.jsonl lines give hostile values as captions (and now and
    then as file names, or as invalid UTF-8): every image is yielded or skipped and listed,
    or the table is a one-line ValueError naming its line."""
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="c", dir=root))
    n = int(rng.integers(1, 5))
    for i in range(n):
        Image.new("RGB", (4, 4)).save(folder / f"{i}.png")
    lines = []
    for i in range(n):
        value = str(rng.choice(_CAPTION_VALUES))
        file = f'"{i}.png"' if rng.random() < 0.9 else str(rng.choice(_CAPTION_VALUES))
        line = f'{{"file": {file}, "{rng.choice(["caption", "text"])}": {value}}}'.encode()
        if rng.random() < 0.05:
            line += b"\xff"
        lines.append(line)
    (folder / "captions.jsonl").write_bytes(b"\n".join(lines))
    try:
        ds = open_dataset(folder)
    except ValueError as exc:
        assert "\n" not in str(exc) and "captions.jsonl line " in str(exc), str(exc)[:300]
        return
    yielded = [r.id for r, _ in ds.images()]
    assert sorted(yielded + [rid for rid, _ in ds.skipped]) == [f"{i}.png" for i in range(n)]


# Opcode fragments spliced into numpy's own array pickles: calls, state and instances made
# in ways numpy never writes, aimed at the stand-ins the restricted unpickler resolves.
_FRAGMENTS = [
    b"cnumpy\nndarray\n)R",
    b"cnumpy\ndtype\n)\x81",
    b"cnumpy\ndtype\nX\x02\x00\x00\x00V8\x85R",
    b"}X\t\x00\x00\x00__class__cnumpy\ndtype\nsb",
    b"N}X\x04\x00\x00\x00codeX\x02\x00\x00\x00V8s\x86b",
    b"c_codecs\nencode\n}b",
    b"(inumpy\ndtype\n",
    b"0",
    b"R",
    b"b",
]


def _pickle_opcodes(rng: np.random.Generator, root: Path) -> None:
    """numpy pickles of arrays of allowed and refused dtypes with opcode fragments spliced in:
    the unpickler returns only arrays of the allowed dtypes, or refuses the file."""
    from alignscope.io import safe_pickle

    dtype = str(rng.choice(["u1", "f4", ">i2", "b1", "V8", "O", "c8", "M8[s]", "S2"]))
    arr = np.zeros((2, 3), dtype=dtype)
    data = bytearray(pickle.dumps({"img": arr}, protocol=int(rng.integers(2, 6))))
    for _ in range(int(rng.integers(0, 4))):
        at = int(rng.integers(2, len(data)))
        data[at:at] = _FRAGMENTS[int(rng.integers(len(_FRAGMENTS)))]
    marker = dict(vars(safe_pickle._NDArrayMarker))
    try:
        loaded = load_pair_pickle(bytes(data))
    except UnsafePickleError:
        loaded = None
    assert dict(vars(safe_pickle._NDArrayMarker)) == marker  # no stand-in was changed
    pending = [loaded]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending += list(value.values())
        elif isinstance(value, (list, tuple)):
            pending += list(value)
        elif isinstance(value, (np.ndarray, np.generic)):
            assert value.dtype.str[1:] in safe_pickle._DTYPES, value.dtype


WORDS = [
    "ad",
    "replicate",
    "screen",
    "poison",
    "embed",
    "info",
    "--json",
    "--images",
    "x.npy",
    "--texts",
    "--alpha",
    "2",
    "nan",
    "--profile",
    "minmax",
    "--method",
    "sampled",
    "--k",
    "0",
    "--out",
    "/nonexistent",
]


def _cli(rng: np.random.Generator, root: Path) -> None:
    argv = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(0, 7)))]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code in (0, 2), (argv, code)


TARGETS = {
    "image bytes": _image,
    "mutated PNG": _valid_png_mutated,
    "any format": _any_format_mutated,
    "TorchScript": _torchscript_mutated,
    "store names": _store_names,
    "pair pickle": _pickle,
    "webdataset tar": _tar,
    "store shard": _store,
    "image folder": _folder,
    "manifest": _manifest,
    "HF dataset": _hf_dataset,
    "caption values": _caption_values,
    "pickle opcodes": _pickle_opcodes,
    "command line": _cli,
}


def main_fuzz() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated target names")
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        chosen = args.only.split(",") if args.only else list(TARGETS)
        for name, target in ((n, TARGETS[n]) for n in chosen):
            rng = np.random.default_rng(args.seed)
            tried, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                try:
                    target(rng, Path(tmp))
                except Exception:  # a failure: anything but the documented clear errors
                    failures += 1
                    print(
                        f"FAILURE in {name} (input {tried}):\n{traceback.format_exc()}",
                        file=sys.stderr,
                    )
                tried += 1
            print(f"{name:16s} {tried:8,} inputs in {args.seconds:.0f} s")
    print(f"failures: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main_fuzz())
