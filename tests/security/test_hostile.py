"""Hostile inputs, generated here: each ends in a result or a clear error, never code
execution, a crash, a hang or markup injected into a report."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from alignscope.cli import main
from alignscope.io.datasets import BadImage, decode_image, open_dataset


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _lying_png(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width x height (CRC fixed up)."""
    data = bytearray(_png(4, 4))
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    struct.pack_into(">II", data, ihdr + 8, width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13])) & 0xFFFFFFFF
    struct.pack_into(">I", data, ihdr + 8 + 13, crc)
    return bytes(data)


def test_a_50000_by_50000_png_is_skipped_without_decoding():
    with pytest.raises(BadImage, match=r"exceeds the limit|cannot decode"):
        decode_image(_lying_png(50_000, 50_000))


def test_a_truncated_jpeg_is_skipped(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="JPEG")
    (tmp_path / "a.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    ds = open_dataset(tmp_path)
    assert list(ds.images()) == [] and ds.skipped[0][0] == "a.jpg"


HOSTILE_CAPTION = '<script>alert(1)</script><a href="javascript:alert(2)">x</a>'


def _attributes(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', page)


def test_reports_escape_captions_and_link_only_their_own_files(tmp_path, rng, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("pyarrow")
    from alignscope.io import StoreWriter

    writer = StoreWriter(tmp_path / "store", np.float32)
    img = rng.normal(size=(30, 8)).astype(np.float32)
    txt = rng.normal(size=(30, 8)).astype(np.float32)
    writer.write_shard(
        0,
        {"image": img, "text": txt},
        {
            "id": [f"id-{i}" for i in range(30)],
            "caption": [HOSTILE_CAPTION] * 30,
            "extra": [""] * 30,
        },
    )
    assert (
        main(
            [
                "screen",
                str(tmp_path / "store"),
                "--out",
                str(tmp_path / "s"),
                "--scores",
                "alignment",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "replicate",
                str(tmp_path / "store"),
                str(tmp_path / "store"),
                "--out",
                str(tmp_path / "r"),
                "--view",
                "image",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    for page_path in (tmp_path / "s" / "report.html", tmp_path / "r" / "report.html"):
        page = page_path.read_text()
        assert "<script>" not in page and 'href="javascript:' not in page
        for value in _attributes(page):  # only our own data URIs and relative plot files
            assert value.startswith("data:image/png;base64,") or re.fullmatch(
                r"[\w/.-]+\.png", value
            ), value
    assert "&lt;script&gt;" in (tmp_path / "s" / "report.html").read_text()


def test_manifest_rows_out_of_range(tmp_path, rng, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("matplotlib")
    from alignscope.io import write_store

    x = rng.normal(size=(10, 4)).astype(np.float32)
    write_store(tmp_path / "s", x, x)
    pq.write_table(pa.table({"row": [3, 99], "poisoned": [True, True]}), tmp_path / "m.parquet")
    assert (
        main(
            [
                "screen",
                str(tmp_path / "s"),
                "--out",
                str(tmp_path / "o"),
                "--scores",
                "alignment",
                "--manifest",
                str(tmp_path / "m.parquet"),
            ]
        )
        == 2
    )
    assert "manifest rows must be in [0, 10); got 3..99" in capsys.readouterr().err


def test_exact_ad_of_a_store_too_large_for_memory_is_refused(tmp_path, monkeypatch):
    from alignscope import alignment_difficulty
    from alignscope.io import open_store
    from alignscope.metrics import _terms

    for view in ("img_emb", "text_emb"):
        (tmp_path / view).mkdir()
        np.save(tmp_path / view / f"{view}_0.npy", np.ones((10, 4), np.float16))
    monkeypatch.setattr(_terms, "_available_memory", lambda: 100)  # 100 bytes free
    with pytest.raises(
        ValueError, match=r"holds 10 x 8 float32 rows in memory .* use method='sampled'"
    ):
        alignment_difficulty(open_store(tmp_path))


def test_regressions_found_by_fuzzing(tmp_path):
    """Inputs the fuzzer found: a pickle whose BYTEARRAY8 claims 700 GB (the C unpickler
    crashed on this family), and a .npy whose header is not a Python literal (SyntaxError)."""
    from alignscope.io import open_store
    from alignscope.io.safe_pickle import UnsafePickleError, load_pair_pickle

    payload = (
        b"\x80\x05\x95\xbd\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x03img\x94\x8c\x13numpy._core.numeric"
        b"\x94\x8c\x0b_frombuffer\x94\x93\x94(\x960\x00\x00\x00\xad\x00\x00\x00\xd3\xc7&\xf9`v"
    )
    assert payload.startswith(b"\x80\x05")  # a real protocol-5 pickle prefix
    with pytest.raises(UnsafePickleError, match=r"exceeds the pickle|ends inside"):
        load_pair_pickle(payload)
    buf = io.BytesIO()
    np.save(buf, np.ones((3, 4), np.float16))
    data = bytearray(buf.getvalue())
    data[10] = ord("$")  # the header's first character
    (tmp_path / "img_emb").mkdir()
    (tmp_path / "img_emb" / "img_emb_0.npy").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"is truncated or not a valid \.npy file"):
        open_store(tmp_path)


def test_corrupt_image_in_a_saved_hf_dataset_is_skipped(tmp_path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    good = io.BytesIO()
    Image.new("RGB", (8, 8)).save(good, format="PNG")
    rows = {
        "image": [
            {"bytes": b"not an image", "path": None},
            {"bytes": good.getvalue(), "path": None},
        ],
        "text": ["bad", "good"],
    }
    datasets.Dataset.from_dict(rows, features=feats).save_to_disk(str(tmp_path / "hf"))
    ds = open_dataset(tmp_path / "hf")
    assert [r.caption for r, _ in ds.images()] == ["good"] and ds.skipped[0][0] == "0"


def test_caption_table_line_that_is_not_an_object(tmp_path):
    """Found by fuzzing: a captions.jsonl line holding a number raised AttributeError."""
    (tmp_path / "a.png").write_bytes(_png(4, 4))
    (tmp_path / "captions.jsonl").write_text("5\n")
    with pytest.raises(ValueError, match=r"captions.jsonl line 1: expected"):
        open_dataset(tmp_path)


def test_a_downloaded_store_cannot_point_reports_at_local_pictures(tmp_path, rng, capsys):
    """A store's embed_report.json naming a victim's folder must not put that folder's
    pictures into report.html; they appear only for the dataset the user names, and only when
    the store's own report names the same one."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("pyarrow")
    from alignscope.io import StoreWriter

    victim = tmp_path / "private_photos"
    victim.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(victim / f"{i}.png")
        (victim / f"{i}.txt").write_text(f"private {i}")
    store = tmp_path / "downloaded_store"
    writer = StoreWriter(store, np.float32)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    writer.add_shard(x, x + 0.1, {"id": [f"{i}.png" for i in range(4)], "caption": list("abcd")})
    (store / "embed_report.json").write_text(json.dumps({"dataset": str(victim)}))
    argv = ["screen", str(store), "--scores", "alignment", "--quiet", "--out"]
    assert main([*argv, str(tmp_path / "a")]) == 0
    assert "data:image/png" not in (tmp_path / "a" / "report.html").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main([*argv, str(tmp_path / "b"), "--images", str(elsewhere)]) == 0
    assert "data:image/png" not in (tmp_path / "b" / "report.html").read_text()
    # the user names the dataset the store says it came from: thumbnails, as intended
    assert main([*argv, str(tmp_path / "c"), "--images", str(victim)]) == 0
    assert (tmp_path / "c" / "report.html").read_text().count("data:image/png") == 4


def _tar_with(path, members):
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_ids_with_newlines_cannot_inject_rows_into_keep_txt(tmp_path, rng, tiny_open_clip):
    """A tar member named "001\\nINJECTED-ID.png" used to become an id spanning two lines, so
    keep.txt listed INJECTED-ID as a row to train on."""
    from alignscope.io.datasets import safe_id

    members = []
    for key in ("000", "001\nINJECTED-ID", "002"):
        members += [(f"{key}.png", _png(8 + len(key), 8)), (f"{key}.txt", b"a photo")]
    _tar_with(tmp_path / "shard.tar", members)
    ds = open_dataset(tmp_path / "shard.tar")
    ids = [r.id for r in ds]
    assert ids == ["shard/000", "shard/001\\nINJECTED-ID", "shard/002"]
    assert all("\n" not in i for i in ids)
    assert any("control characters" in w for w in ds.warnings)
    assert safe_id("a\u2028b\x00c") == "a\\u2028b\\x00c" and safe_id("ok-é") == "ok-é"
    argv = ["embed", str(tmp_path / "shard.tar"), "--out", str(tmp_path / "store"), "--quiet"]
    assert main([*argv, "--clip", tiny_open_clip]) == 0
    argv = ["screen", str(tmp_path / "store"), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*argv, "--scores", "k_distance", "--k", "1", "--remove-fraction", "0"]) == 0
    keep = (tmp_path / "o" / "keep.txt").read_text().splitlines()
    assert sorted(keep) == sorted(ids) and "INJECTED-ID" not in keep


def test_repeated_ids_are_made_unique_and_reported(tmp_path):
    members = []
    for key in ("a", "b", "a"):  # the same key twice in one shard
        members += [(f"{key}.png", _png(8, 8)), (f"{key}.txt", b"x")]
    _tar_with(tmp_path / "shard.tar", members)
    ds = open_dataset(tmp_path / "shard.tar")
    assert [r.id for r in ds] == ["shard/a", "shard/b", "shard/a#2"]
    assert [r.id for r in ds] == ["shard/a", "shard/b", "shard/a#2"]  # stable when read again
    assert ds.warnings.count("id 'shard/a' repeats; this record is 'shard/a#2'") == 1


def test_an_83_byte_png_of_1_by_1000_pixels_is_skipped_before_resizing():
    # the sscd preset scales the short side to 288: 288 x 288,000 float32 pixels (6.5 GB)
    data = _png(1, 1000)
    assert len(data) < 200
    with pytest.raises(BadImage, match=r"1x1000 pixels is more than 32 times longer"):
        decode_image(data)
    with pytest.raises(BadImage, match=r"400000x1 pixels is more than 32 times"):
        decode_image(np.zeros((1, 400_000, 3), np.uint8))
    assert decode_image(_png(32, 1000)).size == (32, 1000)  # 31.25:1 still passes


def test_local_files_never_become_captions(tmp_path):
    """A sidecar that links to a secret, a pipe (hangs a run) or /dev/zero (fills memory) is
    ignored with a warning; the images are still embedded."""
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"{i}.png").write_bytes(_png(8, 8))
    (data / "0.txt").write_text("a photo of a cat")
    (data / "1.txt").symlink_to(secret)
    os.mkfifo(data / "2.txt")
    (data / "3.txt").symlink_to("/dev/zero")
    ds = open_dataset(data)
    assert [(r.id, r.caption) for r in ds] == [("0.png", "a photo of a cat"), ("1.png", ""),
                                              ("2.png", ""), ("3.png", "")]  # fmt: skip
    assert sorted(w.split(":")[0] for w in ds.warnings) == [
        "caption '1.txt' ignored",
        "caption '2.txt' ignored",
        "caption '3.txt' ignored",
    ]
    assert not any("hunter2" in w for w in ds.warnings)
    (data / "captions.jsonl").symlink_to(secret)
    with pytest.raises(ValueError, match=r"captions.jsonl: a symbolic link"):
        open_dataset(data)


def test_pipes_and_oversized_members_in_tars(tmp_path, monkeypatch):
    from alignscope.io import datasets

    os.mkfifo(tmp_path / "a.tar")  # a FIFO named like a shard used to hang embed
    good = tmp_path / "b.tar"
    _tar_with(good, [("k.png", _png(8, 8)), ("k.txt", b"x"), ("big.png", bytes(4096))])
    monkeypatch.setattr(datasets, "MAX_MEMBER_BYTES", 1024)
    ds = open_dataset(tmp_path)
    assert [r.id for r in ds] == ["b/k"]
    assert "a.tar: skipped shard (not a regular file)" in ds.warnings
    assert any("'big.png'" in w and "over the 1,024-byte limit" in w for w in ds.warnings)
    with pytest.raises(ValueError, match=r"a.tar' is not a regular file"):
        open_dataset(tmp_path / "a.tar")


def test_long_and_unencodable_captions_do_not_stop_a_run(tmp_path, tiny_sscd):
    """A 200 KB caption in captions.csv (csv's field limit), a lone surrogate in a caption
    (metadata that cannot be written) used to stop embed."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"{i}.png").write_bytes(_png(8, 8))
    rows = ["file,caption", f"0.png,{'x' * 200_000}", '1.png,"a \ud800 b"', "2.png,plain"]
    (data / "captions.csv").write_text("\n".join(rows) + "\n", errors="surrogatepass")
    captions = {r.id: r.caption for r in open_dataset(data)}
    assert captions["0.png"] == "x" * 10_000 and captions["2.png"] == "plain"
    assert "\ud800" not in captions["1.png"] and captions["1.png"].startswith("a ")
    out = tmp_path / "store"
    argv = ["embed", str(data), "--out", str(out), "--sscd", str(tiny_sscd["torchscript"])]
    assert main([*argv, "--sscd-preset", "sscd-square", "--quiet"]) == 0
    pq = pytest.importorskip("pyarrow.parquet")
    assert pq.read_table(out / "metadata" / "metadata_0.parquet").num_rows == 3


@pytest.mark.parametrize(
    ("build", "message"),
    [
        # lists of references to the same list, six deep: a 6 KB pickle, 50**6 nodes rebuilt
        (lambda np_: _nested([0] * 50, 6), "with over 100,000 values"),
        # one 1 MiB array referenced 1,500 times: 1.5 GB of copies when rebuilt
        (
            lambda np_: {"img": [np_.zeros(2**20, np_.uint8)] * 1500, "text": "x"},
            "over 536,870,912",
        ),
        # integer keys that all hash alike: quadratic insertion
        (lambda np_: {i * (2**61 - 1): 0 for i in range(5000)}, "over 1,000 items"),
    ],
    ids=["memo-references", "one-buffer-many-times", "colliding-keys"],
)
def test_unpickler_budgets(build, message):
    import pickle

    from alignscope.io.safe_pickle import UnsafePickleError, load_pair_pickle

    data = pickle.dumps(build(np), protocol=2)  # protocol 2: arrays as _reconstruct + state
    with pytest.raises(UnsafePickleError, match=message):
        load_pair_pickle(data)


def _nested(leaf, depth):
    node = leaf
    for _ in range(depth):
        node = [node] * 50
    return node


def test_an_ordinary_pair_pickle_still_loads():
    import pickle

    from alignscope.io.safe_pickle import load_pair_pickle

    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    for protocol in (2, 4, 5):
        pair = load_pair_pickle(pickle.dumps({"img": img, "text": "a cat"}, protocol=protocol))
        np.testing.assert_array_equal(pair["img"], img)
        assert pair["text"] == "a cat"


def test_a_saved_dataset_cannot_point_at_files_outside_its_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    images = [{"bytes": _png(8, 8), "path": None}]
    for name in ("other", "mine"):
        datasets.Dataset.from_dict({"image": images, "text": [name]}, features=feats).save_to_disk(
            str(tmp_path / name)
        )
    assert [r.caption for r in open_dataset(tmp_path / "mine")] == ["mine"]
    state = json.loads((tmp_path / "mine" / "state.json").read_text())
    arrow = state["_data_files"][0]["filename"]
    state["_data_files"][0]["filename"] = f"../other/{arrow}"
    (tmp_path / "mine" / "state.json").write_text(json.dumps(state))
    with pytest.raises(
        ValueError, match=r"names the data file '../other/.*not a regular file inside"
    ):
        open_dataset(tmp_path / "mine")
