// Runs a report's own script under node against a minimal DOM, drives its controls and prints
// what the table and the counts show, as JSON: `node explorer_stub.js REPORT.html ACTIONS.json`.
// Only the script's logic is exercised here (sorting, filters, slider, paging); how a browser
// parses the page is the browser test's part (test_report_browser.py).
"use strict";
const fs = require("fs");

class Element {
  constructor(tag) {
    this.tagName = tag; this.children = []; this.attrs = {}; this.listeners = {};
    this.data = ""; this.hidden = false; this.disabled = false; this.className = "";
    this.value = "";
  }
  appendChild(child) {
    if (child.tagName === "#fragment") {
      child.children.slice().forEach((c) => this.appendChild(c));
      child.children = [];
    } else {
      this.children.push(child);
    }
    return child;
  }
  removeChild(child) { this.children.splice(this.children.indexOf(child), 1); return child; }
  get firstChild() { return this.children[0] || null; }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  getAttribute(k) { return k in this.attrs ? this.attrs[k] : null; }
  addEventListener(type, f) { (this.listeners[type] = this.listeners[type] || []).push(f); }
  dispatch(type) { (this.listeners[type] || []).forEach((f) => f({target: this})); }
  get textContent() {
    return this.tagName === "#text" ? this.data : this.children.map((c) => c.textContent).join("");
  }
  set textContent(v) {
    this.children = [];
    const t = new Element("#text"); t.data = String(v); this.appendChild(t);
  }
  all() { return this.children.flatMap((c) => [c, ...c.all()]); }
  // the two selector forms the script uses: "tag" and "tag[attribute]"
  querySelectorAll(selector) {
    const [, tag, attr] = /^(\w+)(?:\[([\w-]+)\])?$/.exec(selector);
    return this.all().filter((c) => c.tagName === tag && (!attr || attr in c.attrs));
  }
}

function page(html) {
  const json = /<script type="application\/json" id="alignscope-data">([^]*?)<\/script>/.exec(html);
  const code = /<script id="alignscope-app">([^]*?)<\/script>/.exec(html);
  const body = new Element("body");
  const add = (tag, id) => {
    const e = new Element(tag); e.setAttribute("id", id); body.appendChild(e); return e;
  };
  add("div", "alignscope-explorer");
  add("script", "alignscope-data").textContent = json[1];
  const fallback = add("section", "alignscope-static");
  // the static table's thumbnails, which the script reuses
  const img = /<img src="(data:image\/png;base64,[^"]*)" alt="" width="96" data-thumb="(\w+)">/g;
  for (const m of html.matchAll(img)) {
    const e = new Element("img"); e.setAttribute("src", m[1]); e.setAttribute("data-thumb", m[2]);
    fallback.appendChild(e);
  }
  const byId = (id) => body.all().find((e) => e.getAttribute("id") === id) || null;
  global.document = {
    createElement: (tag) => new Element(tag),
    createTextNode: (s) => { const t = new Element("#text"); t.data = String(s); return t; },
    createDocumentFragment: () => new Element("#fragment"),
    getElementById: byId,
    querySelectorAll: (s) => body.querySelectorAll(s),
  };
  new Function(code[1])();
  return {byId, fallback};
}

function observe(byId) {
  const text = (id) => byId(id).textContent;
  const cell = (td) => {
    const img = td.children.find((c) => c.tagName === "img");
    if (!img) { return td.textContent; }
    return "[img " + img.getAttribute("loading") + " " + String(img.src).slice(0, 22) + "]";
  };
  return {
    header: byId("as-table").children[0].children[0].children.map((th) => th.textContent),
    rows: byId("as-rows").children.map((tr) => tr.children.map(cell)),
    counts: text("as-counts"),
    threshold: byId("as-threshold").getAttribute("data-threshold"),
    range: text("as-range"),
  };
}

const [htmlPath, actionsPath] = process.argv.slice(2);
const {byId, fallback} = page(fs.readFileSync(htmlPath, "utf8"));
const seen = [];
for (const action of JSON.parse(fs.readFileSync(actionsPath, "utf8"))) {
  if (action.observe) {
    seen.push(observe(byId));
  } else if (action.click) {
    byId(action.click).dispatch("click");
  } else if (action.sort_header) {
    byId("as-table").all().find((e) => e.getAttribute("data-key") === action.sort_header)
      .dispatch("click");
  } else {
    const e = byId(action.set);
    e.value = action.value;
    e.dispatch(action.event);
  }
}
process.stdout.write(JSON.stringify({static_hidden: fallback.hidden, seen: seen}));
