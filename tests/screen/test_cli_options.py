"""Every option of `alignscope screen`, its outputs checked against the brute-force references
of alignscope._reference (scores, order, removal, keep list, metrics), the exact schema of
summary.json / --json, and each option's bad-input message (exit code 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignscope import _reference as ref
from alignscope.cli import main
from alignscope.io import write_store

pytest.importorskip("matplotlib")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N = 120
ALL = ("alignment", "d_s", "ad_xy", "concept_consistency", "cross_view", "k_distance", "lid")
CHOICES = (
    "combined",
    "relative_alignment",
    "alignment",
    "d_s",
    "ad_xy",
    "concept_consistency",
    "cross_view",
    "view_residual",
    "view_density",
    "purification",
    "k_distance",
    "lid",
)
DEFAULT = (
    "combined",
    "relative_alignment",
    "alignment",
    "concept_consistency",
    "k_distance",
    "lid",
)
ATOL = 1e-6  # float32 neighbour search in the engine
SUMMARY_KEYS = {"n", "scores", "rank_by", "neighbours", "removal", "metrics"}
METRIC_KEYS = {"auroc", "auprc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr", "tradeoff"}


def _ids(rows):
    return [f"pair-{i:03d}" for i in rows]


@pytest.fixture(scope="module")
def world(tmp_path_factory, pairs):
    """A float32 store with ids, a second view, and the same truth in all three file forms."""
    root = tmp_path_factory.mktemp("screen_cli")
    image, text, second = pairs(N, 12, seed=21)
    write_store(root / "store", image, text, metadata={"id": _ids(range(N))}, dtype=np.float32)
    rng = np.random.default_rng(21)
    truth = rng.random(N) < 0.2
    np.save(root / "second.npy", second)
    np.save(root / "truth.npy", truth)
    np.savez(root / "truth.npz", poisoned=truth)
    # A manifest lists rows in any order; rows it leaves out are benign.
    listed = rng.permutation(np.flatnonzero(truth | (rng.random(N) < 0.5)))
    pq.write_table(
        pa.table({"row": listed, "poisoned": truth[listed], "method": ["x"] * listed.size}),
        root / "poison_manifest.parquet",
    )
    return {
        "root": root,
        "image": image,
        "text": text,
        "second": second,
        "truth": truth,
        "ref": {k: ref.screening_scores(image, text, second, scores=ALL, k=k) for k in (4, 10)},
    }


def _screen(world, out, *options, capsys):
    argv = ["screen", str(world["root"] / "store"), "--out", str(world["root"] / out)]
    assert main([*argv, *options]) == 0
    captured = capsys.readouterr()
    return world["root"] / out, captured.out


def _check_outputs(out, *, want, rank_by, removed, truth, names):
    """scores.parquet, keep.txt and summary.json of one run against the reference ``want``
    (scores by name, of row order) and the expected removal flags (row order)."""
    table = pq.read_table(out / "scores.parquet").to_pydict()
    columns = list(table)
    assert columns[:3] == ["rank", "row", "id"]
    assert set(columns[3 : 3 + len(names)]) == set(names)
    assert columns[3 + len(names) :] == ["removed", *(["poisoned"] if truth is not None else [])]
    rows = np.asarray(table["row"])
    assert sorted(rows.tolist()) == list(range(N))
    assert table["rank"] == list(range(1, N + 1))
    assert table["id"] == _ids(rows)
    for name in names:
        # LID divides by a mean log ratio of nearby distances: compare it relatively
        tol = {"rtol": 1e-4, "atol": 0} if name == "lid" else {"rtol": 0, "atol": ATOL}
        np.testing.assert_allclose(table[name], want[name][rows], err_msg=name, **tol)
    # Ranked by the score, highest first; ties keep row order.
    key = np.asarray(table[rank_by])
    assert rows.tolist() == sorted(range(N), key=lambda i: (-key[rows.tolist().index(i)], i))
    assert table["removed"] == removed[rows].tolist()
    if truth is not None:
        assert table["poisoned"] == truth[rows].tolist()
    keep = (out / "keep.txt").read_text(encoding="utf-8")
    assert keep == "".join(f"{i}\n" for i in _ids(np.flatnonzero(~removed)))
    plots = {p.name for p in (out / "plots").iterdir()}
    assert plots == {f"cdf_{s}.png" for s in names} | (
        {"tradeoff.png"} if truth is not None else set()
    )
    assert (out / "report.html").is_file()
    return json.loads((out / "summary.json").read_text())


def _check_summary(summary, *, names, methods, rank_by, removal, want, truth):
    """The exact key set at every level, and every value against the references."""
    assert set(summary) == SUMMARY_KEYS
    assert summary["n"] == N
    assert summary["scores"] == {name: methods[name] for name in names}
    assert summary["rank_by"] == rank_by
    assert summary["removal"] == removal
    if truth is None:
        assert summary["metrics"] is None
        return
    assert set(summary["metrics"]) == set(names)
    for name in names:
        got, expected = summary["metrics"][name], ref.detection_metrics(want[name], truth)
        assert set(got) == METRIC_KEYS
        assert set(got["tradeoff"]) == {"poison_removed", "benign_removed"}
        for metric in ("auroc", "auprc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr"):
            assert got[metric] == pytest.approx(expected[metric], abs=1e-12), (name, metric)
        for axis in ("poison_removed", "benign_removed"):
            assert got["tradeoff"][axis] == pytest.approx(expected["tradeoff"][axis], abs=1e-12)


def _methods(k):
    return {
        "alignment": "exact",
        "d_s": "exact",
        "ad_xy": "exact",
        "concept_consistency": f"exact k-NN, k={k}",
        "cross_view": f"neighbourhood D_s, k={k} per view",
        "k_distance": f"k={k}",
        "lid": f"MLE, k={k}",
        "relative_alignment": "exact caption k-NN, k=50, 10% trimmed",
        "combined": "min-p of relative_alignment (weight 1.00)",
    }


def _with_peer_scores(want, image, text):
    """``want`` plus relative_alignment and the combined score of it alone (no second view):
    the maximum term plus the tie break below the smallest gap between distinct maxima."""
    out = dict(want)
    out["relative_alignment"] = ref.relative_alignment_definition(image, text, 50)
    top, total, _ = ref.combined_terms({"relative_alignment": out["relative_alignment"]})
    gaps = np.diff(np.unique(top))
    out["combined"] = top + 0.5 * (gaps.min() if gaps.size else 1.0) * total / total.max()
    return out


def test_every_score_ranked_and_filtered_by_fraction(world, capsys):
    """--scores (all seven, in a new order), --second-view FILE, --k, --rank-by,
    --remove-fraction, a bool .npy truth and --json."""
    names = ("k_distance", "lid", "alignment", "cross_view", "d_s", "concept_consistency", "ad_xy")
    out, stdout = _screen(
        world,
        "fraction",
        "--scores",
        ",".join(names),
        "--second-view",
        str(world["root"] / "second.npy"),
        "--manifest",
        str(world["root"] / "truth.npy"),
        "--k",
        "4",
        "--rank-by",
        "ad_xy",
        "--remove-fraction",
        "0.1",
        "--json",
        capsys=capsys,
    )
    want, truth = world["ref"][4], world["truth"]
    # The top 10% (12 rows) by the reference ad_xy, which leaves a clear gap at the cut.
    top = np.argsort(-want["ad_xy"], kind="stable")
    assert want["ad_xy"][top[11]] - want["ad_xy"][top[12]] > 1e-5
    removed = np.zeros(N, dtype=bool)
    removed[top[:12]] = True
    summary = _check_outputs(
        out, want=want, rank_by="ad_xy", removed=removed, truth=truth, names=names
    )
    assert json.loads(stdout) == summary  # --json prints summary.json
    _check_summary(
        summary,
        names=names,
        methods=_methods(4),
        rank_by="ad_xy",
        removal={
            "rule": "remove_fraction",
            "fraction": 0.1,
            "removed": 12,
            "kept": N - 12,
            "poisons_removed": int((removed & truth).sum()),
            "benign_removed": int((removed & ~truth).sum()),
        },
        want=want,
        truth=truth,
    )


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_threshold_removes_strictly_above(world, threshold, capsys):
    """--threshold on the clipped alignment score, whose exact 0s and 1s tie with the
    threshold: "above T" keeps them. Also a .npz truth and the table printed without --json."""
    out, stdout = _screen(
        world,
        f"threshold{threshold}",
        "--scores",
        "k_distance,alignment",
        "--rank-by",
        "alignment",
        "--threshold",
        str(threshold),
        "--manifest",
        str(world["root"] / "truth.npz"),
        capsys=capsys,
    )
    want, truth = world["ref"][10], world["truth"]
    align = want["alignment"]
    assert (align == threshold).sum() >= 10  # ties at the threshold, the case that matters
    assert not np.any((np.abs(align - threshold) > 0) & (np.abs(align - threshold) < 1e-9))
    removed = align > threshold
    summary = _check_outputs(
        out,
        want=want,
        rank_by="alignment",
        removed=removed,
        truth=truth,
        names=("k_distance", "alignment"),
    )
    # Exact ties at 0 and 1: the rows' order within each tie is the row order.
    order = pq.read_table(out / "scores.parquet", columns=["row"]).column("row").to_pylist()
    assert order == sorted(range(N), key=lambda i: (-align[i], i))
    _check_summary(
        summary,
        names=("k_distance", "alignment"),
        methods=_methods(10),
        rank_by="alignment",
        removal={
            "rule": "threshold",
            "threshold": threshold,
            "removed": int(removed.sum()),
            "kept": int((~removed).sum()),
            "poisons_removed": int((removed & truth).sum()),
            "benign_removed": int((removed & ~truth).sum()),
        },
        want=want,
        truth=truth,
    )
    lines = stdout.splitlines()
    assert lines[0].split() == ["score", "AUROC", "AUPRC", "TPR@1%FPR", "TPR@5%FPR"]
    assert lines[-1] == (
        f"removed {int(removed.sum()):,}, kept {int((~removed).sum()):,}; wrote scores.parquet, "
        f"summary.json, plots/, report.html, keep.txt to {out}"
    )


def test_manifest_parquet_and_default_rank_by(world, capsys):
    """A poison_manifest.parquet (rows shuffled, some absent) and --rank-by defaulting to the
    first of --scores; a threshold between two LID values."""
    want, truth = world["ref"][4], world["truth"]
    lid = np.sort(want["lid"])[::-1]
    threshold = float((lid[29] + lid[30]) / 2)  # 30 rows above
    assert lid[29] - lid[30] > 1e-3
    out, stdout = _screen(
        world,
        "manifest",
        "--scores",
        "lid,k_distance",
        "--k",
        "4",
        "--threshold",
        repr(threshold),
        "--manifest",
        str(world["root"] / "poison_manifest.parquet"),
        "--json",
        capsys=capsys,
    )
    removed = want["lid"] > threshold
    assert removed.sum() == 30
    summary = _check_outputs(
        out, want=want, rank_by="lid", removed=removed, truth=truth, names=("lid", "k_distance")
    )
    assert json.loads(stdout) == summary
    _check_summary(
        summary,
        names=("lid", "k_distance"),
        methods=_methods(4),
        rank_by="lid",
        removal={
            "rule": "threshold",
            "threshold": threshold,
            "removed": 30,
            "kept": N - 30,
            "poisons_removed": int((removed & truth).sum()),
            "benign_removed": int((removed & ~truth).sum()),
        },
        want=want,
        truth=truth,
    )


def test_defaults_without_ground_truth(world, capsys):
    """No --scores, --k, --manifest or removal option: the six default scores at k = 10 (no
    second view in the store, so no view scores), ranked by the combined score, nothing
    removed, no metrics and no trade-off plot."""
    out, stdout = _screen(world, "defaults", capsys=capsys)
    removed = np.zeros(N, dtype=bool)
    want = _with_peer_scores(world["ref"][10], world["image"], world["text"])
    summary = _check_outputs(
        out, want=want, rank_by="combined", removed=removed, truth=None, names=DEFAULT
    )
    _check_summary(
        summary,
        names=DEFAULT,
        methods=_methods(10),
        rank_by="combined",
        removal={"rule": "remove_fraction", "fraction": 0.0, "removed": 0, "kept": N},
        want=want,
        truth=None,
    )
    assert stdout == (
        f"removed 0, kept {N}; wrote scores.parquet, summary.json, plots/, report.html, "
        f"keep.txt to {out}\n"
    )


def test_clip_embeds_a_dataset_first(tmp_path, rng, tiny_open_clip, capsys):
    """--clip (with --device and --quiet): a dataset is embedded into OUT/store, then scored."""
    from PIL import Image

    from alignscope.io import open_store

    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(f"a photo of thing number {i}")
    argv = ["screen", str(data), "--out", str(tmp_path / "o"), "--clip", tiny_open_clip]
    options = ["--device", "cpu", "--scores", "alignment,k_distance", "--k", "2", "--quiet"]
    assert main([*argv, *options, "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --quiet: no progress bar
    summary = json.loads(captured.out)
    store = open_store(tmp_path / "o" / "store")
    image, text = store.read(0, 6, "image"), store.read(0, 6, "text")
    want = ref.screening_scores(image, text, scores=("alignment", "k_distance"), k=2)
    table = pq.read_table(tmp_path / "o" / "scores.parquet").to_pydict()
    rows = np.asarray(table["row"])
    for name in ("alignment", "k_distance"):
        np.testing.assert_allclose(table[name], want[name][rows], rtol=0, atol=ATOL)
    assert summary["n"] == 6 and summary["scores"] == {"alignment": "exact", "k_distance": "k=2"}


def _bad_files(root):
    np.save(root / "five_rows.npy", np.ones((5, 4), dtype=np.float32))
    np.save(root / "one_d.npy", np.ones(20, dtype=np.float32))
    np.save(root / "five_flags.npy", np.ones(5, dtype=bool))
    np.save(root / "all_benign.npy", np.zeros(20, dtype=bool))
    (root / "text.npy").write_text("not an array")
    np.savez(root / "no_key.npz", flags=np.ones(20, dtype=bool))
    pq.write_table(pa.table({"row": [0, 500], "poisoned": [True, False]}), root / "far.parquet")
    pq.write_table(pa.table({"index": [0], "poisoned": [True]}), root / "no_row.parquet")


# (options, message after "alignscope: error: "); {r} is the test's directory
BAD_INPUT = [
    (["--scores", "magic"], "--scores: unknown score 'magic'; choose from " + ", ".join(CHOICES)),
    (["--scores", ","], "--scores: unknown score ''; choose from " + ", ".join(CHOICES)),
    (
        ["--scores", "cross_view"],
        "cross_view needs --second-view (a view of the store: vae from `embed --vae`, sscd; or an "
        ".npy)",
    ),
    (
        ["--scores", "cross_view", "--second-view", "sscd"],
        "--second-view: the store has no sscd view",
    ),
    (
        ["--scores", "cross_view", "--second-view", "{r}/missing.npy"],
        "--second-view: no such file '{r}/missing.npy'",
    ),
    (
        ["--scores", "cross_view", "--second-view", "{r}/five_rows.npy"],
        "--second-view: expected (20, d) rows, one per pair, got shape (5, 4)",
    ),
    (
        ["--scores", "cross_view", "--second-view", "{r}/one_d.npy"],
        "--second-view: expected (20, d) rows, one per pair, got shape (20,)",
    ),
    (
        ["--manifest", "{r}/missing.npy"],
        "--manifest: ground truth '{r}/missing.npy' does not exist",
    ),
    (
        ["--manifest", "{r}/five_flags.npy"],
        "--manifest: {r}/five_flags.npy: expected 20 poison flags, got shape (5,)",
    ),
    (
        ["--manifest", "{r}/no_key.npz"],
        "--manifest: {r}/no_key.npz: not a readable poison-flag file "
        "(KeyError: 'poisoned is not a file in the archive')",
    ),
    (
        ["--manifest", "{r}/far.parquet"],
        "--manifest: {r}/far.parquet: manifest rows must be in [0, 20); got 0..500",
    ),
    (
        ["--manifest", "{r}/no_row.parquet"],
        "--manifest: {r}/no_row.parquet: not a poison manifest with 'row' and 'poisoned' "
        "columns (missing row)",
    ),
    (
        ["--manifest", "{r}/all_benign.npy", "--scores", "alignment"],
        "ground truth needs both poisoned and benign rows",
    ),
    (["--remove-fraction", "1.0"], "remove fraction must be in [0, 1), got 1.0"),
    (["--remove-fraction", "-0.1"], "remove fraction must be in [0, 1), got -0.1"),
    (
        ["--remove-fraction", "0.1", "--threshold", "0.5"],
        "give --remove-fraction or --threshold, not both",
    ),
    (
        ["--scores", "alignment", "--rank-by", "lid"],
        "--rank-by 'lid' is not among the computed scores ['alignment']",
    ),
]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        *BAD_INPUT,
        # numpy's own reason follows: only the part alignscope writes is pinned ("...")
        (
            ["--scores", "cross_view", "--second-view", "{r}/text.npy"],
            "--second-view: cannot read '{r}/text.npy' as a .npy array (...",
        ),
        (
            ["--manifest", "{r}/text.npy"],
            "--manifest: {r}/text.npy: not a readable poison-flag file (ValueError: ...",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, options, message, capsys):
    rng = np.random.default_rng(0)
    write_store(tmp_path / "s", rng.normal(size=(20, 4)), rng.normal(size=(20, 4)))
    _bad_files(tmp_path)
    argv = ["screen", str(tmp_path / "s"), "--out", str(tmp_path / "o")]
    options = [o.format(r=tmp_path) for o in options]
    assert main([*argv, *options]) == 2
    captured = capsys.readouterr()
    want = f"alignscope: error: {message.format(r=tmp_path)}"
    if message.endswith("..."):
        assert captured.err.startswith(want[:-3]) and captured.err.endswith(")\n")
        assert captured.err.count("\n") == 1
    else:
        assert captured.err == want + "\n"
    assert captured.out == ""


def test_store_that_is_a_dataset_needs_clip(tmp_path, capsys):
    (tmp_path / "dataset").mkdir()
    assert main(["screen", str(tmp_path / "dataset"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: STORE: {str(tmp_path / 'dataset')!r} is an image dataset; give "
        "--clip SPEC to embed it first (or pass a store written by `alignscope embed`)\n"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--k", "0"], "argument --k: expected a positive integer, got '0'"),
        (["--k", "x"], "argument --k: expected a positive integer, got 'x'"),
        (["--threshold", "abc"], "argument --threshold: invalid float value: 'abc'"),
        (["--remove-fraction", "abc"], "argument --remove-fraction: invalid float value: 'abc'"),
    ],
)
def test_unparsable_option_values_exit_2(tmp_path, options, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["screen", str(tmp_path), "--out", str(tmp_path / "o"), *options])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: {message} (see `alignscope screen --help`)\n"
    )


def test_knn_approximate_is_recorded_and_a_rerun_with_another_search_is_refused(world, capsys):
    """--knn hnsw: summary.json says how each view's neighbours were found and their measured
    recall; the same folder with --knn exact is another run (exit 2 naming knn)."""
    pytest.importorskip("faiss")
    out, _ = _screen(
        world, "knn", "--scores", "concept_consistency", "--knn", "hnsw", capsys=capsys
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["neighbours"]) == {"image", "text"}
    for table in summary["neighbours"].values():
        assert table["method"] == "hnsw" and table["index"] == "HNSWFlat"
        assert 0.0 <= table["recall_at_k"] <= 1.0 and table["recall_sample"] == N
    argv = ["screen", str(world["root"] / "store"), "--out", str(out)]
    assert main([*argv, "--scores", "concept_consistency", "--knn", "exact"]) == 2
    assert '(knn: "hnsw" there, "exact" now)' in capsys.readouterr().err
