"""Embedding stores: layouts, lazy reads, and the errors bad stores give."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope.io import StoreWriter, open_store, write_store


@pytest.fixture
def arrays(rng):
    return rng.normal(size=(1000, 12)).astype(np.float32), rng.normal(size=(1000, 12)).astype(
        np.float32
    )


def test_clip_retrieval_round_trip(tmp_path, arrays):
    img, txt = arrays
    write_store(
        tmp_path / "s",
        img,
        txt,
        shard_rows=300,
        metadata={"caption": [f"c{i}" for i in range(1000)]},
    )
    names = sorted(p.name for p in (tmp_path / "s" / "img_emb").iterdir())
    assert names == [f"img_emb_{i}.npy" for i in range(4)]
    assert (tmp_path / "s" / "metadata" / "metadata_3.parquet").exists()
    store = open_store(tmp_path / "s")
    assert (store.n, store.d_image, store.d_text) == (1000, 12, 12)
    np.testing.assert_array_equal(store.read(250, 910, "text"), txt[250:910].astype(np.float16))
    ids = np.array([999, 0, 301, 301, 600, 5])
    np.testing.assert_array_equal(store.gather(ids, "image"), img[ids].astype(np.float16))
    store.release()
    np.testing.assert_array_equal(store.gather(ids, "image"), img[ids].astype(np.float16))


def test_shard_order_is_numeric(tmp_path, rng):
    writer = StoreWriter(tmp_path, dtype=np.float32)
    parts = [rng.normal(size=(3, 4)) for _ in range(12)]
    for p in parts:
        writer.add_shard(p, p)
    store = open_store(tmp_path)  # img_emb_10 sorts after img_emb_9, not after img_emb_1
    np.testing.assert_allclose(store.read(0, 36), np.concatenate(parts).astype(np.float32))


def test_writer_resumes_after_existing_shards(tmp_path, arrays):
    img, txt = arrays
    StoreWriter(tmp_path).add_shard(img[:10], txt[:10])
    again = StoreWriter(tmp_path)
    assert again.existing_shards() == [0] and again.next_index == 1
    with pytest.raises(ValueError, match="already holds shards"):
        write_store(tmp_path, img, txt)


def test_npy_pair_with_labels(tmp_path, arrays):
    img, txt = arrays
    np.save(tmp_path / "i.npy", img)
    np.save(tmp_path / "t.npy", txt)
    np.save(tmp_path / "l.npy", np.arange(1000) % 7)
    store = open_store(tmp_path / "i.npy", texts=tmp_path / "t.npy", labels=tmp_path / "l.npy")
    assert store.n == 1000 and store.labels[8] == 1
    np.testing.assert_array_equal(store.gather(np.array([3, 1]), "text"), txt[[3, 1]])


def test_parquet_with_list_columns(tmp_path, arrays):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    img, txt = arrays
    table = pa.table(
        {"image_embedding": list(img), "text_embedding": list(txt), "id": np.arange(1000)}
    )
    pq.write_table(table, tmp_path / "e.parquet")
    store = open_store(tmp_path / "e.parquet")
    np.testing.assert_array_equal(store.read(0, 1000, "image"), img)
    with pytest.raises(
        ValueError, match=r"has no column 'clip'; columns: image_embedding, text_embedding, id"
    ):
        open_store(tmp_path / "e.parquet", image_column="clip")


def _layout(root, img_rows=(5, 5), txt_rows=(5, 5), img_dims=(4, 4), dtype=np.float32):
    (root / "img_emb").mkdir(parents=True)
    (root / "text_emb").mkdir()
    for i, (r, d) in enumerate(zip(img_rows, img_dims, strict=True)):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", np.ones((r, d), dtype=dtype))
    for i, r in enumerate(txt_rows):
        np.save(root / "text_emb" / f"text_emb_{i}.npy", np.ones((r, 4), dtype=np.float32))
    return root


def test_misaligned_shard_rows(tmp_path):
    root = _layout(tmp_path, txt_rows=(5, 4))
    with pytest.raises(
        ValueError, match=r"shard 1: '.*img_emb_1.npy' has 5 rows but '.*text_emb_1.npy' has 4"
    ):
        open_store(root)


def test_mixed_dimensions(tmp_path):
    root = _layout(tmp_path, img_dims=(4, 6))
    with pytest.raises(
        ValueError, match=r"image shard '.*img_emb_1.npy' has d=6 but '.*img_emb_0.npy' has d=4"
    ):
        open_store(root)


def test_truncated_npy(tmp_path):
    root = _layout(tmp_path)
    path = root / "img_emb" / "img_emb_1.npy"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(
        ValueError, match=r"image shard '.*img_emb_1.npy' is truncated or not a valid .npy"
    ):
        open_store(root)


def test_header_that_lies_about_its_shape(tmp_path):
    root = _layout(tmp_path)
    path = root / "text_emb" / "text_emb_0.npy"
    path.write_bytes(path.read_bytes().replace(b"(5, 4)", b"(9, 4)"))
    with pytest.raises(ValueError, match=r"text shard '.*text_emb_0.npy' is truncated"):
        open_store(root)


def test_unsupported_dtype(tmp_path):
    root = _layout(tmp_path, dtype=np.int8)
    with pytest.raises(ValueError, match=r"has dtype int8; supported: float16, float32, float64"):
        open_store(root)


def test_empty_directory(tmp_path):
    with pytest.raises(
        ValueError, match=r"holds no embedding shards: expected img_emb/img_emb_<i>.npy"
    ):
        open_store(tmp_path)


def test_shard_missing_in_one_view(tmp_path):
    root = _layout(tmp_path, img_rows=(5, 5), txt_rows=(5,), img_dims=(4, 4))
    with pytest.raises(ValueError, match=r"shard index 1 is present in one view only"):
        open_store(root)


def test_metadata_row_count(tmp_path, arrays):
    pytest.importorskip("pyarrow")
    img, txt = arrays
    write_store(tmp_path, img[:20], txt[:20], shard_rows=10, metadata={"k": np.arange(20)})
    StoreWriter(tmp_path)._write_metadata(1, {"k": np.arange(3)}, 3)
    with pytest.raises(ValueError, match=r"shard 1: '.*metadata_1.parquet' has 3 rows but"):
        open_store(tmp_path)


def test_labels_of_wrong_length(tmp_path, arrays):
    img, _ = arrays
    np.save(tmp_path / "i.npy", img)
    np.save(tmp_path / "l.npy", np.arange(7))
    with pytest.raises(
        ValueError, match=r"labels '.*l.npy' has 7 entries but the store has 1000 rows"
    ):
        open_store(tmp_path / "i.npy", labels=tmp_path / "l.npy")


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_store(tmp_path / "nope")


def _shards(root, views=("img_emb", "text_emb"), indices=("0", "1"), rows=5, d=4):
    rng = np.random.default_rng(0)
    for view in views:
        (root / view).mkdir(parents=True, exist_ok=True)
        for i in indices:
            np.save(root / view / f"{view}_{i}.npy", rng.normal(size=(rows, d)).astype(np.float32))


def test_one_spelling_per_shard_index(tmp_path):
    """img_emb_1.npy beside img_emb_01.npy made each view pick one by directory order (AD 0.379
    instead of 0.040, exit 0): now an error naming both files."""
    _shards(tmp_path)
    np.save(tmp_path / "img_emb" / "img_emb_01.npy", np.ones((5, 4), np.float32))
    with pytest.raises(ValueError, match=r"img_emb_01.npy' and .*img_emb_1.npy' are both shard 1"):
        open_store(tmp_path)


def test_shard_indices_without_gaps(tmp_path):
    _shards(tmp_path, indices=("0", "2"))
    with pytest.raises(ValueError, match=r"numbered 0..1 without gaps; img_emb_1.npy is missing"):
        open_store(tmp_path)


@pytest.mark.parametrize("metadata", [("0",), ("0", "1", "2")])
def test_metadata_shards_match_the_embedding_shards(tmp_path, metadata):
    """An extra metadata_2 shifted ids (keep.txt named the wrong rows); a missing metadata_1
    failed with 'list index out of range'."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    _shards(tmp_path)
    (tmp_path / "metadata").mkdir()
    for i in metadata:
        pq.write_table(pa.table({"id": [f"{i}-{r}" for r in range(5)]}),
                       tmp_path / "metadata" / f"metadata_{i}.parquet")  # fmt: skip
    with pytest.raises(ValueError, match=r"must match the embedding shards one to one"):
        open_store(tmp_path)
