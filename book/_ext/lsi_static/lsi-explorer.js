/* The sample explorer: a sortable, searchable, paged table over one data set's published scores.
   Data: window.LSI_EXPLORER[<dataset>] (explore-data/<dataset>.js, columnar), thumbnails in
   thumbs/<dataset>/<id>.jpg. Only the rows of the current page are put in the DOM. */
(function () {
  "use strict";
  var root = document.documentElement.dataset.content_root || "";
  var PAGE = 50;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function safeId(id) { return String(id).replace(/[^A-Za-z0-9_.-]/g, "_"); }
  function fmt(v) { return v !== v ? "" : (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(3) : v.toPrecision(4)); }
  function hashParams() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var p = kv.split("="); if (p[0]) out[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
    });
    return out;
  }

  function Explorer(box, data) {
    var n = data.rows, c = data.columns, self = this;
    this.data = data; this.n = n;
    this.cls = Int16Array.from(c.cls); this.orig = Int16Array.from(c.orig);
    this.corr = Uint8Array.from(c.corr); this.group = Int16Array.from(c.group);
    this.rank = Float64Array.from(c.rank, function (v) { return v === null ? NaN : v; });
    this.scores = data.tiers.map(function (t) {
      return Float64Array.from(data.scores[t], function (v) { return v === null ? NaN : v; });
    });
    this.ids = c.id; this.texts = c.text || null; this.thumb = c.thumb;
    this.lowered = null;
    this.sortKey = "score0"; this.sortDir = -1; this.page = 0;
    this.order = new Int32Array(n);

    var controls = el("div", {"class": "lsi-x-controls"});
    function field(label, input) { var l = el("label", {}, label); l.appendChild(input); controls.appendChild(l); return input; }
    this.search = field("search id" + (this.texts ? " or text" : ""), el("input", {type: "search", "class": "lsi-x-search", placeholder: "e.g. 1234"}));
    this.classSel = field("class", el("select", {"class": "lsi-x-class"}));
    this.classSel.appendChild(el("option", {value: "-1"}, "all classes"));
    data.classes.forEach(function (name, i) { self.classSel.appendChild(el("option", {value: String(i)}, name)); });
    this.groupSel = field("chapter: corruption", el("select", {"class": "lsi-x-group"}));
    this.groupSel.appendChild(el("option", {value: "-1"}, "all"));
    data.groups.forEach(function (name, i) { self.groupSel.appendChild(el("option", {value: String(i)}, name)); });
    this.corrSel = field("label", el("select", {"class": "lsi-x-corr"}));
    [["all", "all labels"], ["1", "corrupted only"], ["0", "clean only"]].forEach(function (o) {
      self.corrSel.appendChild(el("option", {value: o[0]}, o[1]));
    });
    this.tierSel = field("score", el("select", {"class": "lsi-x-tier"}));
    data.tiers.forEach(function (t, i) { self.tierSel.appendChild(el("option", {value: String(i)}, t)); });
    this.lo = field("score ≥", el("input", {type: "number", step: "any", "class": "lsi-x-lo"}));
    this.hi = field("score ≤", el("input", {type: "number", step: "any", "class": "lsi-x-hi"}));
    box.appendChild(controls);
    this.status = el("p", {"class": "lsi-x-status", "aria-live": "polite"});
    box.appendChild(this.status);
    this.table = el("table", {"class": "lsi-x-table"});
    box.appendChild(this.table);
    var pager = el("div", {"class": "lsi-x-pager"});
    this.prev = el("button", {type: "button", "class": "lsi-x-prev"}, "◀ previous");
    this.next = el("button", {type: "button", "class": "lsi-x-next"}, "next ▶");
    this.pageLabel = el("span", {"class": "lsi-x-page"});
    pager.appendChild(this.prev); pager.appendChild(this.pageLabel); pager.appendChild(this.next);
    box.appendChild(pager);

    var refilter = function () { self.page = 0; self.filter(); };
    this.applyHash();
    window.addEventListener("hashchange", function () { self.applyHash(); refilter(); });
    [this.search, this.lo, this.hi].forEach(function (i) { i.addEventListener("input", refilter); });
    [this.classSel, this.groupSel, this.corrSel, this.tierSel].forEach(function (s) { s.addEventListener("change", refilter); });
    this.prev.addEventListener("click", function () { if (self.page > 0) { self.page--; self.render(); } });
    this.next.addEventListener("click", function () {
      if ((self.page + 1) * PAGE < self.count) { self.page++; self.render(); }
    });
    this.filter();
  }

  /* #lo=..&hi=..&class=..&q=.. (a histogram bin links here with its range) */
  Explorer.prototype.applyHash = function () {
    var h = hashParams();
    if (h.lo !== undefined) this.lo.value = h.lo;
    if (h.hi !== undefined) this.hi.value = h.hi;
    if (h.q !== undefined) this.search.value = h.q;
    if (h["class"]) { var ci = this.data.classes.indexOf(h["class"]); if (ci >= 0) this.classSel.value = String(ci); }
  };

  Explorer.prototype.filter = function () {
    var t0 = performance.now();
    var q = this.search.value.trim().toLowerCase();
    var cls = +this.classSel.value, grp = +this.groupSel.value, corr = this.corrSel.value;
    var tier = this.scores[+this.tierSel.value] || new Float64Array(this.n);
    var lo = this.lo.value === "" ? -Infinity : +this.lo.value, hi = this.hi.value === "" ? Infinity : +this.hi.value;
    if (q && !this.lowered) {
      var ids = this.ids, texts = this.texts;
      this.lowered = ids.map(function (id, i) { return (String(id) + " " + (texts ? texts[i] : "")).toLowerCase(); });
    }
    var k = 0, order = this.order, wantCorr = corr === "all" ? -1 : +corr, ranged = lo > -Infinity || hi < Infinity;
    for (var i = 0; i < this.n; i++) {
      if (cls >= 0 && this.cls[i] !== cls) continue;
      if (grp >= 0 && this.group[i] !== grp) continue;
      if (wantCorr >= 0 && this.corr[i] !== wantCorr) continue;
      if (ranged) { var s = tier[i]; if (!(s >= lo && s <= hi)) continue; }
      if (q && this.lowered[i].indexOf(q) < 0) continue;
      order[k++] = i;
    }
    this.count = k;
    this.sort();
    this.lastFilterMs = performance.now() - t0;
    this.render();
  };

  Explorer.prototype.sort = function () {
    var key = this.sortKey, dir = this.sortDir, values;
    if (key.indexOf("score") === 0) values = this.scores[+key.slice(5)];
    else if (key === "rank") values = this.rank;
    else if (key === "class") values = this.cls;
    else if (key === "id") {
      var ids = this.ids;
      var part = Array.prototype.slice.call(this.order, 0, this.count);
      part.sort(function (a, b) { return dir * String(ids[a]).localeCompare(String(ids[b]), undefined, {numeric: true}); });
      this.order.set(part); return;
    }
    if (!values) return;
    var sub = this.order.subarray(0, this.count);
    var sorted = Int32Array.from(sub).sort(function (a, b) {
      var x = values[a], y = values[b];
      if (x !== x) return (y !== y) ? 0 : 1;  // missing values last
      if (y !== y) return -1;
      return dir * (x - y);
    });
    sub.set(sorted);
  };

  Explorer.prototype.header = function () {
    var self = this, row = el("tr");
    var cols = [["", null], ["id", "id"], ["class", "class"], ["original", null], ["chapter: corruption", null]];
    this.data.tiers.forEach(function (t, i) { cols.push([t, "score" + i]); });
    cols.push(["rank in class", "rank"]);
    cols.forEach(function (c) {
      var th = el("th", c[1] ? {"data-key": c[1]} : {}, c[0]);
      if (c[1] === self.sortKey) th.className = self.sortDir > 0 ? "lsi-sorted-asc" : "lsi-sorted-desc";
      if (c[1]) th.addEventListener("click", function () {
        if (self.sortKey === c[1]) self.sortDir = -self.sortDir; else { self.sortKey = c[1]; self.sortDir = c[1] === "rank" || c[1] === "id" ? 1 : -1; }
        self.page = 0; self.sort(); self.render();
      });
      row.appendChild(th);
    });
    var head = el("thead"); head.appendChild(row); return head;
  };

  Explorer.prototype.render = function () {
    var data = this.data, self = this;
    this.table.textContent = "";
    this.table.appendChild(this.header());
    var body = el("tbody"), start = this.page * PAGE, end = Math.min(this.count, start + PAGE);
    for (var k = start; k < end; k++) {
      var i = this.order[k], tr = el("tr", {"data-row": String(i)});
      if (this.corr[i]) tr.className = "lsi-x-corrupted";
      var first = el("td", {"class": this.texts ? "lsi-x-text" : "lsi-x-thumb"});
      if (this.thumb[i]) {
        first.appendChild(el("img", {src: root + "thumbs/" + data.dataset + "/" + safeId(this.ids[i]) + ".jpg",
                                     alt: "sample " + this.ids[i]}));
      } else if (this.texts) first.textContent = this.texts[i];
      tr.appendChild(first);
      tr.appendChild(el("td", {}, String(this.ids[i])));
      tr.appendChild(el("td", {}, data.classes[this.cls[i]]));
      tr.appendChild(el("td", {}, this.corr[i] && this.orig[i] !== this.cls[i] ? data.classes[this.orig[i]]
                                  : this.corr[i] ? "(corrupted data)" : ""));
      tr.appendChild(el("td", {}, data.groups[this.group[i]]));
      this.scores.forEach(function (s) { tr.appendChild(el("td", {}, fmt(s[i]))); });
      tr.appendChild(el("td", {}, this.rank[i] === this.rank[i] ? String(this.rank[i]) : ""));
      body.appendChild(tr);
    }
    this.table.appendChild(body);
    var pages = Math.max(1, Math.ceil(this.count / PAGE));
    this.pageLabel.textContent = "page " + (this.page + 1) + " of " + pages;
    this.prev.disabled = this.page === 0;
    this.next.disabled = end >= this.count;
    this.status.textContent = this.count.toLocaleString("en") + " of " + this.n.toLocaleString("en") +
      " samples match; rows " + (this.count ? start + 1 : 0) + "–" + end + " shown (filtered in " +
      (this.lastFilterMs || 0).toFixed(0) + " ms).";
    this.status.setAttribute("data-filter-ms", String(this.lastFilterMs || 0));
  };

  function start() {
    document.querySelectorAll(".lsi-explorer").forEach(function (box) {
      var data = (window.LSI_EXPLORER || {})[box.getAttribute("data-dataset")];
      if (!data) { console.error("lsi explorer: no data for " + box.getAttribute("data-dataset")); return; }
      box.lsiExplorer = new Explorer(box, data);
      box.setAttribute("data-ready-ms", String(performance.now()));  // since navigation start
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
