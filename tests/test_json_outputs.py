"""Every --json output of the command line, and the summary files written beside it, pinned:
the exact key set at every level (a missing, extra or renamed field fails) and the values
against independent references.

References: the dense float64 AD of ``_reference.alignment_difficulty`` (its own bounds
resolution included); brute-force cosine similarities and order-statistic percentiles written
here from their definitions; the closed forms of the synthetic worlds and of the poison plans;
CLIP scores recomputed from the saved images. ``screen --json`` is pinned in tests/screen/.
"""

from __future__ import annotations

import json
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import alignscope
from alignscope import _reference
from alignscope.cli import main
from alignscope.io import open_store

AD_KEYS = {
    "ad",
    "feature",
    "structure",
    "alpha",
    "profile",
    "bounds",
    "method",
    "n",
    "metric",
    "d_image",
    "d_text",
    "backend",
    "threads",
    "seconds",
}
# sampled results, and exact ones that carry a note (--method auto)
SAMPLED_KEYS = AD_KEYS | {"ci", "structure_ci", "feature_ci", "samples", "seed", "note"}
BOUNDS_KEYS = {"feature", "image", "text"}
INTERVALS_KEYS = {"asymptotic", "guaranteed"}
INTERVAL_KEYS = {"low", "high", "halfwidth", "confidence", "method"}


def _json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _keys(obj: dict, expected: set[str]) -> None:
    assert isinstance(obj, dict)
    got = set(obj)
    assert got == expected, f"missing {sorted(expected - got)}, unexpected {sorted(got - expected)}"


# ---------------------------------------------------------------------------------------------
# ad
# ---------------------------------------------------------------------------------------------

N, D = 120, 8
THREADS = "2"


@pytest.fixture
def npy(tmp_path, rng):
    """(N, d) image and caption embeddings as .npy files, and labels with some wrong ones."""
    a = rng.normal(size=(N, D)).astype(np.float32)
    b = (0.6 * a + rng.normal(size=(N, D))).astype(np.float32)
    labels = rng.integers(0, 4, size=N)
    truth = np.where(np.arange(N) % 7 == 0, (labels + 1) % 4, labels)
    for name, arr in (("img", a), ("txt", b), ("lab", labels), ("truth", truth)):
        np.save(tmp_path / f"{name}.npy", arr)
    return tmp_path, a.astype(np.float64), b.astype(np.float64), labels, truth


def _ad_argv(path: Path, *extra: str) -> list[str]:
    return ["ad", "--images", str(path / "img.npy"), "--threads", THREADS, "--json", *extra]


def _check_bounds(out: dict, ref_bounds: tuple) -> None:
    _keys(out, BOUNDS_KEYS)
    for key, pair in zip(("feature", "image", "text"), ref_bounds, strict=True):
        if pair is None:
            assert out[key] is None
        else:
            assert isinstance(out[key], list)
            assert out[key] == pytest.approx(list(pair), abs=1e-9), key


def _check_exact(data: dict, ref: dict, *, alpha: float, profile: str, metric: str) -> None:
    """Every field of an exact result against the dense reference."""
    # the terms differ, so a swapped field cannot pass
    assert ref["feature"] is None or abs(ref["feature"] - ref["structure"]) > 0.05
    assert data["ad"] == pytest.approx(ref["ad"], abs=1e-6)
    if ref["feature"] is None:
        assert data["feature"] is None
    else:
        assert data["feature"] == pytest.approx(ref["feature"], abs=1e-9)
    assert data["structure"] == pytest.approx(ref["structure"], abs=1e-6)
    assert data["alpha"] == alpha and data["profile"] == profile
    _check_bounds(data["bounds"], ref["bounds"])
    assert data["method"] == "exact" and data["metric"] == metric
    assert data["n"] == N and data["d_image"] == D
    assert data["d_text"] == (None if metric == "labels" else D)
    assert data["backend"] == "cpu" and data["threads"] == int(THREADS)
    assert isinstance(data["seconds"], float) and data["seconds"] >= 0.0


