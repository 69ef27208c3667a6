"""Every dataset reader end to end, with a corrupt image and an empty caption."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from alignscope.io.datasets import open_dataset
from alignscope.io.safe_pickle import UnsafePickleError, load_pair_pickle


def _png(rng, size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _consume(ds):
    return [(r.id, r.caption, img.size) for r, img in ds.images()]


def test_folder_with_sidecar_captions(tmp_path, rng):
    (tmp_path / "a.png").write_bytes(_png(rng))
    (tmp_path / "a.txt").write_text("a red cat\n")
    (tmp_path / "b.png").write_bytes(_png(rng))  # no caption: empty string
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = open_dataset(tmp_path)
    assert ds.kind == "folder"
    assert _consume(ds) == [("a.png", "a red cat", (20, 24)), ("b.png", "", (20, 24))]
    assert [s[0] for s in ds.skipped] == ["c.jpg"]


@pytest.mark.parametrize("table", ["jsonl", "csv"])
def test_folder_with_caption_table(tmp_path, rng, table):
    (tmp_path / "x.png").write_bytes(_png(rng))
    (tmp_path / "y.png").write_bytes(_png(rng))
    if table == "jsonl":
        (tmp_path / "captions.jsonl").write_text(
            json.dumps({"file": "x.png", "caption": "dog"})
            + "\n"
            + json.dumps({"file": "y.png", "caption": ""})
            + "\n"
        )
    else:
        (tmp_path / "captions.csv").write_text("file,caption\nx.png,dog\ny.png,\n")
    assert [(i, c) for i, c, _ in _consume(open_dataset(tmp_path))] == [
        ("x.png", "dog"),
        ("y.png", ""),
    ]


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards(tmp_path, rng):
    _tar(
        tmp_path / "00000.tar",
        [
            ("000.jpg", _png(rng)),
            ("000.txt", b"first"),
            ("001.png", _png(rng)),
            ("001.json", json.dumps({"caption": "second"}).encode()),
            ("002.jpg", b"garbage"),
            ("002.txt", b"broken"),
        ],
    )
    _tar(tmp_path / "00001.tar", [("100.png", _png(rng)), ("100.txt", b"")])
    ds = open_dataset(tmp_path)
    got = _consume(ds)
    assert [(i, c) for i, c, _ in got] == [
        ("00000/000", "first"),
        ("00000/001", "second"),
        ("00001/100", ""),
    ]
    assert ds.skipped and ds.skipped[0][0] == "00000/002"


def test_webdataset_refuses_unsafe_members(tmp_path, rng):
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        for name in ("../escape.png", "/abs.png", "ok.png"):
            data = _png(rng)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    ds = open_dataset(tmp_path / "evil.tar")
    assert [r.id for r in ds] == ["evil/ok"]
    assert len(ds.warnings) == 3
    assert not (tmp_path.parent / "escape.png").exists()


def test_pickle_per_pair(tmp_path, rng):
    img = rng.integers(0, 255, (16, 12, 3), dtype=np.uint8)
    (tmp_path / "0.p").write_bytes(pickle.dumps({"img": img, "text": "a photo of a dog"}))
    (tmp_path / "1.p").write_bytes(pickle.dumps({"img": img[:, :, :1], "text": ""}))
    (tmp_path / "2.p").write_bytes(pickle.dumps({"img": np.zeros((4, 4), np.float32), "text": "x"}))
    ds = open_dataset(tmp_path)
    assert ds.kind == "pickle"
    got = _consume(ds)
    assert [(i, c, s) for i, c, s in got] == [
        ("0.p", "a photo of a dog", (12, 16)),
        ("1.p", "", (12, 16)),
    ]
    assert ds.skipped[0][0] == "2.p"


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch should-not-exist",))


def test_hostile_pickle_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({"img": _Boom(), "text": "x"})
    with pytest.raises(UnsafePickleError, match=r"refused to load global (posix|os)\.system"):
        load_pair_pickle(payload)
    (tmp_path / "evil.p").write_bytes(payload)
    ds = open_dataset(tmp_path)
    # the refused file is a record that no consumer can load: skipped and listed in its place
    assert list(ds.images()) == [] and ds.skipped[0][0] == "evil.p"
    assert "refused to load global" in ds.skipped[0][1]
    assert not (tmp_path / "should-not-exist").exists()


def test_huggingface_dataset_on_disk(tmp_path, rng):
    datasets = pytest.importorskip("datasets")
    images = [Image.fromarray(rng.integers(0, 255, (8, 10, 3), dtype=np.uint8)) for _ in range(3)]
    data = datasets.Dataset.from_dict(
        {"image": images, "text": ["a", "", "c"]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}),
    )
    data.save_to_disk(str(tmp_path / "hf"))
    ds = open_dataset(tmp_path / "hf")
    assert ds.kind == "huggingface"
    assert [(i, c, s) for i, c, s in _consume(ds)] == [
        ("0", "a", (10, 8)),
        ("1", "", (10, 8)),
        ("2", "c", (10, 8)),
    ]


def test_a_saved_dataset_reads_its_captions_from_the_first_of_caption_text_prompt(tmp_path, rng):
    """One rule (io.datasets.hf_caption_column) for the embedding and the export's check."""
    from alignscope.io.datasets import hf_caption_column

    assert hf_caption_column(["image", "prompt", "text"]) == "text"
    assert hf_caption_column(["prompt", "text", "caption"]) == "caption"
    assert hf_caption_column(["image", "prompt"]) == "prompt"
    assert hf_caption_column(["image", "label"]) is None
    assert hf_caption_column(["image", "text"], "label") == "label"  # asked for: as is
    datasets = pytest.importorskip("datasets")
    image = Image.fromarray(rng.integers(0, 255, (8, 10, 3), dtype=np.uint8))
    data = datasets.Dataset.from_dict(
        {"image": [image], "prompt": ["from prompt"], "text": ["from text"]},
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "prompt": datasets.Value("string"),
                "text": datasets.Value("string"),
            }
        ),
    )
    data.save_to_disk(str(tmp_path / "hf"))
    assert [r.caption for r in open_dataset(tmp_path / "hf")] == ["from text"]
    chosen = open_dataset(tmp_path / "hf", caption_column="prompt")
    assert [r.caption for r in chosen] == ["from prompt"]


