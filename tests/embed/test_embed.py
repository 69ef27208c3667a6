"""Encoders and `alignscope embed` / `replicate` end to end with tiny local models."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from alignscope.cli import main
from alignscope.embed import SSCDEncoder, embed_dataset, load_clip
from alignscope.io import open_store, store_row_ids
from alignscope.io.datasets import open_dataset
from alignscope.search import replication


def smooth_images(rng: np.random.Generator, n: int, size: int = 64) -> list[Image.Image]:
    """Distinct low-frequency colour images: crops, resizes and JPEG keep them recognisable."""
    images = []
    for _ in range(n):
        coarse = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        images.append(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
    return images


def _folder(root, images, captions):
    root.mkdir(parents=True, exist_ok=True)
    for i, (im, cap) in enumerate(zip(images, captions, strict=True)):
        im.save(root / f"{i:03d}.png")
        (root / f"{i:03d}.txt").write_text(cap)
    return root


@pytest.mark.parametrize("spec_fixture", ["tiny_open_clip", "tiny_hf_clip"])
def test_clip_encoders_give_unit_embeddings(request, rng, spec_fixture):
    encoder = load_clip(request.getfixturevalue(spec_fixture))
    images = smooth_images(rng, 3)
    img = encoder.encode_images(images)
    txt = encoder.encode_texts(["a photo of a dog", "", "a cat"])
    assert img.shape == (3, encoder.dim) and txt.shape == (3, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    again = encoder.encode_images(images[:1])
    np.testing.assert_allclose(again[0], img[0], atol=1e-5)  # batch-independent


def test_sscd_torchscript_and_onnx_agree(tiny_sscd, rng):
    images = smooth_images(rng, 4)
    ts = SSCDEncoder(tiny_sscd["torchscript"], "sscd-square").encode(images)
    onnx = SSCDEncoder(tiny_sscd["onnx"], "sscd-square").encode(images)
    np.testing.assert_allclose(ts, onnx, atol=1e-4)
    # variable-size preset: one image at a time, still matching
    np.testing.assert_allclose(
        SSCDEncoder(tiny_sscd["torchscript"], "sscd").encode(images),
        SSCDEncoder(tiny_sscd["onnx"], "sscd").encode(images),
        atol=1e-4,
    )


def test_sscd_onnx_uint8_signature_is_read_from_the_model(tiny_sscd, rng):
    enc = SSCDEncoder(tiny_sscd["onnx_uint8"], "sscd")
    assert enc.layout == "uint8-nhwc" and enc.size == (96, 96)
    out = enc.encode(smooth_images(rng, 2))
    assert out.shape == (2, 16)


def test_embed_writes_a_store_and_resumes(tmp_path, rng, tiny_open_clip, tiny_sscd):
    images = smooth_images(rng, 7)
    data = _folder(tmp_path / "data", images, [f"caption {i}" for i in range(7)])
    (data / "007.png").write_bytes(b"\x89PNG broken")  # a corrupt image is skipped, listed
    clip = load_clip(tiny_open_clip)
    sscd = SSCDEncoder(tiny_sscd["torchscript"], "sscd-square")

    def embed():
        return embed_dataset(
            open_dataset(data),
            tmp_path / "store",
            clip=clip,
            sscd=sscd,
            batch_size=2,
            shard_rows=3,
            progress=False,
        )

    report = embed()
    assert report.images == 7 and report.shards_written == [0, 1, 2]
    assert [s[0] for s in report.skipped] == ["007.png"]
    store = open_store(tmp_path / "store")
    assert store.n == 7 and store.has_view("sscd") and store.dim("image") == clip.dim
    again = embed()
    assert again.shards_skipped == [0, 1, 2] and again.images == 0
    saved = json.loads((tmp_path / "store" / "embed_report.json").read_text())
    assert saved["shards_skipped"] == [0, 1, 2]


def test_a_shard_of_only_corrupt_images_keeps_the_store_readable(tmp_path, rng, tiny_sscd):
    """Records 3-5 (all of shard 1) do not decode: shard 1 is written with no rows, so the
    store's 0..K-1 series has no gap (it did not open: "img_emb_1.npy is missing"), its ids
    are those of the other shards in order, and a rerun decodes nothing again."""
    images = smooth_images(rng, 8)
    data = _folder(tmp_path / "data", images, [f"caption {i}" for i in range(8)])
    for i in (3, 4, 5):
        (data / f"{i:03d}.png").write_bytes(b"\x89PNG broken")
    sscd = SSCDEncoder(tiny_sscd["torchscript"], "sscd-square")

    def embed():
        return embed_dataset(
            open_dataset(data), tmp_path / "store", sscd=sscd, shard_rows=3, progress=False
        )

    report = embed()
    assert report.images == 5 and report.shards_written == [0, 1, 2]
    assert [s[0] for s in report.skipped] == ["003.png", "004.png", "005.png"]
    store = open_store(tmp_path / "store")
    assert store.n == 5
    assert store_row_ids(tmp_path / "store") == [
        "000.png",
        "001.png",
        "002.png",
        "006.png",
        "007.png",
    ]
    want = sscd.encode([images[i] for i in (0, 1, 2, 6, 7)])
    np.testing.assert_allclose(store.read(0, 5, "sscd"), want, atol=2e-3)  # float16 store
    again = embed()
    assert again.shards_skipped == [0, 1, 2] and again.images == 0


def test_copies_rank_their_source_first(tmp_path, rng, tiny_sscd):
    train = smooth_images(rng, 20)
    copies = []
    for im in train[:8]:
        buf = io.BytesIO()
        im.crop((2, 2, 61, 61)).resize((70, 70)).save(buf, format="JPEG", quality=80)
        copies.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    enc = SSCDEncoder(tiny_sscd["torchscript"], "sscd-square")
    result = replication(enc.encode(copies), enc.encode(train))
    np.testing.assert_array_equal(result.index[:, 0], np.arange(8))


def test_cli_embed_then_replicate(tmp_path, rng, tiny_sscd, capsys):
    pytest.importorskip("matplotlib")
    train = smooth_images(rng, 12)
    gen = [im.resize((60, 60)) for im in train[:4]]
    _folder(tmp_path / "train", train, [""] * 12)
    _folder(tmp_path / "gen", gen, [""] * 4)
    for name in ("train", "gen"):
        argv = [
            "embed",
            str(tmp_path / name),
            "--out",
            str(tmp_path / f"{name}_store"),
            "--sscd",
            str(tiny_sscd["torchscript"]),
            "--sscd-preset",
            "sscd-square",
            "--quiet",
            "--json",
        ]
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["images"] == (12 if name == "train" else 4)
    argv = [
        "replicate",
        str(tmp_path / "gen_store"),
        str(tmp_path / "train_store"),
        "--out",
        str(tmp_path / "rep"),
        "--quiet",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["n_generated"] == 4
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {
        "summary.json",
        "scatter.png",
        "report.html",
    }


def test_bad_specs():
    with pytest.raises(ValueError, match="CLIP spec must be open_clip:NAME"):
        load_clip("ViT-B-32")
    with pytest.raises(ValueError, match="unknown CLIP spec kind 'timm'"):
        load_clip("timm:x")
    with pytest.raises(FileNotFoundError, match="SSCD model"):
        SSCDEncoder("/nonexistent.pt")


def test_cli_replicate_embeds_datasets_itself(tmp_path, rng, tiny_sscd, capsys):
    pytest.importorskip("matplotlib")
    train = smooth_images(rng, 10)
    _folder(tmp_path / "train", train, [""] * 10)
    _folder(tmp_path / "gen", [im.resize((58, 58)) for im in train[:3]], [""] * 3)
    base = [
        "replicate",
        str(tmp_path / "gen"),
        str(tmp_path / "train"),
        "--out",
        str(tmp_path / "rep"),
        "--quiet",
        "--json",
    ]
    assert main(base) == 2
    assert "is an image dataset; give --sscd MODEL" in capsys.readouterr().err
    assert main([*base, "--sscd", str(tiny_sscd["onnx"]), "--sscd-preset", "sscd-square"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["n_generated"] == 3
    assert (tmp_path / "rep" / "training_store" / "sscd_emb" / "sscd_emb_0.npy").exists()
    assert (tmp_path / "rep" / "report.html").read_text().count("data:image/png;base64,") == 9
    pq = pytest.importorskip("pyarrow.parquet")
    matches = pq.read_table(tmp_path / "rep" / "matches.parquet").to_pydict()
    gen_ids = [r.id for r in open_dataset(tmp_path / "gen")]
    train_ids = [r.id for r in open_dataset(tmp_path / "train")]
    assert matches["generated_id"] == [gen_ids[i] for i in matches["generated"]]
    assert matches["train_id"] == [train_ids[i] for i in matches["train"]]
    assert matches["duplicate_id"] == [train_ids[i] for i in matches["duplicate"]]
    # another setting into the same --out: refused, naming it, until --overwrite
    model = ["--sscd", str(tiny_sscd["onnx"]), "--sscd-preset", "sscd-square"]
    assert main([*base, *model, "--k", "2"]) == 2
    assert "k: 1 there, 2 now" in capsys.readouterr().err
    assert main([*base, *model, "--k", "2", "--overwrite"]) == 0


def test_embedding_a_dataset_without_captions_warns_once(tmp_path, rng, tiny_open_clip, capsys):
    _folder(tmp_path / "data", smooth_images(rng, 3), [""] * 3)
    for caption in (tmp_path / "data").glob("*.txt"):
        caption.unlink()
    argv = ["embed", str(tmp_path / "data"), "--out", str(tmp_path / "s"), "--clip"]
    assert main([*argv, tiny_open_clip, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("no record has a caption") == 1
    report = json.loads((tmp_path / "s" / "embed_report.json").read_text())
    assert any("no record has a caption" in w for w in report["warnings"])
