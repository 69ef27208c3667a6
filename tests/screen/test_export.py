"""`screen --hf-dataset DIR --hf-out OUT`: the scores joined to a saved Hugging Face dataset,
filtered by a pipeline to exactly the rows of keep.txt."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from alignscope.cli import main

N = 12
BROKEN = 4  # this row has no image: the embedding skips it, the screen never sees it


def _saved_dataset(root):
    datasets = pytest.importorskip("datasets")
    pictures = []
    for i in range(N):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(buf, format="PNG")
        pictures.append(None if i == BROKEN else {"bytes": buf.getvalue(), "path": None})
    features = datasets.Features(
        {"image": datasets.Image(), "text": datasets.Value("string"), "n": datasets.Value("int64")}
    )
    rows = {"image": pictures, "text": [f"caption {i}" for i in range(N)], "n": list(range(N))}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(root))
    return root


@pytest.fixture
def embedded(tmp_path, rng):
    """A saved dataset and a store of its decodable rows, named as `alignscope embed` names
    them (the row numbers) and saying which dataset it came from."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("pyarrow")
    from alignscope.io import StoreWriter
    from alignscope.io.datasets import open_dataset

    data = _saved_dataset(tmp_path / "hf")
    ids = [r.id for r, _ in open_dataset(data).images()]
    assert ids == [str(i) for i in range(N) if i != BROKEN]  # the ids the join relies on
    x = rng.normal(size=(len(ids), 8)).astype(np.float32)
    writer = StoreWriter(tmp_path / "store", np.float32)
    writer.add_shard(x, x + rng.normal(size=x.shape).astype(np.float32), {"id": ids})
    (tmp_path / "store" / "embed_report.json").write_text(json.dumps({"dataset": str(data)}))
    return tmp_path


def _screen(root, *extra):
    argv = ["screen", str(root / "store"), "--out", str(root / "o"), "--scores", "k_distance"]
    return main([*argv, "--k", "3", "--remove-fraction", "0.3", "--quiet", *extra])


def test_the_exported_dataset_filters_to_exactly_the_rows_of_keep_txt(embedded, capsys):
    datasets = pytest.importorskip("datasets")
    import pyarrow.parquet as pq

    argv = ["--hf-dataset", str(embedded / "hf"), "--hf-out", str(embedded / "scored")]
    assert _screen(embedded, *argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"saved {embedded / 'hf'} with the scores to {embedded / 'scored'}: 12 rows, 11 "
        "screened, 8 kept"
    )
    keep = (embedded / "o" / "keep.txt").read_text().split()
    ds = datasets.load_from_disk(str(embedded / "scored"))
    kept = ds.filter(lambda r: not r["removed"])
    assert [str(n) for n in kept["n"]] == keep and len(keep) == 8
    # every column joined by id, as scores.parquet has it
    scores = pq.read_table(embedded / "o" / "scores.parquet").to_pydict()
    by_id = {i: j for j, i in enumerate(scores["id"])}
    for row in ds:
        j = by_id.get(str(row["n"]))
        if j is None:  # the row without an image: never screened, so not in keep.txt
            assert row["n"] == BROKEN and row["removed"] and not row["screened"]
            assert row["k_distance"] is None and row["rank"] is None
            continue
        assert row["screened"] and row["removed"] == scores["removed"][j]
        assert (row["k_distance"], row["rank"]) == (scores["k_distance"][j], scores["rank"][j])
    # the dataset itself is unchanged: same rows, same features, images still decodable
    assert ds["text"] == [f"caption {i}" for i in range(N)]
    assert isinstance(ds.features["image"], datasets.Image) and ds[0]["image"].size == (8, 8)


