"""Short seeded fuzz runs (the long ones: benchmarks/fuzz.py): random bytes as images, tars,
pickles, stores and manifests, and random command lines, end in a result or a clear error."""

from __future__ import annotations

import io
import tarfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from alignscope.cli import main  # noqa: E402
from alignscope.io import open_store  # noqa: E402
from alignscope.io.datasets import BadImage, decode_image, open_dataset  # noqa: E402
from alignscope.io.safe_pickle import UnsafePickleError, load_pair_pickle  # noqa: E402

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLEAR = (ValueError, FileNotFoundError)  # BadImage and UnsafePickleError are ValueErrors


@FUZZ
@given(st.binary(max_size=2048))
def test_image_decoder(data):
    try:
        decode_image(data)
    except BadImage:
        pass


@FUZZ
@given(st.binary(max_size=4096))
def test_pair_pickles(data):
    try:
        load_pair_pickle(data)
    except UnsafePickleError:
        pass  # every unreadable pickle is this one clear error; the reader lists it as skipped


@FUZZ
@given(st.binary(max_size=4096))
def test_webdataset_tars(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("tar")
    (root / "x.tar").write_bytes(data)
    ds = open_dataset(root / "x.tar")
    for record in ds:
        try:
            record.load()
        except BadImage:
            pass


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a.jpg", "a.txt", "b.png", "../c.png", "/d.png", "e.json"]),
            st.binary(max_size=256),
        ),
        max_size=6,
    )
)
def test_webdataset_members(tmp_path_factory, members):
    root = tmp_path_factory.mktemp("tarm")
    with tarfile.open(root / "x.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = open_dataset(root / "x.tar")
    for record, _ in ds.images():
        assert ".." not in record.id and not record.id.startswith("/")


@FUZZ
@given(st.binary(max_size=512))
def test_store_shards(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("store")
    (root / "img_emb").mkdir()
    (root / "img_emb" / "img_emb_0.npy").write_bytes(data)
    try:
        store = open_store(root)
        store.read(0, store.n)
    except CLEAR:
        pass


ARGS = st.lists(
    st.sampled_from(
        [
            "ad",
            "demo",
            "info",
            "screen",
            "poison",
            "--json",
            "--images",
            "x.npy",
            "--texts",
            "--alpha",
            "2",
            "-1",
            "--profile",
            "nope",
            "--method",
            "auto",
            "--n",
            "0",
            "--poisoned",
            "a,b",
            "--k",
            "--out",
            "/nonexistent/dir",
        ]
    ),
    max_size=6,
)


@FUZZ
@given(ARGS)
def test_command_line(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        code = exc.code
    assert code in (0, 2)
    capsys.readouterr()
