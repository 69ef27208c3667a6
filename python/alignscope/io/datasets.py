"""Image-caption datasets as one iterator of records.

Formats: an image folder with captions (a sidecar ``<stem>.txt`` per image, or a
``captions.jsonl`` / ``captions.csv`` of file,caption), webdataset tar shards (img2dataset
output: ``key.jpg|png|webp`` + ``key.txt|json``), one pickle per pair ``{"img": HWC uint8
array, "text": str}`` (the Implosion and Nightshade code's format), and a Hugging Face
``datasets`` dataset saved with ``save_to_disk``.

Records are lazy: ``record.load()`` decodes the image. An unreadable image raises
:class:`BadImage`, which consumers count and list (``Dataset.skipped``) instead of crashing. A
record the reader itself cannot use (a refused pickle, a caption that is not text) is yielded
all the same, with a ``load()`` that raises BadImage giving the reason: it is skipped and listed
by every consumer, in its place in the dataset's order (embed's shard boundaries do not move).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import tarfile
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.io.safe_pickle import load_pair_pickle

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".p")
MAX_CAPTION_CHARS = 10_000
MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000: a larger image is skipped, never decoded
# Preprocessing scales the short side up (288 for SSCD): a 1 x 1000 image would become
# 288 x 288,000 float32 pixels (6.5 GB). Images longer than this many times their width (or
# wider than tall) are skipped before decoding.
MAX_ASPECT_RATIO = 32
# Sizes checked before anything is read: a tar member (a compressed shard can expand a few KB
# into GB), a caption sidecar, a caption table.
MAX_MEMBER_BYTES = 64 * 2**20
MAX_SIDECAR_BYTES = 2**20
MAX_TABLE_BYTES = 256 * 2**20
# The only decoders Pillow may use. Formats are sniffed from content, not names, so without this
# a PostScript file named photo.jpg reaches the EPS plugin, which runs Ghostscript on it; the
# other plugins (ICO, DDS, SPIDER, ...) are rarely used and raise exceptions of their own.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


class BadImage(ValueError):
    """An image that cannot be decoded (corrupt, truncated, too large, wrong type)."""


def decode_image(data: bytes | np.ndarray, mode: str = "RGB") -> Any:
    """PIL image in ``mode`` (RGB by default) from encoded bytes of one of
    :data:`IMAGE_FORMATS` or an HWC uint8 array; raises BadImage for anything else, whatever
    the decoder raised."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, np.ndarray):
        if (
            data.dtype != np.uint8
            or data.ndim not in (2, 3)
            or (data.ndim == 3 and data.shape[2] not in (1, 3, 4))
            or 0 in data.shape[:2]  # an image without pixels: PIL would return one
        ):
            raise BadImage(f"expected an HWC uint8 array, got {data.dtype} {data.shape}")
        if data.shape[0] * data.shape[1] > MAX_IMAGE_PIXELS:
            raise BadImage(f"image of {data.shape[0]}x{data.shape[1]} pixels exceeds the limit")
        _check_aspect(data.shape[1], data.shape[0])
        arr = data[:, :, 0] if data.ndim == 3 and data.shape[2] == 1 else data
        return Image.fromarray(arr).convert(mode)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged-file chatter from the plugins (TIFF tags)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise BadImage(f"image of {image.width}x{image.height} pixels exceeds the limit")
            _check_aspect(image.width, image.height)
            image.load()
            return image.convert(mode)
    except BadImage:
        raise
    except UnidentifiedImageError as exc:
        # (Pillow's message holds the buffer's address: a reason must be the same every run)
        raise BadImage(f"cannot decode image: not a {', '.join(IMAGE_FORMATS)} file") from exc
    except Exception as exc:  # a decoder may raise any type on hostile bytes
        reason = re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc))
        raise BadImage(f"cannot decode image: {type(exc).__name__}: {reason}") from exc


def _check_aspect(width: int, height: int) -> None:
    if min(width, height) < 1:
        raise BadImage(f"image of {width}x{height} pixels has no pixels")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadImage(
            f"image of {width}x{height} pixels is more than {MAX_ASPECT_RATIO} times longer "
            "than wide (resizing it would take gigabytes)"
        )


