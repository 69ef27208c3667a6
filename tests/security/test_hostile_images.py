"""Image files whose content is not what their name says: only JPEG, PNG, WebP, GIF, BMP and
TIFF reach a decoder, and whatever a decoder raises becomes a skipped, listed record."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, PngImagePlugin

from alignscope.cli import main
from alignscope.io.datasets import (
    IMAGE_FORMATS,
    BadImage,
    decode_image,
    open_dataset,
    read_image_file,
)

POSTSCRIPT = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 8
newpath 0 0 moveto 8 8 lineto stroke
showpage
"""


@pytest.fixture
def fake_ghostscript(tmp_path, monkeypatch) -> Path:
    """A `gs` that leaves a marker file when Pillow runs it; returns the marker's path."""
    marker = tmp_path / "ghostscript-ran"
    gs = tmp_path / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", str(gs))
    return marker


def test_postscript_named_jpg_never_reaches_ghostscript(fake_ghostscript):
    # the fixture is live: Pillow's own sniffing would run it
    with pytest.raises(Exception), Image.open(io.BytesIO(POSTSCRIPT)) as im:  # noqa: B017
        im.load()
    assert fake_ghostscript.exists()
    fake_ghostscript.unlink()
    with pytest.raises(BadImage, match=r"not a JPEG, PNG, WEBP, GIF, BMP, TIFF file"):
        decode_image(POSTSCRIPT)
    assert not fake_ghostscript.exists()


def _encoded(fmt: str, size: tuple[int, int] = (12, 7)) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_every_allowed_format_decodes(fmt):
    image = decode_image(_encoded(fmt))
    assert image.mode == "RGB" and image.size == (12, 7)


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PPM", "PCX", "SGI"])
def test_other_formats_are_refused(fmt):
    with pytest.raises(BadImage, match="cannot decode image: not a JPEG"):
        decode_image(_encoded(fmt, (16, 16)))


def test_an_ico_holding_a_huge_png_is_refused_before_decoding():
    # ICO was the way around the pixel limit: its plugin decoded the embedded PNG first
    inner = _encoded("PNG", (4, 4))
    header = (0).to_bytes(2, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    entry = bytes([0, 0, 0, 0]) + (1).to_bytes(2, "little") + (32).to_bytes(2, "little")
    entry += len(inner).to_bytes(4, "little") + (6 + 16).to_bytes(4, "little")
    with pytest.raises(BadImage, match="not a JPEG"):
        decode_image(header + entry + inner)


def test_any_decoder_exception_becomes_a_listed_skip(tmp_path, monkeypatch):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(_encoded("PNG", (12 + i, 7)))
        (tmp_path / f"{i}.txt").write_text(f"caption {i}")
    original = PngImagePlugin.PngImageFile.load

    def flaky(self):  # the second image's decoder fails with a type no plugin documents
        if self.size == (13, 7):
            raise NotImplementedError("decoder bug")
        return original(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", flaky)
    ds = open_dataset(tmp_path)
    decoded = [record.id for record, _ in ds.images()]
    assert decoded == ["0.png", "2.png"]
    assert ds.skipped == [("1.png", "cannot decode image: NotImplementedError: decoder bug")]


def test_read_image_file_refuses_fifos_and_names_the_file(tmp_path):
    fifo = tmp_path / "mask.png"
    os.mkfifo(fifo)
    with pytest.raises(BadImage, match=r"mask.png' is not a regular file"):
        read_image_file(fifo)
    ps = tmp_path / "photo.jpg"
    ps.write_bytes(POSTSCRIPT)
    with pytest.raises(BadImage, match=r"photo.jpg': cannot decode image: not a JPEG"):
        read_image_file(ps)
    good = tmp_path / "good.png"
    good.write_bytes(_encoded("PNG"))
    assert read_image_file(good, "L").mode == "L"


def test_embed_skips_and_lists_a_postscript_photo(tmp_path, tiny_sscd, fake_ghostscript, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"{i}.jpg").write_bytes(_encoded("JPEG", (40, 40)))
        (data / f"{i}.txt").write_text(f"caption {i}")
    (data / "1.jpg").write_bytes(POSTSCRIPT)
    out = tmp_path / "store"
    argv = ["embed", str(data), "--out", str(out), "--sscd", str(tiny_sscd["torchscript"])]
    assert main([*argv, "--sscd-preset", "sscd-square", "--quiet", "--json"]) == 0
    report = json.loads((out / "embed_report.json").read_text())
    assert report["images"] == 2
    assert [s[0] if isinstance(s, list) else s["id"] for s in report["skipped"]] == ["1.jpg"]
    assert not fake_ghostscript.exists()
    assert np.load(out / "sscd_emb" / "sscd_emb_0.npy").shape[0] == 2


def test_skip_reasons_are_the_same_every_run():
    # Pillow names the buffer by its address; a reason in a report must not change per run
    reasons = set()
    for _ in range(3):
        with pytest.raises(BadImage) as err:
            decode_image(b"not an image at all" + bytes(64))
        reasons.add(str(err.value))
    assert len(reasons) == 1 and "0x" not in reasons.pop()
