"""Captions that are not text (a 20,000-digit number, an object, a list) in every place a
caption is read: the record is skipped and listed with a reason naming where, the rest read."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from alignscope.cli import main
from alignscope.io.datasets import BadImage, open_dataset

DIGITS = "1" * 20_000  # past Python's 4,300-digit limit of int <-> str conversion


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _folder_with_jsonl(root):
    """Images a..h and a captions.jsonl whose lines 2-6 hold captions that are not text."""
    root.mkdir()
    for name in "abcdefgh":
        (root / f"{name}.png").write_bytes(_png())
    lines = [
        json.dumps({"file": "a.png", "caption": "a cat"}),
        f'{{"file": "b.png", "caption": {DIGITS}}}',
        json.dumps({"file": "c.png", "caption": {"nested": {"x": [1]}}}),
        json.dumps({"file": "d.png", "caption": ["a", "b"]}),
        json.dumps({"file": "e.png", "caption": True}),
        json.dumps({"file": "f.png", "text": 1.5}),
        json.dumps({"file": "g.png", "caption": None}),
        # a raw U+2028 inside a JSON string: str.splitlines cut this line in two
        json.dumps({"file": "h.png", "caption": "one\u2028two"}, ensure_ascii=False),
    ]
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root, lines


JSONL_SKIPS = [
    ("b.png", "captions.jsonl line 2: the caption is a number (20,000 characters), not text"),
    ("c.png", "captions.jsonl line 3: the caption is an object, not text"),
    ("d.png", "captions.jsonl line 4: the caption is a list, not text"),
    ("e.png", "captions.jsonl line 5: the caption is a boolean, not text"),
    ("f.png", "captions.jsonl line 6: the caption is a number (3 characters), not text"),
]


def test_jsonl_captions_that_are_not_text_are_skipped_and_listed(tmp_path):
    data, lines = _folder_with_jsonl(tmp_path / "data")
    with pytest.raises(ValueError, match=r"Exceeds the limit \(4300 digits\)"):
        json.loads(lines[1])  # the line does trip Python's limit (it stopped the reader)
    ds = open_dataset(data)
    assert [(r.id, r.caption) for r, _ in ds.images()] == [
        ("a.png", "a cat"),
        ("g.png", ""),  # null: no caption, as a missing key
        ("h.png", "one\u2028two"),
    ]
    assert ds.skipped == JSONL_SKIPS


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            b'{"file": "a.png", "caption": "caf\xe9"}',
            r"line 1: not UTF-8 text \(invalid continuation byte at byte 34\)$",
        ),
        (b"[" * 100_000, r"line 1: JSON nested too deeply$"),
        (
            f'{{"file": {DIGITS}, "caption": "x"}}'.encode(),
            r'line 1: expected \{"file": \.\.\., "caption": \.\.\.\} \(no string "file"\)$',
        ),
    ],
    ids=["latin-1", "deep", "number-as-file"],
)
def test_a_line_that_names_no_file_is_a_named_error(tmp_path, line, message):
    """Which image such a line was for cannot be told: the table is broken, said in one line."""
    (tmp_path / "a.png").write_bytes(_png())
    (tmp_path / "captions.jsonl").write_bytes(line + b"\n")
    with pytest.raises(ValueError, match=r"captions\.jsonl " + message):
        open_dataset(tmp_path)


def test_a_2_mb_caption_in_captions_csv_is_read_and_cut(tmp_path):
    """Over the 1 MiB field limit the reader set (to cure the 200 KB case), a longer caption
    stopped the run with a csv error."""
    for i in range(2):
        (tmp_path / f"{i}.png").write_bytes(_png())
    (tmp_path / "captions.csv").write_text(f"file,caption\n0.png,{'x' * 2_000_000}\n1.png,ok\n")
    captions = {r.id: r.caption for r in open_dataset(tmp_path)}
    assert captions == {"0.png": "x" * 10_000, "1.png": "ok"}


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_json_captions_that_are_not_text(tmp_path):
    _tar(
        tmp_path / "shard.tar",
        [
            ("k1.png", _png()),
            ("k1.json", f'{{"caption": {DIGITS}}}'.encode()),
            ("k2.png", _png()),
            ("k2.json", b'{"caption": {"a": 1}}'),
            ("k3.png", _png()),
            ("k3.json", b"[" * 100_000),  # not JSON a parser can read: no caption, as before
            ("k4.png", _png()),
            ("k4.json", b'{"caption": "ok"}'),
        ],
    )
    ds = open_dataset(tmp_path / "shard.tar")
    assert [(r.id, r.caption) for r, _ in ds.images()] == [("shard/k3", ""), ("shard/k4", "ok")]
    assert ds.skipped == [
        ("shard/k1", "k1.json: the caption is a number (20,000 characters), not text"),
        ("shard/k2", "k2.json: the caption is an object, not text"),
    ]


def _pickle_dir(root):
    """good.pkl, a pickle that asks for os.system, and one whose text is a 20,000-digit int."""
    root.mkdir()
    img = np.full((8, 8, 3), 7, np.uint8)

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch should-not-exist",))

    (root / "good.pkl").write_bytes(pickle.dumps({"img": img, "text": "a dog"}))
    (root / "evil.pkl").write_bytes(pickle.dumps({"img": Boom(), "text": "x"}))
    (root / "huge.pkl").write_bytes(pickle.dumps({"img": img, "text": 10**20_000}))
    return root


def test_a_pair_whose_text_is_a_huge_int_is_skipped_and_listed(tmp_path):
    ds = open_dataset(_pickle_dir(tmp_path / "data"))
    assert [(r.id, r.caption) for r, _ in ds.images()] == [("good.pkl", "a dog")]
    assert [rid for rid, _ in ds.skipped] == ["evil.pkl", "huge.pkl"]
    assert ds.skipped[1][1] == "'text' of the pair: the caption is a number, not text"
    with pytest.raises(BadImage, match=r"^unreadable pickle: refused to load global"):
        next(r for r in open_dataset(tmp_path / "data") if r.id == "evil.pkl").load()


@pytest.mark.parametrize("kind", ["jsonl", "pickles"])
def test_embed_lists_every_skipped_record_and_writes_only_into_out(
    tmp_path, tiny_sscd, monkeypatch, kind
):
    """embed stopped on the 20,000-digit caption (jsonl: a named error; pickle: a ValueError
    from str()); a refused pickle was left out of embed_report.json."""
    pytest.importorskip("pyarrow")
    monkeypatch.chdir(tmp_path)
    if kind == "jsonl":
        data = _folder_with_jsonl(tmp_path / "data")[0]
        kept, skipped = ["a.png", "g.png", "h.png"], JSONL_SKIPS
    else:
        data = _pickle_dir(tmp_path / "data")
        kept, skipped = ["good.pkl"], ["evil.pkl", "huge.pkl"]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = tmp_path / "store"
    argv = ["embed", str(data), "--out", str(out), "--sscd", str(tiny_sscd["torchscript"])]
    assert main([*argv, "--sscd-preset", "sscd-square", "--quiet", "--json"]) == 0
    report = json.loads((out / "embed_report.json").read_text())
    listed = [(s["id"], s["reason"]) for s in report["skipped"]]
    if kind == "jsonl":
        assert listed == skipped
    else:
        assert [rid for rid, _ in listed] == skipped
        assert listed[0][1].startswith("unreadable pickle: refused to load global")
    import pyarrow.parquet as pq

    assert pq.read_table(out / "metadata" / "metadata_0.parquet")["id"].to_pylist() == kept
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if out not in p.parents)
    assert [p for p in after if p != out.relative_to(tmp_path)] == before