def regular_file(path: Path, limit: int) -> str | None:
    """Why ``path`` must not be read as data (a link, a pipe or device, over ``limit`` bytes),
    or None when it is a regular file within the limit."""
    try:
        info = path.lstat()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link (not followed)"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size > limit:
        return f"{info.st_size:,} bytes, over the {limit:,}-byte limit"
    return None


def read_image_file(path: str | Path, mode: str = "RGB") -> Any:
    """The image in the regular file ``path`` (no FIFO or device), decoded as
    :func:`decode_image` does; raises BadImage naming the file."""
    file = Path(path)
    if not file.is_file():
        raise BadImage(f"{str(file)!r} is not a regular file")
    try:
        return decode_image(file.read_bytes(), mode)
    except BadImage as exc:
        raise BadImage(f"{str(file)!r}: {exc}") from exc


RESAMPLE_FILTERS = ("bilinear", "bicubic")


def resize_center_crop(image: np.ndarray, height: int, width: int, resample: str) -> np.ndarray:
    """torchvision's ``Resize`` then ``CenterCrop`` to ``height`` x ``width``, on an HWC uint8
    image resized by PIL with ``resample`` ("bilinear" or "bicubic").

    The one copy of that rule for the papers' preprocessing that uses it (Nightshade's
    sources, bilinear; Li et al.'s diffusion classifier, bicubic): the image is scaled so
    that it covers the target, the binding side becoming exactly the target's and the other
    ``int(target * side / binding side)`` (truncated, as torchvision computes it), then the
    crop starts ``int(round((side - target) / 2))`` pixels from the top and the left
    (Python's round, halves to even). An image of the target size is returned as it is.

    Returns
    -------
    (height, width, C) uint8.
    """
    from PIL import Image

    if resample not in RESAMPLE_FILTERS:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE_FILTERS)}, got {resample!r}")
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if height * w >= width * h:  # the height binds: it becomes `height`
        nh, nw = height, max(width, int(height * w / h))
    else:
        nh, nw = max(height, int(width * h / w)), width
    pil_filter = Image.BILINEAR if resample == "bilinear" else Image.BICUBIC
    resized = Image.fromarray(image).resize((nw, nh), pil_filter)
    top, left = round((nh - height) / 2.0), round((nw - width) / 2.0)
    return np.asarray(resized.crop((left, top, left + width, top + height)))


def safe_id(raw: str) -> str:
    """``raw`` with control characters, the Unicode line and paragraph separators and lone
    surrogates (undecodable file-name bytes) written as escapes, so an id never spans lines in
    line-oriented outputs and always encodes as UTF-8."""
    out = []
    for ch in raw:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs"):  # Cs: a lone surrogate
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _unusable(reason: str) -> Callable[[], Any]:
    """The ``load()`` of a record its reader found unusable: it fails as a bad image does."""

    def load() -> Any:
        raise BadImage(reason)

    return load


class _JSONNumber:
    """A number read from a caption file, kept as its text: a number is never a caption, and
    converting a 20,000-digit one raises ValueError (Python's 4,300-digit limit for int) or,
    with that limit off, takes quadratic time."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_json(text: str | bytes) -> Any:
    """``json.loads`` with every number (and NaN, Infinity) left unconverted."""
    return json.loads(
        text, parse_int=_JSONNumber, parse_float=_JSONNumber, parse_constant=_JSONNumber
    )


def _caption_problem(value: object) -> str | None:
    """Why ``value`` cannot be a caption, as "the caption is ..., not text"; None for text,
    bytes (decoded as UTF-8) and None (no caption)."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    if isinstance(value, _JSONNumber):
        what = f"a number ({len(value.text):,} characters)"
    elif isinstance(value, bool):
        what = "a boolean"
    elif isinstance(value, (int, float, np.number)):
        what = "a number"  # (str() of a 20,000-digit int raises: never converted)
    elif isinstance(value, dict):
        what = "an object"
    elif isinstance(value, (list, tuple)):
        what = "a list"
    else:
        what = f"a {type(value).__name__}"
    return f"the caption is {what}, not text"


def clean_caption(text: object) -> str:
    if text is None:
        return ""
    caption = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
    # a lone surrogate (from JSON "\ud800") cannot be written to the metadata: replace it
    caption = caption.encode("utf-8", errors="replace").decode("utf-8")
    return caption.strip()[:MAX_CAPTION_CHARS]


