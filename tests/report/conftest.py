"""A small screening run whose captions are hostile, shared by the report tests."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

# Captions that would run script or break out of the data element if embedded carelessly.
HOSTILE = [
    "</script><script>window.pwned=1</script>",
    "<!-- <script>window.pwned=2</script>",
    '<a href="javascript:window.pwned=3">click</a>',
    '<img src=x onerror="window.pwned=4">',
    "</SCRIPT ><script>window.pwned=5</script>",
    "line\u2028separator\u2029paragraph & <b>bold</b> &amp; done",
]
N = 240
CONCEPTS = ("cat", "dog", "car", "tree")


def _png(colour: tuple[int, int, int]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.fixture(scope="session")
def screened(tmp_path_factory):
    """`screen_store` on N pairs with captions (the hostile ones among them), concepts, ground
    truth (24 poisons), thumbnails of 10 rows and --remove-fraction 0.1; returns the output
    folder, the inputs and scores.parquet's columns (numpy arrays, in its ranking order)."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("pyarrow")
    from alignscope.io import StoreWriter, open_store
    from alignscope.screen.run import screen_store

    root = tmp_path_factory.mktemp("screened")
    rng = np.random.default_rng(7)
    image = rng.normal(size=(N, 8)).astype(np.float32)
    text = (image + rng.normal(size=(N, 8)) * rng.uniform(0.5, 3.0, size=(N, 1))).astype(np.float32)
    ids = [f"pair-{i:03d}" for i in range(N)]
    captions = [f"a photo number {i}" for i in range(N)]
    for j, caption in enumerate(HOSTILE):
        captions[17 * j + 5] = caption
    concepts = [CONCEPTS[i % len(CONCEPTS)] for i in range(N)]
    truth = np.zeros(N, dtype=bool)
    truth[rng.choice(N, 24, replace=False)] = True
    writer = StoreWriter(root / "store", np.float32)
    writer.add_shard(image, text, {"id": ids, "caption": captions})
    images = {i: _png((20 * i, 100, 200)) for i in range(10)}
    summary = screen_store(
        open_store(root / "store"),
        root / "out",
        scores=("k_distance", "alignment"),
        k=5,
        truth=truth,
        remove_fraction=0.1,
        ids=ids,
        captions=captions,
        concepts=concepts,
        images=images,
    )
    import pyarrow.parquet as pq

    table = pq.read_table(root / "out" / "scores.parquet").to_pydict()
    return {
        "scores": {k: np.asarray(v) for k, v in table.items()},
        "hostile": HOSTILE,
        "out": root / "out",
        "ids": ids,
        "captions": captions,
        "concepts": concepts,
        "truth": truth,
        "images": images,
        "summary": summary,
    }


# The explorer driven through its controls (by the node stub and by a real browser alike):
# ("set", element id, value, event), ("click", element id), ("sort_header", column key) and
# ("observe",): what the table and the counts show at that point.
ACTIONS = [
    {"observe": True},
    {"set": "as-sort", "value": "alignment", "event": "change"},
    {"set": "as-order", "value": "asc", "event": "change"},
    {"observe": True},
    {"set": "as-search", "value": "PWNED", "event": "input"},
    {"observe": True},
    {"set": "as-search", "value": "", "event": "input"},
    {"set": "as-category", "value": "dog", "event": "change"},
    {"observe": True},
    {"set": "as-category", "value": "", "event": "change"},
    {"set": "as-flag", "value": "yes", "event": "change"},
    {"observe": True},
    {"set": "as-slider", "value": "40", "event": "input"},
    {"observe": True},
    {"set": "as-status", "value": "above", "event": "change"},
    {"observe": True},
    {"set": "as-flag", "value": "", "event": "change"},
    {"observe": True},
    {"set": "as-cut-score", "value": "alignment", "event": "change"},
    {"observe": True},
    {"set": "as-status", "value": "", "event": "change"},
    {"set": "as-flag", "value": "", "event": "change"},
    {"click": "as-next"},
    {"observe": True},
    {"sort_header": "row"},
    {"observe": True},
]
COLUMNS = ["rank", "row", "image", "id", "caption", "concept", "k_distance", "alignment"]
COLUMNS += ["poisoned", "removed by the run", "at this threshold"]