def test_image_size_limit(tmp_path, monkeypatch, rng):
    from alignscope.io import datasets as mod

    monkeypatch.setattr(mod, "MAX_IMAGE_PIXELS", 100)
    (tmp_path / "big.png").write_bytes(_png(rng, (20, 20)))
    ds = open_dataset(tmp_path)
    assert _consume(ds) == [] and "exceeds the limit" in ds.skipped[0][1]


@pytest.mark.parametrize("shape", [(12, 20), (20, 12), (9, 9)])
def test_nightshade_and_li_et_al_crops_are_one_rule_with_their_own_filters(shape):
    """square_crop (Nightshade's release, bilinear) and fit_image (Li et al., bicubic) are
    torchvision's Resize + CenterCrop, differing only in the filter."""
    from alignscope import _reference
    from alignscope.evaluate.diffusion_classifier import fit_image
    from alignscope.io.datasets import resize_center_crop
    from alignscope.poison.nightshade import square_crop

    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    bilinear = _reference.short_side_crop_reference(image, 8, Image.BILINEAR)
    bicubic = _reference.short_side_crop_reference(image, 8, Image.BICUBIC)
    assert not np.array_equal(bilinear, bicubic)  # the filter shows in the pixels
    np.testing.assert_array_equal(square_crop(image, 8), bilinear)
    np.testing.assert_array_equal(resize_center_crop(image, 8, 8, "bilinear"), bilinear)
    np.testing.assert_array_equal(fit_image(image, 8, 8), bicubic)
    np.testing.assert_array_equal(resize_center_crop(image, 8, 8, "bicubic"), bicubic)


def test_resize_center_crop_to_a_rectangle():
    from alignscope.io.datasets import resize_center_crop

    image = np.random.default_rng(2).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    # the height binds (6 / 10 > 8 / 20): 10 x 20 -> 6 x int(6 * 20 / 10) = 6 x 12, crop from
    # column round(4 / 2) = 2
    want = np.asarray(Image.fromarray(image).resize((12, 6), Image.BICUBIC))[:, 2:10]
    np.testing.assert_array_equal(resize_center_crop(image, 6, 8, "bicubic"), want)
    # the width binds (16 / 20 > 4 / 10): 10 x 20 -> max(4, int(16 * 10 / 20)) = 8 x 16, crop
    # from row round(4 / 2) = 2
    want = np.asarray(Image.fromarray(image).resize((16, 8), Image.BILINEAR))[2:6]
    np.testing.assert_array_equal(resize_center_crop(image, 4, 16, "bilinear"), want)
    with pytest.raises(ValueError, match=r"^resample must be one of bilinear, bicubic, got 'box'$"):
        resize_center_crop(image, 4, 4, "box")