@dataclass
class Record:
    """One pair: ``id`` (stable within the dataset), ``caption``, ``extra`` metadata and a
    lazy ``load()`` of the RGB image."""

    id: str
    caption: str
    loader: Callable[[], Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        return self.loader()


class Dataset:
    """Iterates records in a fixed order; ``skipped`` collects (id, reason) of records the
    consumer could not use, ``warnings`` what the reader itself skipped (unsafe members)."""

    kind = "dataset"

    def __init__(self, source: str) -> None:
        self.source = source
        self.skipped: list[tuple[str, str]] = []
        self.warnings: list[str] = []
        self._listing: list[Path] | None = None

    def __iter__(self) -> Iterator[Record]:
        """The reader's records with safe, unique ids: control characters are escaped (an id
        is one line of keep.txt and similar outputs) and a repeated id gets ``#2``, ``#3``, …
        (each change is listed once in ``warnings``)."""
        seen: dict[str, int] = {}
        for record in self._records():
            rid = safe_id(record.id)
            if rid != record.id:
                self._warn(f"id {record.id!r} has control characters; used as {rid!r}")
            if rid in seen:
                seen[rid] += 1
                unique = f"{rid}#{seen[rid]}"
                self._warn(f"id {rid!r} repeats; this record is {unique!r}")
                rid = unique
            else:
                seen[rid] = 1
            record.id = rid
            yield record

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _records(self) -> Iterator[Record]:
        raise NotImplementedError

    def record_count(self) -> int | None:
        """How many records iterating will yield (unusable ones included), when that is known
        without reading the data (a file listing, a table's length); None otherwise (tar
        shards must be read through to count their samples)."""
        return None

    def images(self) -> Iterator[tuple[Record, Any]]:
        """(record, image) for every decodable record; failures go to ``skipped``."""
        for record in self:
            try:
                yield record, record.load()
            except BadImage as exc:
                self.skipped.append((record.id, str(exc)))


class ImageFolder(Dataset):
    kind = "folder"

    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.root = root
        self.captions = self._caption_table()

    def _sidecar(self, side: Path) -> str:
        """The caption in a sidecar, read only when it is a small regular file (a link could
        put any local file into the outputs, a pipe hangs the run, /dev/zero fills memory)."""
        if not side.exists() and not side.is_symlink():
            return ""
        problem = regular_file(side, MAX_SIDECAR_BYTES)
        if problem is not None:
            self._warn(f"caption {side.relative_to(self.root).as_posix()!r} ignored: {problem}")
            return ""
        return clean_caption(side.read_text(encoding="utf-8", errors="replace"))

    def _caption_table(self) -> dict[str, str] | None:
        """file -> caption from captions.jsonl or captions.csv, or None without either. A
        caption that is not text maps to a :class:`_RejectedCaption` giving the reason."""
        jsonl, table = self.root / "captions.jsonl", self.root / "captions.csv"
        for candidate in (jsonl, table):
            if candidate.exists() or candidate.is_symlink():
                problem = regular_file(candidate, MAX_TABLE_BYTES)
                if problem is not None:
                    raise ValueError(f"{candidate}: {problem}; give a regular caption file")
        if jsonl.exists():
            return _read_jsonl(jsonl)
        if table.exists():
            # csv's field limit (128 KiB by default) made a long caption stop the run: the
            # table's own size limit bounds a field already (captions are cut afterwards)
            previous = csv.field_size_limit(MAX_TABLE_BYTES)
            try:
                with open(table, newline="", encoding="utf-8", errors="replace") as fh:
                    reader = csv.DictReader(fh)
                    if reader.fieldnames is None or "file" not in reader.fieldnames:
                        raise ValueError(f"{table}: needs a header with columns file,caption")
                    return {row["file"]: clean_caption(row.get("caption")) for row in reader}
            except csv.Error as exc:
                raise ValueError(f"{table} line {reader.line_num}: {exc}") from exc
            finally:
                csv.field_size_limit(previous)
        return None

    def _files(self) -> list[Path]:
        # listed once: the order is fixed, and embed counts the records before iterating
        if self._listing is None:
            self._listing = sorted(
                p
                for p in self.root.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.is_symlink()
            )
        return self._listing

    def record_count(self) -> int | None:
        return len(self._files())

    def _records(self) -> Iterator[Record]:
        for path in self._files():
            rel = path.relative_to(self.root).as_posix()
            if self.captions is not None:
                caption = self.captions.get(rel, self.captions.get(path.name, ""))
            else:
                caption = self._sidecar(path.with_suffix(".txt"))
            if isinstance(caption, _RejectedCaption):
                yield Record(rel, "", _unusable(str(caption)), {"path": rel})
                continue
            yield Record(rel, caption, lambda p=path: decode_image(p.read_bytes()), {"path": rel})


class _RejectedCaption(str):
    """In a caption table, in place of a caption that is not text: the reason, naming the
    file and line."""


def _read_jsonl(jsonl: Path) -> dict[str, str]:
    """file -> caption of a captions.jsonl (lines ``{"file": ..., "caption" or "text": ...}``).

    A line that names no file (not UTF-8, not JSON, not an object, no string "file") is an
    error naming the line: the table is broken and it cannot be told which image the line
    was for. A line whose caption is not text (a number, an object, a list, a boolean) maps
    its file to a :class:`_RejectedCaption`: that record is skipped and listed, the rest read.
    """
    out: dict[str, str] = {}
    # split on newlines alone: str.splitlines also splits at U+2028, which JSON strings may hold
    for n, raw in enumerate(jsonl.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        where = f"{jsonl} line {n}"
        try:
            row = _parse_json(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            bad = f"{exc.reason} at byte {exc.start + 1}"
            raise ValueError(f"{where}: not UTF-8 text ({bad})") from exc
        except RecursionError as exc:
            raise ValueError(f"{where}: JSON nested too deeply") from exc
        except ValueError as exc:
            raise ValueError(f'{where}: expected {{"file": ..., "caption": ...}} ({exc})') from exc
        if not isinstance(row, dict) or not isinstance(row.get("file"), str):
            what = 'no string "file"' if isinstance(row, dict) else "not an object"
            raise ValueError(f'{where}: expected {{"file": ..., "caption": ...}} ({what})')
        caption = row.get("caption", row.get("text"))
        problem = _caption_problem(caption)
        if problem is None:
            out[row["file"]] = clean_caption(caption)
        else:
            out[row["file"]] = _RejectedCaption(f"{jsonl.name} line {n}: {problem}")
    return out


def _safe_member(member: tarfile.TarInfo) -> str | None:
    """Why a tar member is refused (links, absolute or parent paths), or None if fine."""
    name = member.name
    if member.issym() or member.islnk():
        return "link"
    if not member.isfile():
        return "not a regular file"
    if name.startswith("/") or ".." in Path(name).parts:
        return "path outside the archive"
    if member.size > MAX_MEMBER_BYTES:
        return f"{member.size:,} bytes, over the {MAX_MEMBER_BYTES:,}-byte limit"
    return None


class WebDataset(Dataset):
    """img2dataset / webdataset tar shards, read as streams (never extracted to disk)."""

    kind = "webdataset"

    def __init__(self, shards: list[Path], source: str) -> None:
        super().__init__(source)
        self.shards = shards

    def _records(self) -> Iterator[Record]:
        for shard in self.shards:
            yield from self._shard(shard)

    def _shard(self, shard: Path) -> Iterator[Record]:
        group_key: str | None = None
        group: dict[str, bytes] = {}
        try:
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    reason = _safe_member(member)
                    if reason is not None:
                        if not member.isdir():
                            self.warnings.append(
                                f"{shard.name}: skipped member {member.name!r} ({reason})"
                            )
                        continue
                    name = Path(member.name).name
                    key, _, ext = name.partition(".")
                    key = f"{Path(member.name).parent.as_posix()}/{key}".lstrip("./")
                    if key != group_key and group_key is not None:
                        yield from self._record(shard, group_key, group)
                        group = {}
                    group_key = key
                    handle = tar.extractfile(member)
                    group[ext.lower()] = handle.read() if handle is not None else b""
        except (tarfile.TarError, OSError, EOFError) as exc:
            self.warnings.append(f"{shard.name}: archive ends early or is damaged ({exc})")
        if group_key is not None and group:
            yield from self._record(shard, group_key, group)

    def _record(self, shard: Path, key: str, group: dict[str, bytes]) -> Iterator[Record]:
        image_ext = next((e for e in ("jpg", "jpeg", "png", "webp") if e in group), None)
        if image_ext is None:
            return
        caption: object = group.get("txt")
        extra: dict[str, Any] = {"shard": shard.name}
        rid = f"{shard.stem}/{key}"
        if caption is None and "json" in group:
            try:
                meta = _parse_json(group["json"])
                caption = meta.get("caption", meta.get("text")) if isinstance(meta, dict) else None
            except (ValueError, RecursionError):  # not JSON (img2dataset's is): no caption
                caption = None
            problem = _caption_problem(caption)
            if problem is not None:
                yield Record(rid, "", _unusable(f"{key}.json: {problem}"), extra)
                return
        data = group[image_ext]
        yield Record(rid, clean_caption(caption), lambda d=data: decode_image(d), extra)


def _pair_image(value: object) -> Any:
    """decode_image of a pair's "img", whatever the pickle held: a value no array can hold (a
    ragged list) is a BadImage like any other wrong image."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadImage(f"expected an HWC uint8 array, got {type(value).__name__} ({exc})") from exc
    return decode_image(arr)


class PickleDataset(Dataset):
    """One pickle per pair: {"img": HWC uint8 array, "text": str}, read safely by default."""

    kind = "pickle"

    def __init__(self, root: Path, trust: bool) -> None:
        super().__init__(str(root))
        self.root = root
        self.trust = trust

    def _files(self) -> list[Path]:
        if self._listing is None:  # listed once, as an image folder is
            self._listing = sorted(
                p
                for p in self.root.iterdir()
                if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file()
            )
        return self._listing

    def record_count(self) -> int | None:
        return len(self._files())

    def _records(self) -> Iterator[Record]:
        for path in self._files():
            extra = {"path": path.name}
            try:
                pair = load_pair_pickle(path.read_bytes(), trust=self.trust)
            except Exception as exc:  # a refused global, a corrupt file: skip and list it
                yield Record(path.name, "", _unusable(f"unreadable pickle: {exc}"), extra)
                continue
            if not isinstance(pair, dict) or "img" not in pair:
                reason = "not a {'img': array, 'text': str} pair"
                yield Record(path.name, "", _unusable(reason), extra)
                continue
            problem = _caption_problem(pair.get("text"))
            if problem is not None:  # (a 20,000-digit int: str() of it raised and stopped embed)
                yield Record(path.name, "", _unusable(f"'text' of the pair: {problem}"), extra)
                continue
            img = pair["img"]
            yield Record(
                path.name, clean_caption(pair.get("text")), lambda a=img: _pair_image(a), extra
            )


def _check_data_files(root: Path) -> None:
    """The data files a saved dataset's ``state.json`` names must be regular files inside its
    folder: the file is the dataset's own, and could otherwise point at another dataset."""
    state = root / "state.json"
    if not state.is_file():
        return
    try:
        files = json.loads(state.read_text()).get("_data_files", [])
        names = [f["filename"] for f in files]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{state}: not a readable datasets state file ({exc})") from exc
    base = root.resolve()
    for name in names:
        target = (root / str(name)).resolve()
        if base not in target.parents or regular_file(root / str(name), 2**62) is not None:
            raise ValueError(
                f"{state} names the data file {str(name)!r}, which is not a regular file inside "
                f"{str(root)!r}; refusing to read it"
            )


# the columns a saved Hugging Face dataset's captions are read from, first present wins
HF_CAPTION_COLUMNS = ("caption", "text", "prompt")


def hf_caption_column(column_names: list[str], given: str | None = None) -> str | None:
    """The column of a saved Hugging Face dataset that its captions are read from.

    Parameters
    ----------
    column_names : the dataset's columns.
    given : the column asked for (``open_dataset(..., caption_column=...)``); returned as is.

    Returns
    -------
    ``given`` when set, else the first of :data:`HF_CAPTION_COLUMNS` among ``column_names``,
    else None (the dataset has no captions). :class:`HFDiskDataset` reads captions from it and
    ``screen.export.check_screened_dataset`` compares the store's with it (without ``given``:
    a store does not record a column given to ``open_dataset``, and the CLI gives none).
    """
    if given:
        return given
    return next((c for c in HF_CAPTION_COLUMNS if c in column_names), None)


class HFDiskDataset(Dataset):
    """A Hugging Face ``datasets`` dataset saved with ``save_to_disk``."""

    kind = "huggingface"

    def __init__(self, root: Path, image_column: str, caption_column: str | None) -> None:
        super().__init__(str(root))
        try:
            from datasets import load_from_disk
        except ImportError as exc:
            raise ValueError(
                "reading a saved Hugging Face dataset needs: pip install datasets"
            ) from exc
        _check_data_files(root)
        self.data = load_from_disk(str(root))
        if hasattr(self.data, "keys") and not hasattr(self.data, "column_names"):
            raise ValueError(
                f"{root} holds a DatasetDict; point at one split ({', '.join(self.data.keys())})"
            )
        names = self.data.column_names
        if image_column not in names:
            raise ValueError(
                f"{root}: no image column {image_column!r}; columns: {', '.join(names)}"
            )
        self.image_column = image_column
        feature = self.data.features.get(image_column)
        if feature is not None and type(feature).__name__ == "Image":
            # Decode ourselves (size limits, corrupt files skipped), not inside datasets.
            from datasets import Image as ImageFeature

            self.data = self.data.cast_column(image_column, ImageFeature(decode=False))
        self.caption_column = hf_caption_column(names, caption_column)

    def record_count(self) -> int | None:
        return len(self.data)

    def _records(self) -> Iterator[Record]:
        for i in range(len(self.data)):
            row = self.data[i]
            image = row[self.image_column]
            caption = clean_caption(row.get(self.caption_column)) if self.caption_column else ""
            yield Record(str(i), caption, lambda im=image: _hf_image(im), {"row": i})


def _hf_image(value: Any) -> Any:
    if value is None:
        raise BadImage("missing image")
    if isinstance(value, dict) and value.get("bytes") is not None:
        return decode_image(value["bytes"])
    if isinstance(value, np.ndarray):
        return decode_image(value)
    if hasattr(value, "convert"):
        return value.convert("RGB")
    raise BadImage(f"unsupported image value {type(value).__name__}")


def open_dataset(
    path: str | os.PathLike[str],
    *,
    trust_pickles: bool = False,
    image_column: str = "image",
    caption_column: str | None = None,
) -> Dataset:
    """Open an image-caption dataset, detecting its format.

    A ``.tar`` file or a directory of them: webdataset. A directory with ``dataset_info.json``
    or ``state.json``: a saved Hugging Face dataset. A directory of ``.pkl``/``.pickle``/``.p``
    files: pickle per pair (safe unpickling unless ``trust_pickles``). Otherwise an image folder.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"dataset {str(root)!r} does not exist")
    if not root.is_dir():
        if root.suffix == ".tar" and root.is_file():
            return WebDataset([root], str(root))
        if root.suffix == ".tar":
            raise ValueError(f"{str(root)!r} is not a regular file (a pipe or device hangs a run)")
        raise ValueError(f"{str(root)!r}: a dataset is a directory or a .tar shard")
    candidates = sorted(root.glob("*.tar"))
    if candidates:
        # shards are regular files of this folder: no links out of it, no pipes or devices
        unsafe = {t: regular_file(t, 2**62) for t in candidates}
        shards = [t for t in candidates if unsafe[t] is None]
        if not shards:
            raise ValueError(
                f"{str(root)!r}: no usable .tar shard ({candidates[0].name} is "
                f"{unsafe[candidates[0]]})"
            )
        dataset = WebDataset(shards, str(root))
        for t, problem in unsafe.items():
            if problem is not None:
                dataset._warn(f"{t.name}: skipped shard ({problem})")
        return dataset
    if (root / "dataset_info.json").exists() or (root / "state.json").exists():
        return HFDiskDataset(root, image_column, caption_column)
    if any(p.suffix.lower() in PICKLE_SUFFIXES for p in root.iterdir()):
        return PickleDataset(root, trust_pickles)
    return ImageFolder(root)