def test_export_errors_are_one_line_naming_the_option(embedded, tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    hf = str(embedded / "hf")
    assert _screen(embedded, "--hf-out", str(tmp_path / "x")) == 2
    assert capsys.readouterr().err.strip() == (
        "alignscope: error: --hf-out needs --hf-dataset DIR: the saved Hugging Face dataset "
        "STORE was embedded from"
    )
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    argv = ["screen", str(folder), "--out", str(tmp_path / "f"), "--hf-out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"alignscope: error: STORE: {str(folder)!r} is a folder dataset; the export needs a "
        "Hugging Face dataset saved with save_to_disk (a folder with state.json)"
    )
    assert _screen(embedded, "--hf-dataset", hf) == 2
    assert "--hf-dataset needs --hf-out DIR, the folder to save it into" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert _screen(embedded, "--hf-dataset", hf, "--hf-out", str(tmp_path / "taken")) == 2
    assert (
        f"--hf-out: '{tmp_path / 'taken'}' already exists; give a new folder to save into"
        in capsys.readouterr().err
    )
    # another saved dataset than the one the store was embedded from
    other = _saved_dataset(tmp_path / "other")
    assert _screen(embedded, "--hf-dataset", str(other), "--hf-out", str(tmp_path / "y")) == 2
    assert (
        f"--hf-dataset: the store was embedded from {hf!r}, not {str(other)!r}; give the "
        "dataset the store was embedded from" in capsys.readouterr().err
    )
    assert not (embedded / "o" / "scores.parquet").exists()  # all refused before any work
    # a dataset that already has a column the export adds
    clash = datasets.load_from_disk(hf).add_column("removed", [False] * N)
    clash.save_to_disk(str(tmp_path / "clash"))
    from alignscope.screen.export import to_hf_dataset

    assert _screen(embedded) == 0
    with pytest.raises(ValueError, match=r"the dataset already has a column 'removed'; pass a "):
        to_hf_dataset(tmp_path / "clash", embedded / "o" / "scores.parquet", tmp_path / "z")
    counts = to_hf_dataset(
        tmp_path / "clash", embedded / "o" / "scores.parquet", tmp_path / "z", prefix="as_"
    )
    assert counts == {"rows": N, "screened": N - 1, "kept": 8}
    assert datasets.load_from_disk(str(tmp_path / "z"))["removed"] == [False] * N  # untouched


def test_scores_of_another_store_are_refused(embedded, tmp_path):
    pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from alignscope.screen.export import to_hf_dataset

    scores = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"id": ["3", "a.png"], "removed": [False, True]}), scores)
    with pytest.raises(
        ValueError,
        match=r"id 'a\.png' is not a row number of .* \(0\.\.11\); the screened store was not "
        r"embedded from this saved dataset",
    ):
        to_hf_dataset(embedded / "hf", scores, tmp_path / "out")
    pq.write_table(pa.table({"id": ["3", "3"], "removed": [False, True]}), scores)
    with pytest.raises(ValueError, match=r"id '3' appears more than once"):
        to_hf_dataset(embedded / "hf", scores, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _PixelClip:
    """A CLIP encoder of the user's own: an image's vector from its pixels, a caption's from
    its characters (deterministic, and different rows differ)."""

    spec, device, dim = "pixels", "cpu", 8

    def encode_images(self, images):
        rows = [np.resize(np.asarray(im, np.float32).ravel()[::7], self.dim) for im in images]
        return np.stack(rows) / 255.0 + np.arange(self.dim, dtype=np.float32)

    def encode_texts(self, texts, normalize=True):
        return np.stack([np.resize(np.frombuffer(t.encode(), np.uint8), self.dim) for t in texts])


@pytest.fixture
def embedded_for_real(tmp_path):
    """The saved dataset, embedded by `alignscope embed`'s code (its report lists the row
    without an image as skipped; its metadata keeps each row's caption)."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("pyarrow")
    from alignscope.embed import embed_dataset
    from alignscope.io.datasets import open_dataset

    data = _saved_dataset(tmp_path / "hf")
    embed_dataset(open_dataset(data), tmp_path / "store", clip=_PixelClip(), progress=False)
    return tmp_path


def _resaved(path, change):
    """The dataset at ``path`` replaced by ``change(dataset)``, saved at the same path (as a
    user re-saving a filtered or shuffled copy does)."""
    datasets = pytest.importorskip("datasets")
    changed = change(datasets.load_from_disk(str(path)))
    changed.save_to_disk(str(path.parent / "staged"))
    shutil.rmtree(path)
    (path.parent / "staged").rename(path)
    return datasets.load_from_disk(str(path))


def test_a_dataset_changed_since_the_embedding_is_refused(embedded_for_real, capsys):
    root = embedded_for_real
    hf, store = root / "hf", root / "store"
    export = ["--hf-dataset", str(hf)]
    assert _screen(root, *export, "--hf-out", str(root / "x0")) == 0  # as embedded: joined
    again = "give the saved dataset the store was embedded from, or embed this one again"
    # a row dropped, then one appended: the row count differs from what the store recorded
    for name, change, rows in (
        ("x1", lambda d: d.select(range(N - 1)), N - 1),
        ("x2", lambda d: d.add_item({"image": None, "text": "new", "n": N}), N + 1),
    ):
        _resaved(hf, change)
        capsys.readouterr()
        assert _screen(root, *export, "--hf-out", str(root / name)) == 2
        assert capsys.readouterr().err == (
            f"alignscope: error: --hf-dataset: {str(hf)!r} has {rows} rows, but the store "
            f"{str(store)!r} was embedded from {N} ({N - 1} embedded, 1 skipped): the dataset "
            f"changed since; {again}\n"
        )
        shutil.rmtree(hf)
        _saved_dataset(hf)  # the embedded rows again
    # the same rows in another order: the row count matches, the captions do not
    shuffled = _resaved(hf, lambda d: d.shuffle(seed=1))
    row = next(i for i in range(N) if i != BROKEN and shuffled["text"][i] != f"caption {i}")
    capsys.readouterr()
    assert _screen(root, *export, "--hf-out", str(root / "x3")) == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: --hf-dataset: {str(hf)!r}: row {row} has the caption "
        f"{shuffled['text'][row]!r}, but the store {str(store)!r} was embedded from a row "
        f"{row} captioned 'caption {row}': the dataset changed since; {again}\n"
    )
    assert not any((root / f"x{i}").exists() for i in (1, 2, 3))


def test_to_hf_dataset_given_the_store_checks_the_dataset(embedded_for_real, tmp_path):
    datasets = pytest.importorskip("datasets")
    from alignscope.screen.export import to_hf_dataset

    root = embedded_for_real
    assert _screen(root) == 0
    scores, store = root / "o" / "scores.parquet", root / "store"
    # another column added to the same rows: still the screened dataset
    datasets.load_from_disk(str(root / "hf")).add_column("extra", list(range(N))).save_to_disk(
        str(tmp_path / "wider")
    )
    counts = to_hf_dataset(tmp_path / "wider", scores, tmp_path / "a", store=store)
    assert counts == {"rows": N, "screened": N - 1, "kept": 8}
    # one caption rewritten in the middle: caught (every row of this small store is sampled)
    edited = _resaved(root / "hf", lambda d: d.map(lambda r: {"text": r["text"].upper()}
                                                   if r["n"] == 7 else r))  # fmt: skip
    assert edited["text"][7] == "CAPTION 7"
    with pytest.raises(ValueError) as refused:
        to_hf_dataset(root / "hf", scores, tmp_path / "b", store=store)
    assert str(refused.value).startswith(
        f"{str(root / 'hf')!r}: row 7 has the caption 'CAPTION 7', but the store "
    )
    assert not (tmp_path / "b").exists()
    # without the store, the ids alone are checked (the join of earlier versions)
    assert to_hf_dataset(root / "hf", scores, tmp_path / "c")["rows"] == N