def _counts(s, name: str, threshold: float) -> str:
    """The slider's sentence after its threshold, from scores.parquet (not from the page)."""
    above = s[name] > threshold
    n, removed, poisons = above.size, int(above.sum()), int(s["poisoned"].sum())
    hit = int(np.sum(above & s["poisoned"]))
    precision = f"{hit / removed:.3f}" if removed else "n/a"
    return (
        f"{removed:,} removed ({100 * removed / n:.2f}%), {n - removed:,} kept; {hit:,} of the "
        f"{poisons:,} poisoned pairs removed (precision {precision}, recall "
        f"{hit / poisons:.3f}). The counts are exact over all {n:,} pairs, for pairs scoring "
        "strictly above the threshold (as --threshold removes them)."
    )


def check_explorer(screened, seen) -> None:
    """What the explorer showed at each ("observe",) of ACTIONS, against answers computed
    independently from scores.parquet and the run's inputs."""
    s = screened["scores"]
    n = s["row"].size
    rows = lambda view: [int(r[1]) for r in view["rows"]]  # noqa: E731
    start, by_alignment, search, dog, poisoned, cut, above, all_above, other, page2, by_row = seen
    assert start["header"] == [c + (" \u25bc" if c == "k_distance" else "") for c in COLUMNS]
    assert rows(start) == s["row"][:50].tolist()  # scores.parquet is in ranking order
    assert start["range"] == f"rows 1\u201350 of {n} matching"
    t = float(start["threshold"])
    assert int(np.sum(s["k_distance"] > t)) == screened["summary"]["removal"]["removed"]
    assert start["counts"].split(": ", 1)[1] == _counts(s, "k_distance", t)
    # alignment ascending; ties in ranking order
    want = s["row"][np.lexsort((s["rank"], s["alignment"]))]
    assert rows(by_alignment) == want[:50].tolist()
    hostile = [screened["captions"][r] for r in want if "pwned" in screened["captions"][r]]
    assert [r[4] for r in search["rows"]] == hostile and len(hostile) == 5
    assert dog["range"] == "rows 1\u201350 of 60 matching"
    assert {r[5] for r in dog["rows"]} == {"dog"}
    assert poisoned["range"] == f"rows 1\u2013{int(s['poisoned'].sum())} of 24 matching"
    assert {r[8] for r in poisoned["rows"]} == {"yes"}
    t = float(cut["threshold"])
    assert cut["counts"].split(": ", 1)[1] == _counts(s, "k_distance", t)
    for r in cut["rows"]:
        assert r[-1] == ("removed" if s["k_distance"][s["row"] == int(r[1])][0] > t else "kept")
    hits = int(np.sum(s["poisoned"] & (s["k_distance"] > t)))
    assert above["range"] == f"rows 1\u2013{hits} of {hits} matching" and hits > 0
    removed = int(np.sum(s["k_distance"] > t))  # the threshold is a score: strictly above
    assert all_above["range"] == f"rows 1\u2013{min(removed, 50)} of {removed} matching"
    t = float(other["threshold"])
    assert other["counts"].split(": ", 1)[1] == _counts(s, "alignment", t)
    assert page2["range"] == f"rows 51\u2013100 of {n} matching"
    # sorted by row: rows 0-9 carry thumbnails, loaded lazily
    assert rows(by_row) == list(range(50))
    images = [r[2] for r in by_row["rows"]]
    assert images == ["[img lazy data:image/png;base64,]"] * 10 + [""] * 40


@pytest.fixture
def explorer_steps(screened):
    """(ACTIONS, check): the steps to drive the explorer of ``screened``'s report through, and
    the function checking what it showed (a list of observations) against scores.parquet."""
    return ACTIONS, lambda seen: check_explorer(screened, seen)