PAPER = ((0.55, 0.8), (0.0, 1.0), (0.0, 1.0))


@pytest.mark.parametrize(
    ("extra", "alpha", "profile", "ref_profile"),
    [
        ((), 0.8, "paper", "paper"),
        (("--alpha", "0.3", "--profile", "half"), 0.3, "half", "half"),
        (("--profile", "minmax"), 0.8, "minmax", "minmax"),
        (
            ("--bounds", "0.5,0.9,0.1,1.3,0.0,1.2"),
            0.8,
            "bounds",
            ((0.5, 0.9), (0.1, 1.3), (0.0, 1.2)),
        ),
        (("--bounds", "0.5,0.9,0.1,1.3"), 0.8, "bounds", ((0.5, 0.9), (0.1, 1.3), (0.0, 1.0))),
    ],
    ids=["paper", "half-alpha", "minmax", "bounds6", "bounds4"],
)
def test_ad_exact(npy, capsys, extra, alpha, profile, ref_profile):
    path, a, b, _, _ = npy
    data = _json(capsys, _ad_argv(path, "--texts", str(path / "txt.npy"), *extra))
    _keys(data, AD_KEYS)
    ref = _reference.alignment_difficulty(a, b, alpha=alpha, profile=ref_profile)
    _check_exact(data, ref, alpha=alpha, profile=profile, metric="embeddings")


def test_ad_exact_per_sample(npy, capsys):
    path, a, b, _, _ = npy
    out = path / "terms.npy"
    data = _json(capsys, _ad_argv(path, "--texts", str(path / "txt.npy"), "--per-sample", str(out)))
    _keys(data, AD_KEYS | {"per_sample_path"})
    ref = _reference.alignment_difficulty(a, b)
    _check_exact(data, ref, alpha=0.8, profile="paper", metric="embeddings")
    assert data["per_sample_path"] == str(out)
    table = np.load(out)
    assert table.dtype.names == ("row", "d_ab", "d_s", "ad")
    np.testing.assert_allclose(table["d_s"], ref["d_s"], atol=1e-6)
    np.testing.assert_allclose(table["d_ab"], ref["d_ab"], atol=1e-9)


