"""The `alignscope` command as a user runs it: exit codes, stdout/stderr, files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import alignscope
from alignscope.cli import main


@pytest.fixture
def npy_pair(tmp_path, rng):
    a = rng.normal(size=(120, 8)).astype(np.float32)
    b = (0.6 * a + rng.normal(size=(120, 8))).astype(np.float32)
    np.save(tmp_path / "img.npy", a)
    np.save(tmp_path / "txt.npy", b)
    return tmp_path, a, b


def test_ad_json(npy_pair, capsys):
    path, a, b = npy_pair
    code = main(
        ["ad", "--images", str(path / "img.npy"), "--texts", str(path / "txt.npy"), "--json"]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ad"] == pytest.approx(alignscope.alignment_difficulty(a, b).ad, abs=1e-12)
    assert data["profile"] == "paper" and data["n"] == 120


def test_ad_table(npy_pair, capsys):
    path, _, _ = npy_pair
    assert main(["ad", "--images", str(path / "img.npy"), "--texts", str(path / "txt.npy")]) == 0
    out = capsys.readouterr().out
    assert "structure AD" in out and "AD (alpha=0.8)" in out


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_per_sample_output(npy_pair, capsys, suffix):
    path, a, b = npy_pair
    out = path / f"terms{suffix}"
    argv = [
        "ad",
        "--images",
        str(path / "img.npy"),
        "--texts",
        str(path / "txt.npy"),
        "--per-sample",
        str(out),
        "--json",
        "--profile",
        "half",
    ]
    assert main(argv) == 0
    expected = alignscope.alignment_difficulty(a, b, profile="half", per_sample=True).per_sample
    if suffix == ".npy":
        table = np.load(out)
        d_s, rows = table["d_s"], table["row"]
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        table = pq.read_table(out)
        d_s, rows = table["d_s"].to_numpy(), table["row"].to_numpy()
    np.testing.assert_allclose(d_s, expected.d_s)
    np.testing.assert_array_equal(rows, np.arange(120))
    # no temp files left; the hidden folder beside the file holds its provenance record
    hidden = [p.name for p in path.iterdir() if p.name.startswith(".")]
    assert hidden == [f".terms{suffix}.alignscope"]


def test_label_metrics_and_bounds(npy_pair, capsys):
    path, _, _ = npy_pair
    labels = np.arange(120) % 4
    np.save(path / "l.npy", labels)
    np.save(path / "t.npy", labels[::-1].copy())
    argv = [
        "ad",
        "--images",
        str(path / "img.npy"),
        "--labels",
        str(path / "l.npy"),
        "--true-labels",
        str(path / "t.npy"),
        "--bounds",
        "0.5,0.9,0,1.5",
        "--json",
    ]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["metric"] == "labels" and data["bounds"]["image"] == [0.0, 1.5]
    assert data["feature"] == pytest.approx(np.mean(labels != labels[::-1]))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_file(tmp_path, capsys):
    assert main(["ad", "--images", str(tmp_path / "nope.npy"), "--texts", "x.npy"]) == 2
    assert (
        _error_line(capsys)
        == f"alignscope: error: --images: no such file '{tmp_path / 'nope.npy'}'"
    )


def test_nan_row_names_the_flag(npy_pair, capsys):
    path, a, _ = npy_pair
    a[5, 1] = np.nan
    np.save(path / "bad.npy", a)
    assert main(["ad", "--images", str(path / "bad.npy"), "--texts", str(path / "txt.npy")]) == 2
    assert (
        _error_line(capsys)
        == "alignscope: error: --images row 5 contains NaN or inf; clean or drop that row"
    )


def test_row_mismatch(npy_pair, capsys):
    path, _, b = npy_pair
    np.save(path / "short.npy", b[:100])
    assert main(["ad", "--images", str(path / "img.npy"), "--texts", str(path / "short.npy")]) == 2
    assert "--images has 120 rows but --texts has 100" in _error_line(capsys)


def test_not_an_npy_file(npy_pair, capsys):
    path, _, _ = npy_pair
    (path / "junk.npy").write_bytes(b"hello")
    assert main(["ad", "--images", str(path / "junk.npy"), "--texts", str(path / "txt.npy")]) == 2
    assert _error_line(capsys).startswith("alignscope: error: --images: cannot read")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--profile", "cosine"], "unknown profile 'cosine'"),
        (["--alpha", "2"], "alpha must be in [0, 1]"),
        (
            ["--per-sample", "out.csv"],
            "--per-sample: per-sample output 'out.csv' must end in .npy or .parquet",
        ),
        (["--bounds", "1,2,3"], "--bounds takes"),
    ],
)
def test_bad_options(npy_pair, capsys, extra, message):
    path, _, _ = npy_pair
    assert (
        main(["ad", "--images", str(path / "img.npy"), "--texts", str(path / "txt.npy"), *extra])
        == 2
    )
    assert message in _error_line(capsys)


def test_usage_error_is_one_line_exit_2(capsys):
    assert main(["ad"]) == 2
    assert _error_line(capsys) == (
        "alignscope: error: give a STORE (directory, .npy or .parquet) or --images IMG.npy"
    )
    with pytest.raises(SystemExit) as exc:
        main(["ad", "--method", "fast"])
    assert exc.value.code == 2
    assert "argument --method: invalid choice: 'fast'" in _error_line(capsys)


def test_demo_json_small(capsys):
    argv = ["demo", "--n", "3000", "--concepts", "60", "--poisoned", "0,10,30", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    ads = [row["ad"] for row in data["rows"]]
    assert [row["poisoned_concepts"] for row in data["rows"]] == [0, 10, 30]
    assert ads[0] < ads[1] < ads[2]
    assert data["rows"][1]["poisons"] == 10 * round(0.0008 * 3000)


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backends"][0] == "cpu"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, b"alignscope: interrupted"), (signal.SIGTERM, 143, b"terminated")],
)
def test_ctrl_c_stops_promptly_and_writes_nothing(tmp_path, rng, signum, code, said):
    n = 60_000
    a = rng.normal(size=(n, 256)).astype(np.float32)
    np.save(tmp_path / "img.npy", a)
    np.save(tmp_path / "txt.npy", a[::-1].copy())
    out = tmp_path / "terms.npy"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alignscope",
            "ad",
            "--images",
            str(tmp_path / "img.npy"),
            "--texts",
            str(tmp_path / "txt.npy"),
            "--per-sample",
            str(out),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "ALIGNSCOPE_NUM_THREADS": "2"},
        # a shell that started pytest in the background ignores SIGINT, and the child would
        # inherit that: Python installs its KeyboardInterrupt handler only over SIG_DFL
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(3.0)  # imports, validation, then the O(N^2) pass (tens of seconds here)
    assert proc.poll() is None, proc.communicate()
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 5.0
    assert proc.returncode == code
    assert said in err
    assert not out.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"img.npy", "txt.npy"}  # no temp files


def test_store_sampled_json(tmp_path, capsys):
    from alignscope.io import write_store
    from alignscope.synth import concept_world

    w = concept_world(3000, concepts=30, poisoned_concepts=5, dim=8, seed=2)
    write_store(tmp_path / "store", w.image_emb, w.text_emb, shard_rows=1000)
    out = tmp_path / "ds.parquet"
    argv = [
        "ad",
        str(tmp_path / "store"),
        "--method",
        "sampled",
        "--seed",
        "3",
        "--json",
        "--per-sample",
        str(out),
        "--per-sample-method",
        "landmarks",
        "--landmarks",
        "64",
    ]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "sampled" and data["seed"] == 3 and data["n"] == 3000
    assert data["ci"]["guaranteed"]["low"] <= data["ad"] <= data["ci"]["guaranteed"]["high"]
    pq = pytest.importorskip("pyarrow.parquet")
    assert pq.read_table(out).column_names == ["row", "d_ab", "d_s", "ad", "d_s_se"]


def test_store_table_shows_intervals(tmp_path, capsys):
    from alignscope.io import write_store
    from alignscope.synth import concept_world

    w = concept_world(2000, concepts=20, dim=8, seed=2)
    write_store(tmp_path, w.image_emb, w.text_emb)
    assert (
        main(["ad", str(tmp_path), "--method", "auto", "--max-seconds", "1e-9", "--seed", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "95% guaranteed" in out and "auto: exact estimated" in out and "seed 1" in out


def test_bad_store_is_one_line(tmp_path, capsys):
    (tmp_path / "img_emb").mkdir()
    assert main(["ad", str(tmp_path)]) == 2
    assert _error_line(capsys).startswith(
        f"alignscope: error: STORE: '{tmp_path}' holds no embedding shards"
    )


def test_output_files_get_ordinary_permissions(npy_pair):
    path, _, _ = npy_pair
    out = path / "terms.npy"
    main(
        [
            "ad",
            "--images",
            str(path / "img.npy"),
            "--texts",
            str(path / "txt.npy"),
            "--per-sample",
            str(out),
        ]
    )
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


def test_replicate_writes_the_four_outputs(tmp_path, rng, capsys):
    pytest.importorskip("matplotlib")
    train = rng.normal(size=(2000, 16)).astype(np.float32)
    src = rng.integers(0, 2000, size=60)
    gen = (train[src] + 0.2 * rng.normal(size=(60, 16))).astype(np.float32)
    np.save(tmp_path / "gen.npy", gen)
    np.save(tmp_path / "train.npy", train)
    out = tmp_path / "rep"
    argv = [
        "replicate",
        str(tmp_path / "gen.npy"),
        str(tmp_path / "train.npy"),
        "--out",
        str(out),
        "--json",
        "--quiet",
    ]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["generated_to_train"]["fraction_above_0.75"] == 1.0
    names = {p.name for p in out.iterdir()}
    assert {"summary.json", "scatter.png", "report.html"} <= names
    assert "matches.parquet" in names or "matches.npy" in names
    assert (out / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "matches.parquet" in names:
        pq = pytest.importorskip("pyarrow.parquet")
        np.testing.assert_array_equal(
            pq.read_table(out / "matches.parquet")["train"].to_numpy(), src
        )


def test_replicate_escapes_paths_in_the_report(tmp_path, rng, capsys):
    pytest.importorskip("matplotlib")
    weird = tmp_path / "<script>alert(1)<script>"
    weird.mkdir()
    x = rng.normal(size=(30, 4)).astype(np.float32)
    np.save(weird / "g.npy", x)
    assert (
        main(
            [
                "replicate",
                str(weird / "g.npy"),
                str(weird / "g.npy"),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 0
    )
    page = (tmp_path / "o" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize(("code", "text"), [(28, "No space left"), (30, "Read-only")])
def test_full_or_read_only_disk_is_one_line_naming_the_path(tmp_path, rng, monkeypatch, capsys,
                                                            code, text):  # fmt: skip
    import errno

    a = rng.normal(size=(50, 4)).astype(np.float32)
    np.save(tmp_path / "img.npy", a)
    np.save(tmp_path / "txt.npy", a[::-1].copy())
    out = tmp_path / "terms.npy"

    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(os, "replace", failing_replace)
    argv = ["ad", "--images", str(tmp_path / "img.npy"), "--texts", str(tmp_path / "txt.npy")]
    assert main([*argv, "--per-sample", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and text in err and str(out) in err
    assert code in (errno.ENOSPC, errno.EROFS) and not out.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"img.npy", "txt.npy"}  # no temp file left


def test_flags_are_never_abbreviated(tmp_path, capsys):
    # `--image` used to be taken as `--images`: a typo that silently meant something else
    a = np.ones((4, 3), np.float32)
    np.save(tmp_path / "a.npy", a)
    with pytest.raises(SystemExit) as exited:
        main(["ad", "--image", str(tmp_path / "a.npy"), "--texts", str(tmp_path / "a.npy")])
    assert exited.value.code == 2
    assert "unrecognized arguments: --image" in capsys.readouterr().err


def test_report_headers_say_what_was_done(tmp_path, rng, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("pyarrow")
    from alignscope.io import write_store

    a = rng.normal(size=(60, 4)).astype(np.float32)
    np.save(tmp_path / "img.npy", a)
    np.save(tmp_path / "txt.npy", a + rng.normal(size=a.shape).astype(np.float32))
    argv = ["ad", "--images", str(tmp_path / "img.npy"), "--texts", str(tmp_path / "txt.npy")]
    argv += ["--per-sample", str(tmp_path / "d.npy"), "--per-sample-method", "landmarks"]
    assert main([*argv, "--landmarks", "8"]) == 0
    assert "(exact, per-sample D_s by landmarks," in capsys.readouterr().out
    write_store(tmp_path / "s", a, a)
    out = tmp_path / "o"
    argv = ["screen", str(tmp_path / "s"), "--out", str(out), "--scores", "k_distance", "--k", "2"]
    assert main([*argv, "--remove-fraction", "0.05", "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert "removed the top 5%: 3 removed, 57 kept." in page and "&quot;rule&quot;" not in page
