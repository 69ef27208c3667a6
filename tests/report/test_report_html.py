"""report.html without a browser: the embedded rows parsed back out of the page with Python's
html.parser, the exact slider counts against brute-force counts, and the replication page."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest

from alignscope.report import interactive

# Every element and attribute the reports write themselves: a caption that became markup
# would add another.
TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "br", "code"}
TAGS |= {"table", "tr", "th", "td", "img", "section", "div", "script"}
ATTRIBUTES = {"lang", "charset", "src", "alt", "width", "data-thumb", "id", "type"}


class Page(HTMLParser):
    """The elements of a page: its tags and attributes, each script's text, and the text of
    each table cell."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.cells: list[str] = []
        self._script: tuple[dict[str, str | None], list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = (dict(attrs), [])
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script[0], "".join(self._script[1])))
            self._script = None
        elif tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._script is not None:
            self._script[1].append(data)
        elif self._cell is not None:
            self._cell.append(data)

    def data(self) -> tuple[str, dict]:
        """The text of the JSON element and the JSON it holds."""
        (text,) = [t for a, t in self.scripts if a.get("type") == "application/json"]
        return text, json.loads(text)


def test_embedded_rows_round_trip_hostile_captions_and_stay_text(screened):
    html = (screened["out"] / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    # two script elements, both ours: html.parser ends a script at the first "</script", so
    # a caption that closed the data element early would show up as a third or break the JSON
    assert [a for a, _ in page.scripts] == [
        {"type": "application/json", "id": "alignscope-data"},
        {"id": "alignscope-app"},
    ]
    assert page.scripts[1][1] == interactive.SCRIPT
    text, spec = page.data()
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    rows = spec["data"]["row"]
    assert sorted(rows) == list(range(len(screened["captions"])))  # all 240 rows embedded
    assert spec["data"]["caption"] == [screened["captions"][r] for r in rows]
    assert spec["data"]["concept"] == [screened["concepts"][r] for r in rows]
    assert set(screened["hostile"]) <= set(spec["data"]["caption"])
    # no caption became an element or an attribute anywhere on the page
    assert {t for t, _ in page.tags} <= TAGS
    assert {k for _, a in page.tags for k in a} <= ATTRIBUTES
    # each thumbnail once: in the static table (top 50) or in the data (the others)
    assert html.count("data:image/png;base64,") == len(screened["images"]) == 10
    # the static table still shows the most suspicious captions, escaped into text
    top = screened["scores"]["row"][:50]
    shown = [screened["captions"][r] for r in top]
    assert [c for c in page.cells if c in shown] == shown
    assert any(c in screened["hostile"] for c in shown)


@pytest.mark.parametrize(
    "value",
    [
        "</script><script>alert(1)</script>",
        "<!--",
        "a\u2028b\u2029c",
        "&lt; & <",
        "\ud800 lone surrogate",
        "</ScRiPt >",
    ],
)
def test_embedded_json_reads_back_exactly_and_has_nothing_that_ends_the_element(value):
    text = interactive.embed_json({"caption": value, "n": [1, None, 2.5]})
    assert json.loads(text) == {"caption": value, "n": [1, None, 2.5]}
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029", "\ud800"}
    text.encode("utf-8")  # no lone surrogate left: the page is written as UTF-8


def test_embedded_json_refuses_nan():
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        interactive.embed_json({"x": float("nan")})


def test_slider_counts_are_exact_at_every_threshold(rng):
    score = np.round(rng.normal(size=3000), 1)  # heavy ties
    score[:5] = [np.nan, np.inf, -np.inf, np.nan, 0.05]
    flags = rng.random(3000) < 0.1
    out = interactive.cuts(score, flags, extra=(0.05, 99.0), positions=40)
    t = np.asarray(out["threshold"])
    assert np.all(np.diff(t) < 0) and 0.05 in out["threshold"] and 99.0 in out["threshold"]
    finite = np.isfinite(score)
    # brute force, threshold by threshold: the definition the page states
    assert out["above"] == [int(np.sum(finite & (score > x))) for x in t]
    assert out["flagged"] == [int(np.sum(finite & flags & (score > x))) for x in t]
    assert out["above"][0] == 0 and out["above"][-1] > 0


def test_slider_starts_at_the_runs_removal_and_counts_match_scores_parquet(screened):
    _, spec = Page((screened["out"] / "report.html").read_text(encoding="utf-8")).data()
    scores = screened["scores"]  # scores.parquet, independent of the page
    slider = spec["slider"]
    start = slider["start"]
    assert start["score"] == "k_distance"
    k = screened["summary"]["removal"]["removed"]
    ranked = np.sort(scores["k_distance"])[::-1]
    assert start["threshold"] == ranked[k]  # the highest score the run kept
    assert int(np.sum(scores["k_distance"] > start["threshold"])) == k == 24
    for name in ("k_distance", "alignment"):
        c = slider["scores"][name]
        values, poisoned = scores[name], scores["poisoned"]
        assert c["above"] == [int(np.sum(values > t)) for t in c["threshold"]]
        assert c["flagged"] == [int(np.sum(poisoned & (values > t))) for t in c["threshold"]]
    assert slider["flagged_total"] == int(screened["truth"].sum())
    assert spec["n"] == len(screened["ids"]) and spec["note"] == "All 240 pairs are here."


def test_a_large_run_embeds_the_top_rows_and_a_seeded_sample_and_stays_small(rng):
    from alignscope.report.screening import explorer_data

    n, cap = 50_000, 300
    score = rng.random(n)
    order = np.argsort(-score, kind="stable")
    truth = rng.random(n) < 0.01

    def spec():
        return explorer_data(
            {"s": score},
            "s",
            order,
            {"rule": "remove_fraction", "fraction": 0.01, "removed": 500, "kept": n - 500},
            ids=[str(i) for i in range(n)],
            removed=np.isin(np.arange(n), order[:500]),
            truth=truth,
            cap=cap,
        )

    first = spec()
    rows = np.asarray(first["data"]["row"])
    assert rows.size == cap and np.unique(rows).size == cap
    np.testing.assert_array_equal(rows[:150], order[:150])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    assert np.all(rank[rows[150:]] >= 150) and np.all(np.diff(rank[rows]) > 0)
    assert first == spec()  # seeded: the same run writes the same page
    assert first["note"] == (
        "This page holds 300 of the 50,000 pairs: the top 150 by s and a uniform random "
        "sample (seed 0) of 150 of the other 49,850. The table sorts, filters and pages "
        "through these rows."
    )
    c = first["slider"]["scores"]["s"]  # exact over all n rows, not the embedded ones
    assert c["above"] == [int(np.sum(score > t)) for t in c["threshold"]]
    assert c["flagged"] == [int(np.sum(truth & (score > t))) for t in c["threshold"]]
    # O(cap + thresholds), not O(n): one float per row alone would take 900 kB
    assert len(interactive.embed_json(first)) < 120_000


def test_replication_report_summary_table_and_header(tmp_path, rng):
    pytest.importorskip("matplotlib")
    from alignscope.report.replication import write_replication
    from alignscope.search import replication

    # in 64 dimensions random items match nothing above 0.75; five are near-copies
    train = rng.normal(size=(40, 64)).astype(np.float32)
    generated = np.concatenate([train[:5] + 0.01, rng.normal(size=(15, 64))]).astype(np.float32)
    result = replication(generated, train, k=1)
    hostile = ["</script><script>window.pwned=1</script>"] + [f"g{i}" for i in range(19)]
    write_replication(result, tmp_path, ("gen", "train"), ids=(hostile, None))
    page = Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    # one row per set, one column per statistic (it was 18 rows of set / statistic / value)
    g = summary["generated_to_train"]
    keys = ("mean", "std", "p50", "p75", "p90", "p95", "p99")
    want = ["20", *(f"{g[k]:.4f}" for k in keys)]
    want += [f"{g['fraction_above_0.5']:.4f}", f"{g['fraction_above_0.75']:.4f}"]
    assert page.cells[: len(want)] == want
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert (
        "20 generated items, each with its top-1 training match by cosine similarity, exact "
        "search (engine). 25% of the generated items have a training match above the SSCD "
        "copy threshold 0.75."
    ) in text
    _, spec = page.data()
    assert spec["data"]["generated_id"] == [hostile[r] for r in spec["data"]["generated"]]
    sim = result.similarity[:, 0]
    c = spec["slider"]["scores"]["similarity"]
    assert c["above"][c["threshold"].index(0.75)] == int(np.sum(sim > 0.75)) == 5