def test_ad_exact_with_landmark_per_sample(npy, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    path, a, b, _, _ = npy
    out = path / "terms.parquet"
    argv = _ad_argv(path, "--texts", str(path / "txt.npy"), "--per-sample", str(out))
    argv += ["--per-sample-method", "landmarks", "--landmarks", "64", "--seed", "5"]
    data = _json(capsys, argv)
    # the landmark estimates are random: the seed that reproduces them is part of the result
    _keys(data, AD_KEYS | {"per_sample_path", "seed"})
    assert data["seed"] == 5
    ref = _reference.alignment_difficulty(a, b)
    _check_exact(data, ref, alpha=0.8, profile="paper", metric="embeddings")
    assert data["per_sample_path"] == str(out)
    table = pq.read_table(out)
    assert table.column_names == ["row", "d_ab", "d_s", "ad", "d_s_se"]
    # landmark D_s: unbiased, within a few standard errors of the exact value
    d_s, se = table["d_s"].to_numpy(), table["d_s_se"].to_numpy()
    assert np.all(np.abs(d_s - ref["d_s"]) <= 6.0 * se + 1e-9)


def test_ad_label_metrics(npy, capsys):
    path, a, _, labels, truth = npy
    argv = _ad_argv(
        path, "--labels", str(path / "lab.npy"), "--true-labels", str(path / "truth.npy")
    )
    data = _json(capsys, argv)
    _keys(data, AD_KEYS)
    ref = _reference.alignment_difficulty(a, labels=labels, true_labels=truth)
    ref["bounds"] = (ref["bounds"][0], ref["bounds"][1], None)  # no text view with labels
    _check_exact(data, ref, alpha=0.8, profile="paper", metric="labels")
    assert data["feature"] == pytest.approx(np.mean(labels != truth), abs=1e-12)


def test_ad_label_metrics_structure_only(npy, capsys):
    path, a, _, labels, _ = npy
    data = _json(capsys, _ad_argv(path, "--labels", str(path / "lab.npy"), "--alpha", "0"))
    _keys(data, AD_KEYS)
    ref = _reference.alignment_difficulty(a, labels=labels, alpha=0.0)
    ref["feature"] = None  # labels without true labels: no feature term
    ref["bounds"] = (ref["bounds"][0], ref["bounds"][1], None)
    _check_exact(data, ref, alpha=0.0, profile="paper", metric="labels")
    assert data["ad"] == data["structure"]


def _check_intervals(out: dict, confidence: float) -> None:
    _keys(out, INTERVALS_KEYS)
    for kind in ("asymptotic", "guaranteed"):
        ci = out[kind]
        _keys(ci, INTERVAL_KEYS)
        assert ci["low"] <= ci["high"] and ci["confidence"] == confidence
        assert ci["halfwidth"] == pytest.approx((ci["high"] - ci["low"]) / 2, abs=1e-15)


def test_ad_sampled(npy, capsys):
    path, a, b, _, _ = npy
    argv = _ad_argv(path, "--texts", str(path / "txt.npy"), "--method", "sampled", "--seed", "3")
    data = _json(capsys, [*argv, "--budget", str(16 * 64 * 64), "--confidence", "0.9"])
    _keys(data, SAMPLED_KEYS)
    ref = _reference.alignment_difficulty(a, b)
    assert abs(ref["feature"] - ref["structure"]) > 0.05
    assert data["method"] == "sampled" and data["seed"] == 3 and data["note"] is None
    assert data["samples"] == 16 * 64 * 64  # 16 blocks of 64 x 64 pairs
    assert data["n"] == N and data["d_image"] == D and data["d_text"] == D
    assert data["alpha"] == 0.8 and data["profile"] == "paper" and data["metric"] == "embeddings"
    _check_bounds(data["bounds"], PAPER)
    for key in ("ci", "structure_ci", "feature_ci"):
        _check_intervals(data[key], 0.9)
    # the feature term is exact at this N: a zero-width interval at the reference value
    assert data["feature"] == pytest.approx(ref["feature"], abs=1e-9)
    for kind in ("asymptotic", "guaranteed"):
        f = data["feature_ci"][kind]
        assert (f["low"], f["high"], f["halfwidth"], f["method"]) == (
            data["feature"],
            data["feature"],
            0.0,
            "exact",
        )
    # the structure estimate: near the exact value, which its guaranteed interval holds
    s = data["structure_ci"]
    assert data["structure"] == pytest.approx(ref["structure"], abs=0.02)
    assert s["guaranteed"]["low"] <= ref["structure"] <= s["guaranteed"]["high"]
    assert s["asymptotic"]["method"] == "t"
    assert s["guaranteed"]["method"] in ("hoeffding", "empirical-bernstein")
    # Hoeffding at 1 - delta/2 over 16 units in [0, R], R = 2 under the paper profile
    hoeffding = 2.0 * math.sqrt(math.log(2.0 / 0.05) / (2 * 16))
    assert 0.0 < s["guaranteed"]["halfwidth"] <= hoeffding
    # AD = 0.8 feature + 0.2 structure; its interval is centred there and only the sampled
    # term contributes width
    assert data["ad"] == pytest.approx(0.8 * data["feature"] + 0.2 * data["structure"], abs=1e-12)
    g = data["ci"]["guaranteed"]
    assert (g["low"] + g["high"]) / 2 == pytest.approx(data["ad"], abs=1e-12)
    assert g["halfwidth"] == pytest.approx(0.2 * s["guaranteed"]["halfwidth"], abs=1e-12)
    assert g["method"] == s["guaranteed"]["method"]


def test_ad_auto_choosing_exact_carries_its_note(npy, capsys):
    path, a, b, _, _ = npy
    argv = _ad_argv(path, "--texts", str(path / "txt.npy"), "--method", "auto")
    data = _json(capsys, [*argv, "--max-seconds", "1e9"])
    _keys(data, SAMPLED_KEYS)
    _check_exact(
        data, _reference.alignment_difficulty(a, b), alpha=0.8, profile="paper", metric="embeddings"
    )
    assert [data[k] for k in ("ci", "structure_ci", "feature_ci", "samples", "seed")] == [None] * 5
    assert data["note"].startswith("auto: exact estimated at ")
    assert data["note"].endswith("max_seconds=1e+09 -> exact")


# ---------------------------------------------------------------------------------------------
# demo, info
# ---------------------------------------------------------------------------------------------


def test_demo(capsys):
    from alignscope.synth import demo_world

    argv = ["demo", "--n", "1900", "--concepts", "19", "--poisoned", "0,3", "--dim", "16"]
    data = _json(capsys, [*argv, "--seed", "4", "--alpha", "0.7", "--threads", THREADS, "--json"])
    _keys(data, {"dataset", "rows"})
    assert data["dataset"] == {
        "generator": "alignscope.synth.demo.demo_world",
        "n": 1900,
        "concepts": 19,
        "dim": 16,
        "kind": "dirty",
        "seed": 4,
        "per_concept": 2,  # max(1, round(0.0008 * 1900))
        "profile": "paper",
        "alpha": 0.7,
    }
    assert [row["poisoned_concepts"] for row in data["rows"]] == [0, 3]
    for row in data["rows"]:
        _keys(row, AD_KEYS | {"poisoned_concepts", "poisons"})
        cp = row["poisoned_concepts"]
        assert row["poisons"] == cp * 2  # C_P concepts of m = 2 poisons each
        world = demo_world(1900, concepts=19, poisoned_concepts=cp, dim=16, seed=4)
        ref = _reference.alignment_difficulty(world.image_emb, world.text_emb, alpha=0.7)
        assert row["ad"] == pytest.approx(ref["ad"], abs=1e-6)
        assert row["feature"] == pytest.approx(ref["feature"], abs=1e-9)
        assert row["structure"] == pytest.approx(ref["structure"], abs=1e-6)
        assert row["alpha"] == 0.7 and row["profile"] == "paper" and row["method"] == "exact"
        _check_bounds(row["bounds"], PAPER)
        assert (row["n"], row["d_image"], row["d_text"]) == (1900, 16, 16)
        assert row["metric"] == "embeddings" and row["backend"] == "cpu"
        assert row["threads"] == int(THREADS) and row["seconds"] >= 0.0


CPU_KEYS = {"threads", "simd", "blas"}


def test_info(capsys):
    import importlib.util

    data = _json(capsys, ["info", "--json"])
    _keys(data, {"version", "backends", "cpu", "cuda"})
    assert data["version"] == alignscope.__version__
    _keys(data["cpu"], CPU_KEYS)
    assert data["cpu"]["threads"] == os.cpu_count()
    assert data["cpu"]["simd"] in {"avx512f", "avx2", "avx", "sse4.2", "sse2", "neon", "scalar"}
    assert "OpenBLAS" in data["cpu"]["blas"]
    built = importlib.util.find_spec("alignscope._cuda") is not None
    assert data["backends"] == (["cpu", "cuda"] if built else ["cpu"])
    if built and data["cuda"]["devices"]:
        _keys(data["cuda"], {"built", "devices", "reason", "names"})
        assert len(data["cuda"]["names"]) == data["cuda"]["devices"]
    else:
        _keys(data["cuda"], {"built", "devices", "reason"})
        reason = "no CUDA device" if built else "CUDA backend not built"
        assert data["cuda"] == {"built": built, "devices": 0, "reason": reason}


def test_info_with_cuda_devices(capsys, monkeypatch):
    """A CUDA module with two devices (a stand-in): the devices are listed by name."""
    fake = types.ModuleType("alignscope._cuda")
    fake.device_count = lambda: 2
    fake.device_name = lambda i: f"stand-in GPU {i}"
    monkeypatch.setitem(sys.modules, "alignscope._cuda", fake)
    monkeypatch.setattr(alignscope, "_cuda", fake, raising=False)
    data = _json(capsys, ["info", "--json"])
    _keys(data, {"version", "backends", "cpu", "cuda"})
    assert data["backends"] == ["cpu", "cuda"]
    assert data["cuda"] == {
        "built": True,
        "devices": 2,
        "reason": "",
        "names": ["stand-in GPU 0", "stand-in GPU 1"],
    }


# ---------------------------------------------------------------------------------------------
# replicate
# ---------------------------------------------------------------------------------------------

STATS_KEYS = {
    "count",
    "mean",
    "std",
    "p50",
    "p75",
    "p90",
    "p95",
    "p99",
    "fraction_above_0.5",
    "fraction_above_0.75",
}


def _percentile(values: np.ndarray, p: float) -> float:
    """The p-th percentile by linear interpolation between order statistics: position
    (n - 1) p / 100 in the sorted values."""
    s = sorted(float(v) for v in values)
    pos = (len(s) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def _dcr_stats(x: np.ndarray) -> dict[str, float]:
    mean = sum(x) / len(x)
    out = {
        "count": len(x),
        "mean": mean,
        "std": math.sqrt(sum((v - mean) ** 2 for v in x) / len(x)),
        "fraction_above_0.5": sum(v > 0.5 for v in x) / len(x),
        "fraction_above_0.75": sum(v > 0.75 for v in x) / len(x),
    }
    out.update({f"p{p}": _percentile(x, p) for p in (50, 75, 90, 95, 99)})
    return out


@pytest.fixture
def replication_inputs(tmp_path, rng):
    """Training rows with near-duplicates, generated rows copied from them with noise of many
    sizes: similarities spread over both thresholds, none within 1e-4 of one."""
    train = rng.normal(size=(200, 16))
    train[100:140] = train[:40] + 0.3 * rng.normal(size=(40, 16))
    src = rng.integers(0, 200, size=40)
    noise = np.linspace(0.05, 2.0, 40)[:, None] * rng.normal(size=(40, 16))
    gen = train[src] + noise
    np.save(tmp_path / "train.npy", train.astype(np.float32))
    np.save(tmp_path / "gen.npy", gen.astype(np.float32))
    u_train = _reference.unit_rows(train.astype(np.float32))
    sims = _reference.unit_rows(gen.astype(np.float32)) @ u_train.T
    self_sims = u_train @ u_train.T
    np.fill_diagonal(self_sims, -np.inf)
    for s in (sims.max(axis=1), self_sims.max(axis=1)):
        assert np.abs(s[:, None] - np.array([0.5, 0.75])).min() > 1e-4
    return tmp_path, sims, self_sims


@pytest.mark.parametrize("method", ["engine", "faiss-hnsw"])
def test_replicate(replication_inputs, capsys, method):
    pytest.importorskip("matplotlib")
    if method != "engine":
        pytest.importorskip("faiss")
    path, sims, self_sims = replication_inputs
    out = path / "rep"
    argv = ["replicate", str(path / "gen.npy"), str(path / "train.npy"), "--out", str(out)]
    data = _json(capsys, [*argv, "--k", "3", "--method", method, "--json", "--quiet"])
    _keys(data, {"summary", "files"})
    summary = data["summary"]
    recall = {"recall_at_1_vs_exact", "recall_sample"} if method != "engine" else set()
    _keys(summary, {"generated_to_train", "train_to_train", "n_generated", "k", "method"} | recall)
    assert (summary["n_generated"], summary["k"], summary["method"]) == (40, 3, method)
    top1 = sims.argmax(axis=1)
    expected = {
        "generated_to_train": _dcr_stats(sims.max(axis=1)),
        # each generated item's match, against its nearest *other* training item
        "train_to_train": _dcr_stats(self_sims.max(axis=1)[top1]),
    }
    for name, ref in expected.items():
        _keys(summary[name], STATS_KEYS)
        assert summary[name]["count"] == 40
        for key, value in ref.items():
            assert summary[name][key] == pytest.approx(value, abs=2e-6), (name, key)
    for name, key in [
        ("generated_to_train", "fraction_above_0.5"),
        ("generated_to_train", "fraction_above_0.75"),
        ("train_to_train", "fraction_above_0.75"),
    ]:
        assert 0.0 < expected[name][key] < 1.0  # the threshold splits the values
    if recall:
        # every generated item is checked against exact search (fewer than 256 of them)
        assert summary["recall_sample"] == 40
        matches = _matches(out)
        agree = np.mean(matches["train"][matches["rank"] == 1] == top1)
        assert summary["recall_at_1_vs_exact"] == pytest.approx(agree, abs=1e-12)
    _keys(data["files"], {"matches", "summary", "scatter", "report"})
    names = {"summary": "summary.json", "scatter": "scatter.png", "report": "report.html"}
    for key, name in names.items():
        assert data["files"][key] == str(out / name)
    assert Path(data["files"]["matches"]).parent == out and Path(data["files"]["matches"]).is_file()
    saved = json.loads((out / "summary.json").read_text())
    _keys(saved, set(summary) | {"generated", "training"})
    assert saved == {
        **summary,
        "generated": str(path / "gen.npy"),
        "training": str(path / "train.npy"),
    }


def _matches(out: Path) -> dict[str, np.ndarray]:
    if (out / "matches.parquet").exists():
        import pyarrow.parquet as pq

        return {
            k: np.asarray(v) for k, v in pq.read_table(out / "matches.parquet").to_pydict().items()
        }
    table = np.load(out / "matches.npy")
    return {k: table[k] for k in table.dtype.names}


# ---------------------------------------------------------------------------------------------
# embed, poison, train, evaluate
# ---------------------------------------------------------------------------------------------

NOUNS = ["dog", "cat", "car", "tree", "boat"]


def _image_folder(root: Path, rng, n: int, size: int = 32, broken: int | None = None) -> Path:
    root.mkdir()
    for i in range(n):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(root / f"{i:03d}.png")
        (root / f"{i:03d}.txt").write_text(f"a photo of a {NOUNS[i % 5]}")
    if broken is not None:  # an image that does not decode, its caption about no concept
        (root / f"{broken:03d}.png").write_bytes(b"\x89PNG broken")
        (root / f"{broken:03d}.txt").write_text("unreadable")
    return root


EMBED_KEYS = {
    "store",
    "dataset",
    "dataset_kind",
    "shards_written",
    "shards_skipped",
    "images",
    "images_per_second",
    "skipped",
    "warnings",
    "seconds",
}


def test_embed_and_its_report_file(tmp_path, rng, capsys, tiny_sscd):
    data_dir = _image_folder(tmp_path / "data", rng, 7, broken=4)
    store = tmp_path / "store"
    argv = ["embed", str(data_dir), "--out", str(store), "--sscd", str(tiny_sscd["torchscript"])]
    argv += ["--sscd-preset", "sscd-square", "--shard-rows", "3", "--json", "--quiet"]
    first = _json(capsys, argv)
    _keys(first, EMBED_KEYS)
    assert first["store"] == str(store)
    assert first["dataset"] == str(data_dir.resolve()) and first["dataset_kind"] == "folder"
    # 7 records in shards of 3: shards 0, 1, 2; record 004.png does not decode
    assert first["shards_written"] == [0, 1, 2] and first["shards_skipped"] == []
    assert first["images"] == 6
    assert first["seconds"] > 0.0
    assert first["images_per_second"] == pytest.approx(6 / first["seconds"], rel=1e-12)
    assert len(first["skipped"]) == 1
    _keys(first["skipped"][0], {"id", "reason"})
    assert first["skipped"][0]["id"] == "004.png"
    assert first["skipped"][0]["reason"].startswith("cannot decode image")
    assert first["warnings"] == []
    assert json.loads((store / "embed_report.json").read_text()) == first
    assert open_store(store).n == 6
    # a rerun skips the complete shards and embeds nothing
    again = _json(capsys, argv)
    _keys(again, EMBED_KEYS)
    assert again["shards_written"] == [] and again["shards_skipped"] == [0, 1, 2]
    assert again["images"] == 0 and again["images_per_second"] == 0.0
    assert json.loads((store / "embed_report.json").read_text()) == again


POISON_KEYS = {
    *("out", "method", "seed", "rows", "poisoned", "planned", "pairs", "skipped"),
    *("concept_pool", "vocabulary"),
}


def test_poison_and_its_report_file(tmp_path, rng, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    data_dir = _image_folder(tmp_path / "data", rng, 20, broken=7)
    out = tmp_path / "poisoned"
    argv = ["poison", str(data_dir), "--out", str(out), "--method", "dirty-label"]
    data = _json(capsys, [*argv, "--concepts", "2", "--per-concept", "3", "--seed", "9", "--json"])
    _keys(data, POISON_KEYS)
    assert (data["out"], data["method"], data["seed"]) == (str(out), "dirty-label", 9)
    assert data["rows"] == 19  # 20 records, one of which does not decode
    assert data["poisoned"] == data["planned"] == 2 * 3  # C_P concepts x m poisons
    assert len(data["skipped"]) == 1
    _keys(data["skipped"][0], {"id", "reason"})
    assert data["skipped"][0]["id"] == "007.png"
    assert len(data["pairs"]) == 2
    manifest = pq.read_table(out / "poison_manifest.parquet").to_pydict()
    drawn = {
        (s, t)
        for s, t, p in zip(
            manifest["source_concept"],
            manifest["target_concept"],
            manifest["poisoned"],
            strict=True,
        )
        if p
    }
    assert {tuple(p) for p in data["pairs"]} == drawn
    for source, target in data["pairs"]:
        assert source in NOUNS and target in NOUNS and source != target
    assert sum(manifest["poisoned"]) == data["poisoned"] and len(manifest["row"]) == data["rows"]
    saved = json.loads((out / "poison_report.json").read_text())
    assert saved == {k: v for k, v in data.items() if k != "out"}  # no path: runs reproduce


def test_train(tmp_path, rng, capsys, tiny_sd_dir):
    pytest.importorskip("diffusers")
    data_dir = _image_folder(tmp_path / "data", rng, 4, size=16)
    out = tmp_path / "trained"
    argv = ["train", "finetune", str(data_dir), "--model", str(tiny_sd_dir), "--out", str(out)]
    argv += ["--steps", "2", "--resolution", "16", "--batch-size", "2", "--lr", "1e-3"]
    data = _json(capsys, [*argv, "--json", "--quiet"])
    _keys(data, {"output", "steps", "resumed_from", "first_loss", "last_loss", "seconds"})
    assert (data["output"], data["steps"], data["resumed_from"]) == (str(out), 2, 0)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2]
    assert data["first_loss"] != data["last_loss"]  # so the two cannot be swapped unnoticed
    assert data["first_loss"] == log[0]["loss"] and data["last_loss"] == log[-1]["loss"]
    assert data["seconds"] > 0.0


MODEL_KEYS = {
    "model",
    "images",
    "metrics",
    "poisoned_concepts",
    "bleed_through",
    "per_concept",
    "grid",
    "attention",
    "seconds",
}
SETTINGS_KEYS = {
    "concepts",
    "generation",
    "clip",
    "aesthetics",
    "aesthetics_clip",
    "poisoned",
    "poison_manifest",
    "clip_threshold",
    "aesthetics_threshold",
    "bleed_threshold",
    "attention_concepts",
    "attention_resolution",
    "attention_layers",
    "dissection",
    "classification",
    "replication_store",
    "sscd",
    "grid_concepts",
    "device",
    "trust_models",
}
GENERATION_KEYS = {
    "images_per_concept",
    "steps",
    "guidance",
    "seed",
    "batch_size",
    "template",
    "height",
    "width",
}


def test_evaluate_and_its_report_files(tmp_path, capsys, tiny_sd_dir, tiny_open_clip):
    pytest.importorskip("diffusers")
    from alignscope.embed.clip import load_clip

    out = tmp_path / "e"
    argv = ["evaluate", str(tiny_sd_dir), "--out", str(out), "--concepts", "dog,cat"]
    argv += ["--images-per-concept", "2", "--steps", "1", "--height", "16", "--width", "16"]
    argv += ["--clip", tiny_open_clip, "--attention-concepts", "1", "--attention-resolution", "4"]
    report = _json(capsys, [*argv, "--clip-threshold", "0.05", "--json", "--quiet"])
    _keys(report, {"settings", "thresholds", "models"})
    assert report["thresholds"] == {"clip": 0.05, "aesthetics": 6.5, "bleed_through_l2": 4.8}
    settings = report["settings"]
    _keys(settings, SETTINGS_KEYS)
    assert settings["concepts"] == 2 and settings["clip"] == tiny_open_clip
    _keys(settings["generation"], GENERATION_KEYS)
    assert settings["generation"] == {
        "images_per_concept": 2,
        "steps": 1,
        "guidance": 7.5,
        "seed": 0,
        "batch_size": 4,
        "template": "a photo of {}",
        "height": 16,
        "width": 16,
    }
    _keys(report["models"], {"sd"})
    section = report["models"]["sd"]
    _keys(section, MODEL_KEYS)
    assert section["model"] == str(tiny_sd_dir) and section["images"] == 4
    assert section["poisoned_concepts"] == [] and section["bleed_through"] == {}
    assert section["grid"] == "grid.png" and (out / "sd" / "grid.png").is_file()
    assert len(section["attention"]) == 1
    _keys(section["attention"][0], {"concept", "prompt", "overlay"})
    assert section["attention"][0]["concept"] in ("dog", "cat")
    assert (out / "sd" / section["attention"][0]["overlay"]).is_file()
    # CLIP scores recomputed from the saved images: raw cosine with the prompt
    clip = load_clip(tiny_open_clip)
    scores = {}
    for concept in ("dog", "cat"):
        files = sorted((out / "sd" / "images").rglob("*.png"))
        files = [f for f in files if concept in str(f.relative_to(out / "sd" / "images"))]
        assert len(files) == 2
        img = clip.encode_images([Image.open(f).convert("RGB") for f in files]).astype(np.float64)
        txt = clip.encode_texts([f"a photo of {concept}"]).astype(np.float64)
        scores[concept] = (img @ txt[0]) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt[0])
    _keys(section["per_concept"], {"dog", "cat"})
    for concept, s in scores.items():
        _keys(section["per_concept"][concept], {"clip_mean", "accuracy"})
        assert section["per_concept"][concept]["clip_mean"] == pytest.approx(s.mean(), abs=2e-6)
        assert section["per_concept"][concept]["accuracy"] == np.mean(s > 0.05)
    every = np.concatenate(list(scores.values()))
    assert np.abs(every - 0.05).min() > 1e-4  # no score at the threshold
    _keys(section["metrics"], {"all"})  # no poisoned concepts: no other groups
    _keys(section["metrics"]["all"], {"count", "clip_mean", "clip_std", "accuracy"})
    assert section["metrics"]["all"]["count"] == 4
    assert section["metrics"]["all"]["clip_mean"] == pytest.approx(every.mean(), abs=2e-6)
    assert section["metrics"]["all"]["clip_std"] == pytest.approx(every.std(), abs=2e-6)
    assert section["metrics"]["all"]["accuracy"] == np.mean(every > 0.05)
    assert json.loads((out / "report.json").read_text()) == report
    assert json.loads((out / "sd" / "metrics.json").read_text()) == section
