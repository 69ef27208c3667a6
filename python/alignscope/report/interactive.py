"""The interactive part of the HTML reports: rows embedded as JSON, and the page's own script.

A report stays one self-contained file that works offline: no CDN, no server, no library. The
rows are embedded in a ``<script type="application/json">`` element, escaped so that no data
can end that element or start markup (``<``, ``>``, ``&``, U+2028, U+2029 and lone surrogates
become ``\\uXXXX`` escapes inside the JSON strings). The script (:data:`SCRIPT`) parses that
JSON and builds the controls and the table with ``createElement`` and ``textContent`` only, never
``innerHTML``: a caption such as ``</script><script>...`` stays text. Without JavaScript the page
shows its static tables.

The page embeds at most :data:`EMBED_ROWS` rows, whatever N (:func:`choose_rows`): beyond it, the
top rows by the ranking and a seeded uniform sample of the rest, said so on the page. The
counts under the threshold slider do not come from the embedded rows: :func:`cuts` computes them
exactly over all N rows at up to about :data:`CUT_POSITIONS` thresholds per score when the
report is written, so they hold for any N while the page stays O(cap) in size.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

# Rows a page embeds at most (report.html of a 1M-row screen with 6 scores: 3.0 MB, measured):
# above it, the top EMBED_ROWS // 2 by the ranking and a uniform sample of the rest.
EMBED_ROWS = 20_000
# The seed of that sample: the same run writes the same page.
SAMPLE_SEED = 0
# Slider positions per score: half evenly spaced in rank, half geometrically spaced from the
# top (poisons are rare, so the first 0.1% of rows needs finer steps than the rest).
CUT_POSITIONS = 1000

# Characters that could end the script element or start markup (<, >, &), or end a JavaScript
# line (U+2028/9), and lone surrogates (not encodable as UTF-8): each becomes a \uXXXX escape,
# which JSON reads back as the same character.
_UNSAFE = re.compile("[<>&\u2028\u2029\ud800-\udfff]")


def embed_json(data: Any) -> str:
    """``data`` as JSON text that is safe inside a ``<script type="application/json">``
    element: it contains no ``<``, ``>`` or ``&`` (so no ``</script`` and no ``<!--``), and
    ``json.loads`` of it gives ``data`` back. NaN and infinities are refused (JSON has none:
    give None)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def finite_or_none(values: np.ndarray) -> list[float | None]:
    """A float column as a JSON list: NaN and infinities as None (shown as a dash, sorted last
    and never counted above a threshold, on the page as in :func:`cuts`)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    out: list[float | None] = v.tolist()
    for i in np.flatnonzero(~ok):
        out[i] = None
    return out


def choose_rows(
    order: np.ndarray, cap: int = EMBED_ROWS, seed: int = SAMPLE_SEED
) -> tuple[np.ndarray, int]:
    """The rows a page embeds, in ranking order, and how many of them are the top rows.

    Parameters
    ----------
    order : (N,) int array, the rows best-ranked first.
    cap : rows embedded at most.
    seed : seed of the uniform sample.

    Returns
    -------
    (rows, top): every row (top = N) when N <= cap; else the first cap // 2 of ``order`` and a
    uniform sample without replacement of cap - cap // 2 of the others, kept in ranking order.
    """
    order = np.asarray(order, dtype=np.int64)
    if cap < 2:
        raise ValueError(f"cap must be at least 2 rows, got {cap}")
    if order.size <= cap:
        return order, int(order.size)
    top = cap // 2
    rest = order[top:]
    picked = np.sort(np.random.default_rng(seed).choice(rest.size, cap - top, replace=False))
    return np.concatenate([order[:top], rest[picked]]), top


def cuts(
    score: np.ndarray,
    flags: np.ndarray | None = None,
    *,
    extra: tuple[float, ...] = (),
    positions: int = CUT_POSITIONS,
) -> dict[str, list[Any]]:
    """Exact counts over all rows at the thresholds a slider steps through.

    Parameters
    ----------
    score : (N,) float array; non-finite values are never above a threshold.
    flags : (N,) bool array (the poison flags) or None.
    extra : thresholds to include besides the grid (a run's own threshold, 0.75 ...).
    positions : about how many grid thresholds: the scores at ranks spaced evenly and spaced
        geometrically from the top.

    Returns
    -------
    {"threshold": descending distinct thresholds t, "above": rows with score > t,
    "flagged": flagged rows with score > t (only with ``flags``)}. The first threshold is the
    highest score, so the first position counts 0 rows.
    """
    s = np.asarray(score, dtype=np.float64)
    finite = np.isfinite(s)
    ascending = np.sort(s[finite])
    f = ascending.size
    out: dict[str, list[Any]] = {"threshold": [], "above": []}
    if flags is not None:
        out["flagged"] = []
    if f == 0:
        return out
    half = max(positions // 2, 2)
    ranks = np.concatenate(
        [
            [0],
            np.linspace(0, f - 1, half),
            np.geomspace(1, f - 1, half) if f > 2 else [],
        ]
    )
    # the k-th highest score (k from 0): a threshold that puts k rows above it without ties
    grid = ascending[f - 1 - np.unique(np.round(ranks).astype(np.int64))]
    wanted = [float(t) for t in extra if np.isfinite(t)]
    thresholds = np.unique(np.concatenate([grid, wanted]))[::-1]
    out["threshold"] = thresholds.tolist()
    out["above"] = (f - np.searchsorted(ascending, thresholds, side="right")).tolist()
    if flags is not None:
        marked = np.sort(s[finite & np.asarray(flags, dtype=bool)])
        out["flagged"] = (marked.size - np.searchsorted(marked, thresholds, side="right")).tolist()
    return out


# Where the script builds the explorer: put it where the explorer should appear, and
# explorer_html(spec) at the end of the body (after any <img data-thumb> it reuses).
HOST = '<div id="alignscope-explorer"></div>'


def explorer_html(spec: dict[str, Any]) -> str:
    """The embedded data and the script that fills :data:`HOST`. ``spec`` is what
    :data:`SCRIPT` reads (see the comment above it)."""
    return (
        f'<script type="application/json" id="alignscope-data">{embed_json(spec)}</script>\n'
        f'<script id="alignscope-app">{SCRIPT}</script>\n'
    )


# Pages using the explorer add this to their <style>.
STYLE = (
    "#alignscope-explorer .as-controls{display:flex;flex-wrap:wrap;gap:.4em 1.2em;margin:.5em 0}"
    "#alignscope-explorer .as-cut{background:#f4f4f8;padding:.4em .6em;margin:.5em 0}"
    "#alignscope-explorer th button{font:inherit;font-weight:bold;border:0;background:none;"
    "cursor:pointer;padding:0}"
    "#alignscope-explorer td.as-text{max-width:32em;overflow-wrap:anywhere}"
    "#alignscope-explorer td.as-num{text-align:right}"
    "#alignscope-explorer tr.as-above{background:#fde8e8}"
    "#alignscope-explorer input[type=range]{width:24em;vertical-align:middle}"
)

# The spec the script reads (JSON, written by report.screening / report.replication):
#   title: heading; note: sentence on which rows are embedded; noun: "pairs" ...
#   n: rows in the run (all of them, not only the embedded ones)
#   columns: [{key, label, kind}] with kind int | text | category | score | flag | image;
#            text columns with "search": true are matched by the search box, a category column
#            gets a select, a flag column with "filter": true gets a select (yes / no)
#   data: {key: [one value per embedded row]}; image cells hold thumbnail keys (or null)
#   thumbnails: {key: PNG data URI} for keys not already on the page as <img data-thumb=key>
#   sort: {key, desc}; search_label: the search box's placeholder
#   slider (optional): {scores: {name: cuts() output}, start: {score, threshold}, label: the
#            slider's label (before the score's select), above: word for rows above the
#            threshold ("removed"), below: word for the others ("kept"), flagged_total: poisons
#            in all n rows (or null), exact: sentence on how the counts are computed}
# Written for any current browser. No data reaches innerHTML; data in attributes (a select's
# option values) go through setAttribute, which parses nothing; an image's src takes only a
# PNG data URI.
SCRIPT = r"""
(function () {
  "use strict";
  const source = document.getElementById("alignscope-data");
  const host = document.getElementById("alignscope-explorer");
  if (!source || !host) { return; }
  const spec = JSON.parse(source.textContent);
  const data = spec.data;
  const columns = spec.columns;
  const total = columns.length ? data[columns[0].key].length : 0;
  const PNG = /^data:image\/png;base64,[A-Za-z0-9+\/=]*$/;
  const thumbs = {};
  document.querySelectorAll("img[data-thumb]").forEach(function (img) {
    thumbs[img.getAttribute("data-thumb")] = img.getAttribute("src");
  });
  Object.keys(spec.thumbnails || {}).forEach(function (k) { thumbs[k] = spec.thumbnails[k]; });
  const slider = spec.slider || null;
  const state = {
    sort: spec.sort.key, desc: spec.sort.desc, query: "", category: "", flag: "",
    status: "", page: 0, size: 50, cut: slider ? slider.start.score : null, position: 0
  };

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      if (k === "text") { node.textContent = props[k]; } else { node.setAttribute(k, props[k]); }
    });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function option(value, label) { return el("option", {value: value, text: label}); }
  function count(v) { return Number(v).toLocaleString("en-US"); }
  function number(v) {
    if (v === null || v === undefined) { return "\u2013"; }
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : v.toFixed(4);
  }
  function ratio(a, b) { return b > 0 ? (a / b).toFixed(3) : "n/a"; }
  function kindOf(key) {
    const c = columns.find(function (x) { return x.key === key; });
    return c ? c.kind : null;
  }

  // the slider's threshold and the counts there (exact over all n rows: cuts())
  function cut() {
    if (!slider) { return null; }
    const c = slider.scores[state.cut];
    const i = Math.min(state.position, c.threshold.length - 1);
    return {
      threshold: c.threshold[i], above: c.above[i],
      flagged: c.flagged ? c.flagged[i] : null
    };
  }
  function isAbove(i, t) {
    const v = data[state.cut][i];
    return v !== null && v > t.threshold;
  }

  const searchKeys = columns.filter(function (c) { return c.search; }).map(function (c) {
    return c.key;
  });
  const category = columns.find(function (c) { return c.kind === "category"; });
  const flag = columns.find(function (c) { return c.kind === "flag" && c.filter; });

  function matches(i, t) {
    if (state.query) {
      const q = state.query;
      if (!searchKeys.some(function (k) {
        const v = data[k][i];
        return v !== null && String(v).toLowerCase().indexOf(q) >= 0;
      })) { return false; }
    }
    if (category && state.category !== "" && data[category.key][i] !== state.category) {
      return false;
    }
    if (flag && state.flag !== "" && (data[flag.key][i] ? "yes" : "no") !== state.flag) {
      return false;
    }
    if (t && state.status !== "" && (isAbove(i, t) ? "above" : "below") !== state.status) {
      return false;
    }
    return true;
  }
  function ordered(t) {
    const keep = [];
    for (let i = 0; i < total; i++) { if (matches(i, t)) { keep.push(i); } }
    const values = data[state.sort];
    const sign = state.desc ? -1 : 1;
    keep.sort(function (a, b) {
      const x = values[a], y = values[b];
      if (x === y) { return a - b; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      return (x < y ? -1 : 1) * sign;
    });
    return keep;
  }

  // controls
  const sortable = columns.filter(function (c) { return c.kind !== "image"; });
  const sortSelect = el("select", {id: "as-sort"},
    sortable.map(function (c) { return option(c.key, c.label); }));
  const orderSelect = el("select", {id: "as-order"},
    [option("desc", "highest first"), option("asc", "lowest first")]);
  const search = el("input", {type: "search", id: "as-search", size: "28",
    placeholder: spec.search_label || "search"});
  const controls = el("div", {class: "as-controls"}, [
    el("label", {}, ["sort by ", sortSelect]), orderSelect,
    el("label", {}, ["filter ", search])
  ]);
  let categorySelect = null;
  if (category) {
    const seen = {};
    data[category.key].forEach(function (v) {
      if (v !== null) { seen[v] = (seen[v] || 0) + 1; }
    });
    const names = Object.keys(seen).sort(function (a, b) {
      return seen[b] - seen[a] || (a < b ? -1 : 1);
    });
    categorySelect = el("select", {id: "as-category"}, [option("", "all")].concat(
      names.map(function (v) { return option(v, v + " (" + count(seen[v]) + ")"); })));
    controls.appendChild(el("label", {}, [category.label + " ", categorySelect]));
  }
  let flagSelect = null;
  if (flag) {
    flagSelect = el("select", {id: "as-flag"},
      [option("", "all"), option("yes", "yes"), option("no", "no")]);
    controls.appendChild(el("label", {}, [flag.label + " ", flagSelect]));
  }

  let cutBox = null, range = null, cutSelect = null, statusSelect = null;
  const shown = {};
  if (slider) {
    cutSelect = el("select", {id: "as-cut-score"},
      Object.keys(slider.scores).map(function (k) { return option(k, k); }));
    range = el("input", {type: "range", id: "as-slider", min: "0", step: "1"});
    ["threshold", "above", "below", "fraction", "flagged", "precision", "recall"].forEach(
      function (k) { shown[k] = el("span", {id: "as-" + k}); });
    const sentence = [
      "threshold ", shown.threshold, ": ", shown.above, " " + slider.above + " (",
      shown.fraction, "), ", shown.below, " " + slider.below
    ];
    if (slider.flagged_total !== null) {
      sentence.push("; ", shown.flagged, " of the " + count(slider.flagged_total) +
        " poisoned " + spec.noun + " " + slider.above + " (precision ", shown.precision,
        ", recall ", shown.recall, ")");
    }
    sentence.push(". " + slider.exact);
    statusSelect = el("select", {id: "as-status"},
      [option("", "all"), option("above", slider.above), option("below", slider.below)]);
    cutBox = el("div", {class: "as-cut"}, [
      el("label", {}, [slider.label + " ", cutSelect]), " ", range,
      el("p", {id: "as-counts"}, sentence),
      el("label", {}, ["show ", statusSelect])
    ]);
  }

  const head = el("tr", {});
  columns.forEach(function (c) {
    if (c.kind === "image") { head.appendChild(el("th", {text: c.label})); return; }
    const button = el("button", {type: "button", "data-key": c.key, text: c.label});
    button.addEventListener("click", function () {
      if (state.sort === c.key) { state.desc = !state.desc; } else {
        state.sort = c.key; state.desc = c.kind === "score";
      }
      state.page = 0; render();
    });
    head.appendChild(el("th", {}, [button]));
  });
  if (slider) { head.appendChild(el("th", {text: "at this threshold"})); }
  const body = el("tbody", {id: "as-rows"});
  const table = el("table", {id: "as-table"}, [el("thead", {}, [head]), body]);
  const prev = el("button", {type: "button", id: "as-prev", text: "previous"});
  const next = el("button", {type: "button", id: "as-next", text: "next"});
  const where = el("span", {id: "as-range"});
  const sizeSelect = el("select", {id: "as-size"},
    ["25", "50", "100", "250", "1000"].map(function (v) { return option(v, v + " a page"); }));
  sizeSelect.value = String(state.size);
  const pager = el("div", {class: "as-controls"}, [prev, where, next, sizeSelect]);

  host.appendChild(el("h2", {text: spec.title}));
  host.appendChild(el("p", {id: "as-note", text: spec.note}));
  if (cutBox) { host.appendChild(cutBox); }
  host.appendChild(controls);
  host.appendChild(pager);
  host.appendChild(table);

  function cell(c, i) {
    const v = data[c.key][i];
    if (c.kind === "image") {
      const uri = v === null ? undefined : thumbs[v];
      if (typeof uri !== "string" || !PNG.test(uri)) { return el("td", {}); }
      const img = el("img", {alt: "", width: "96", loading: "lazy"});
      img.src = uri;
      return el("td", {}, [img]);
    }
    if (c.kind === "score") { return el("td", {class: "as-num", text: number(v)}); }
    if (c.kind === "flag") { return el("td", {text: v === null ? "" : (v ? "yes" : "no")}); }
    if (c.kind === "int") { return el("td", {class: "as-num", text: v === null ? "" : String(v)}); }
    return el("td", {class: "as-text", text: v === null ? "" : String(v)});
  }

  function render() {
    const t = cut();
    if (t) {
      const n = spec.n;
      shown.threshold.textContent = number(t.threshold);
      shown.threshold.setAttribute("data-threshold", String(t.threshold));
      shown.above.textContent = count(t.above);
      shown.below.textContent = count(n - t.above);
      shown.fraction.textContent = (n > 0 ? (100 * t.above / n).toFixed(2) : "0.00") + "%";
      if (t.flagged !== null) {
        shown.flagged.textContent = count(t.flagged);
        shown.precision.textContent = ratio(t.flagged, t.above);
        shown.recall.textContent = ratio(t.flagged, slider.flagged_total);
      }
    }
    const rows = ordered(t);
    const pages = Math.max(1, Math.ceil(rows.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    const first = state.page * state.size;
    const page = rows.slice(first, first + state.size);
    where.textContent = rows.length ?
      "rows " + count(first + 1) + "\u2013" + count(first + page.length) + " of " +
        count(rows.length) + " matching" :
      "no matching rows";
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
    head.querySelectorAll("button").forEach(function (b) {
      const key = b.getAttribute("data-key");
      b.textContent = columns.find(function (c) { return c.key === key; }).label +
        (key === state.sort ? (state.desc ? " \u25bc" : " \u25b2") : "");
    });
    const fresh = document.createDocumentFragment();
    page.forEach(function (i) {
      const tr = el("tr", {"data-index": String(i)});
      columns.forEach(function (c) { tr.appendChild(cell(c, i)); });
      if (t) {
        const above = isAbove(i, t);
        tr.appendChild(el("td", {text: above ? slider.above : slider.below}));
        if (above) { tr.className = "as-above"; }
      }
      fresh.appendChild(tr);
    });
    while (body.firstChild) { body.removeChild(body.firstChild); }
    body.appendChild(fresh);
  }

  function startPosition(score, threshold) {
    const c = slider.scores[score];
    const i = c.threshold.indexOf(threshold);
    return i >= 0 ? i : 0;
  }
  // another score keeps about the same number of rows above the threshold
  function nearestPosition(score, above) {
    const c = slider.scores[score];
    let best = 0;
    c.above.forEach(function (a, i) {
      if (Math.abs(a - above) < Math.abs(c.above[best] - above)) { best = i; }
    });
    return best;
  }

  sortSelect.value = state.sort;
  orderSelect.value = state.desc ? "desc" : "asc";
  sortSelect.addEventListener("change", function () {
    state.sort = sortSelect.value; state.page = 0; render();
  });
  orderSelect.addEventListener("change", function () {
    state.desc = orderSelect.value === "desc"; state.page = 0; render();
  });
  search.addEventListener("input", function () {
    state.query = search.value.trim().toLowerCase(); state.page = 0; render();
  });
  if (categorySelect) {
    categorySelect.addEventListener("change", function () {
      state.category = categorySelect.value; state.page = 0; render();
    });
  }
  if (flagSelect) {
    flagSelect.addEventListener("change", function () {
      state.flag = flagSelect.value; state.page = 0; render();
    });
  }
  if (slider) {
    cutSelect.value = state.cut;
    state.position = startPosition(state.cut, slider.start.threshold);
    range.max = String(slider.scores[state.cut].threshold.length - 1);
    range.value = String(state.position);
    range.addEventListener("input", function () {
      state.position = Number(range.value); render();
    });
    cutSelect.addEventListener("change", function () {
      const above = cut().above;
      state.cut = cutSelect.value;
      state.position = nearestPosition(state.cut, above);
      range.max = String(slider.scores[state.cut].threshold.length - 1);
      range.value = String(state.position);
      render();
    });
    statusSelect.addEventListener("change", function () {
      state.status = statusSelect.value; state.page = 0; render();
    });
  }
  sizeSelect.addEventListener("change", function () {
    state.size = Number(sizeSelect.value); state.page = 0; render();
  });
  prev.addEventListener("click", function () { state.page -= 1; render(); });
  next.addEventListener("click", function () { state.page += 1; render(); });
  // the static table of the top rows repeats the explorer's first page: hide it
  const fallback = document.getElementById("alignscope-static");
  if (fallback) { fallback.hidden = true; }
  render();
})();
"""
