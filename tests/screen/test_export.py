"""`screen --hf-dataset DIR --hf-out OUT`: the scores joined to a saved Hugging Face dataset,
filtered by a pipeline to exactly the rows of keep.txt."""

from __future__ import annotations

import io
import json

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
