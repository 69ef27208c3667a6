"""The poison manifest's one reader: columns type-checked, rows checked, flags exact."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope.io.manifest import COLUMNS, poison_flags, read_manifest, write_manifest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _write(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


def test_flags_follow_the_rows_not_the_order(tmp_path):
    path = _write(tmp_path / "m.parquet", row=[4, 0, 2], poisoned=[True, False, True])
    np.testing.assert_array_equal(poison_flags(path, 6), [0, 0, 1, 0, 1, 0])


def test_write_then_read_every_column(tmp_path):
    columns = {c: [] for c in COLUMNS}
    write_manifest(tmp_path / "m.parquet", {"row": [1], "poisoned": [True]})
    assert read_manifest(tmp_path / "m.parquet", ("row", "poisoned")) == {
        "row": [1],
        "poisoned": [True],
    }
    with pytest.raises(ValueError, match=r"unknown manifest columns \['rows'\]"):
        write_manifest(tmp_path / "x.parquet", {"rows": [1], **columns})


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"row": [0, 1], "poisoned": ["false", "true"]}, "'poisoned' must be boolean, got string"),
        ({"row": [0.0, 1.0], "poisoned": [True, False]}, "'row' must be integer, got double"),
        ({"row": [0, None], "poisoned": [True, False]}, "'row' has missing values"),
        ({"poisoned": [True]}, "not a poison manifest with 'row' and 'poisoned' columns"),
        ({"row": [0, 0], "poisoned": [True, False]}, "manifest lists a row twice"),
        ({"row": [0, 9], "poisoned": [True, False]}, r"rows must be in \[0, 3\); got 0..9"),
    ],
)
def test_hostile_manifests_are_named_errors(tmp_path, columns, message):
    path = _write(tmp_path / "m.parquet", **columns)
    with pytest.raises(ValueError, match=message):
        poison_flags(path, 3)


def test_a_file_that_is_not_parquet(tmp_path):
    (tmp_path / "m.parquet").write_text("row,poisoned\n0,false\n")
    with pytest.raises(ValueError, match="not a readable poison manifest"):
        poison_flags(tmp_path / "m.parquet", 3)
