/* illust2vec web app: grid, tag filter, item view, query by image, duplicate review, user tags.
 * All text that comes from the collection (file names, tags) goes into the page through
 * textContent or attribute setters, never as HTML. */
"use strict";
(function () {
  var PAGE = 120;
  var $ = function (id) { return document.getElementById(id); };

  // ---------------------------------------------------------------- helpers
  function el(tag, props) {
    var e = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (k === "text") e.textContent = v;
        else if (k === "class") e.className = v;
        else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v);
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c !== null && c !== undefined) e.append(c);  // strings become text nodes
    }
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function basename(p) { var s = String(p); return s.slice(s.lastIndexOf("/") + 1); }
  var inflight = 0, idleWaiters = [];
  function track(promise) {
    inflight++;
    return promise.finally(function () {
      inflight--;
      if (inflight === 0) { var w = idleWaiters; idleWaiters = []; w.forEach(function (f) { f(); }); }
    });
  }
  function api(path, opts) {
    return track(fetch(path, Object.assign({ credentials: "same-origin" }, opts || {})).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) {
          var err = new Error(typeof body.detail === "string" ? body.detail : r.status + " " + r.statusText);
          err.status = r.status;
          throw err;
        }
        return body;
      });
    }));
  }
  function post(path, data) {
    return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });
  }
  function say(text, ok) {
    var m = $("message");
    m.textContent = text;
    m.className = ok ? "ok" : "";
    m.hidden = !text;
  }
  function fail(err) { say(String(err && err.message ? err.message : err), false); }
  function download(name, text, type) {
    var url = URL.createObjectURL(new Blob([text], { type: type }));
    var a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }
  function thumbCard(item, onclick, extra) {
    var img = el("img", { alt: "", loading: "lazy", src: "/thumb/" + item.id + "?size=256" });
    var cap = el("div", { class: "cap", text: basename(item.path) });
    var card = el("div", { class: "card", title: item.path }, img, cap, extra || null);
    card.dataset.id = String(item.id);
    card.addEventListener("click", onclick);
    return card;
  }

  // ---------------------------------------------------------------- state
  var S = {
    filter: { tags: "", min: 0.5, model: "" },
    total: 0, pages: new Map(), pending: new Map(), gen: 0,
    cell: 160, cols: 1, focus: 0,
    sel: new Map(),  // id -> path
    view: "grid", dupes: null, dupeIdx: 0, decisions: new Map(),
    info: null
  };

  // ---------------------------------------------------------------- filter
  // the filter text is a tag expression, parsed by the collection ("a, -b, character:c, user:d, e>=0.3")
  function applyFilter() {
    S.filter.tags = $("filter").value.trim();
    S.filter.min = parseFloat($("min").value);
    S.filter.model = $("model").value;
    resetGrid();
  }
  function withModel(q) {
    if (S.filter.model) q.set("model", S.filter.model);
    return q;
  }
  function itemsUrl(offset, limit) {
    var q = new URLSearchParams({ offset: String(offset), limit: String(limit), min: String(S.filter.min) });
    if (S.filter.tags) q.set("tags", S.filter.tags);
    return "/api/items?" + withModel(q).toString();
  }
  // several taggers: a choice of whose tags the grid, the filter and the item page show (newest first)
  function showTaggers(taggers) {
    if (!taggers || taggers.length < 2) return;
    var sel = $("model");
    clear(sel);
    taggers.slice().reverse().forEach(function (t) { sel.append(el("option", { value: t.name, text: t.name })); });
    S.filter.model = sel.value;
    $("model-ctl").hidden = false;
  }

  // autocomplete on the term being typed (the text after the last comma)
  var sugg = { items: [], active: -1, timer: 0, seq: 0 };
  function currentTerm() {
    var v = $("filter").value, i = v.lastIndexOf(",");
    return v.slice(i + 1).trim();
  }
  function suggest() {
    var term = currentTerm(), seq = ++sugg.seq;
    var neg = term[0] === "-";
    if (neg) term = term.slice(1);
    if (!term) { hideSuggest(); return; }
    api("/api/tags?" + withModel(new URLSearchParams({ prefix: term, limit: "12", min: String(S.filter.min) }))).then(function (rows) {
      if (seq !== sugg.seq) return;
      sugg.items = rows; sugg.active = rows.length ? 0 : -1; sugg.neg = neg;
      var ul = $("suggest");
      clear(ul);
      rows.forEach(function (r, i) {
        var li = el("li", { role: "option" }, el("span", { text: r.tag }), el("span", { class: "cat", text: r.category }),
                    el("span", { class: "n", text: String(r.count) }));
        li.addEventListener("mousedown", function (ev) { ev.preventDefault(); pick(i); });
        ul.append(li);
      });
      ul.hidden = !rows.length;
      markActive();
    }).catch(function () { hideSuggest(); });
  }
  function markActive() {
    Array.prototype.forEach.call($("suggest").children, function (li, i) { li.classList.toggle("active", i === sugg.active); });
  }
  function hideSuggest() { $("suggest").hidden = true; sugg.items = []; sugg.active = -1; }
  function pick(i) {
    var r = sugg.items[i];
    if (!r) return;
    var v = $("filter").value, cut = v.lastIndexOf(",");
    var head = cut >= 0 ? v.slice(0, cut + 1) + " " : "";
    var typed = currentTerm().replace(/^-/, "");
    var withCat = r.category === "user" || typed.indexOf(":") > 0;
    $("filter").value = head + (sugg.neg ? "-" : "") + (withCat ? r.category + ":" : "") + r.tag + ", ";
    hideSuggest();
    applyFilter();
  }

  // ---------------------------------------------------------------- grid (virtualised)
  var cells = new Map();  // index -> element
  function resetGrid() {
    S.gen++; S.pages.clear(); S.pending.clear(); S.focus = 0;
    cells.forEach(function (c) { c.remove(); }); cells.clear();
    $("grid").scrollTop = 0;
    say("", true);
    loadPage(0).then(render).catch(fail);
  }
  function loadPage(p) {
    if (S.pages.has(p)) return Promise.resolve(S.pages.get(p));
    if (S.pending.has(p)) return S.pending.get(p);
    var gen = S.gen;
    var pr = api(itemsUrl(p * PAGE, PAGE)).then(function (r) {
      if (gen !== S.gen) return [];
      S.total = r.total;
      S.pages.set(p, r.items);
      S.pending.delete(p);
      $("count").textContent = r.total + (r.total === 1 ? " item" : " items");
      return r.items;
    }, function (err) { S.pending.delete(p); if (gen === S.gen) { S.total = 0; $("count").textContent = ""; } throw err; });
    S.pending.set(p, pr);
    return pr;
  }
  function itemAt(i) { var pg = S.pages.get(Math.floor(i / PAGE)); return pg ? pg[i % PAGE] : null; }
  var rafPending = false;
  function schedule() { if (!rafPending) { rafPending = true; requestAnimationFrame(function () { rafPending = false; render(); }); } }
  function render() {
    if (S.view !== "grid") return;
    var grid = $("grid"), w = grid.clientWidth || 800, gap = 6;
    var size = S.cell, cols = Math.max(1, Math.floor((w - gap) / (size + gap)));
    S.cols = cols;
    var rowH = size + 18 + gap, rows = Math.ceil(S.total / cols);
    $("grid-inner").style.height = (rows * rowH + gap) + "px";
    var first = Math.max(0, Math.floor(grid.scrollTop / rowH) - 2);
    var last = Math.min(rows, Math.ceil((grid.scrollTop + grid.clientHeight) / rowH) + 2);
    var lo = first * cols, hi = Math.min(S.total, last * cols);
    cells.forEach(function (c, i) { if (i < lo || i >= hi) { c.remove(); cells.delete(i); } });
    var need = new Set();
    for (var i = lo; i < hi; i++) {
      var it = itemAt(i);
      if (!it) { need.add(Math.floor(i / PAGE)); continue; }
      var c = cells.get(i);
      if (!c || c.dataset.id !== String(it.id)) {
        if (c) c.remove();
        c = makeCell(it, i);
        cells.set(i, c);
        $("grid-inner").append(c);
      }
      c.style.left = (gap + (i % cols) * (size + gap)) + "px";
      c.style.top = (gap + Math.floor(i / cols) * rowH) + "px";
      c.style.width = size + "px";
      c.style.height = (size + 18) + "px";
      c.classList.toggle("focus", i === S.focus);
      c.classList.toggle("sel", S.sel.has(it.id));
    }
    need.forEach(function (p) { loadPage(p).then(schedule).catch(fail); });
  }
  function makeCell(it, i) {
    var img = el("img", { alt: "", src: "/thumb/" + it.id + "?size=" + (S.cell > 200 ? 512 : 256), decoding: "async" });
    var tagText = Object.keys(it.tags || {}).join(", ");
    var c = el("div", { class: "cell", title: it.path + (tagText ? "\n" + tagText : "") }, img,
               el("div", { class: "cap", text: basename(it.path) }));
    c.dataset.id = String(it.id);
    c.dataset.index = String(i);
    c.addEventListener("click", function (ev) {
      S.focus = i;
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey) toggleSel(it); else openItem(it.id);
      schedule();
    });
    return c;
  }
  function toggleSel(it) {
    if (S.sel.has(it.id)) S.sel.delete(it.id); else S.sel.set(it.id, it.path);
    selChanged();
  }
  function selChanged() {
    var n = S.sel.size;
    $("selbar").hidden = n === 0;
    document.body.classList.toggle("has-sel", n > 0);
    $("sel-count").textContent = n + " selected";
    schedule();
  }
  function moveFocus(d) {
    if (!S.total) return;
    S.focus = Math.max(0, Math.min(S.total - 1, S.focus + d));
    var grid = $("grid"), rowH = S.cell + 18 + 6, top = Math.floor(S.focus / S.cols) * rowH;
    if (top < grid.scrollTop) grid.scrollTop = top;
    else if (top + rowH > grid.scrollTop + grid.clientHeight) grid.scrollTop = top + rowH - grid.clientHeight + 6;
    schedule();
  }
  function gridKey(ev) {
    var page = Math.max(1, Math.floor($("grid").clientHeight / (S.cell + 24))) * S.cols;
    var k = ev.key, it;
    if (k === "ArrowRight") moveFocus(1);
    else if (k === "ArrowLeft") moveFocus(-1);
    else if (k === "ArrowDown") moveFocus(S.cols);
    else if (k === "ArrowUp") moveFocus(-S.cols);
    else if (k === "PageDown") moveFocus(page);
    else if (k === "PageUp") moveFocus(-page);
    else if (k === "Home") moveFocus(-S.total);
    else if (k === "End") moveFocus(S.total);
    else if (k === "Enter") { it = itemAt(S.focus); if (it) openItem(it.id); }
    else if (k === " ") { it = itemAt(S.focus); if (it) toggleSel(it); }
    else if (k === "Escape") { S.sel.clear(); selChanged(); }
    else return;
    ev.preventDefault();
  }
  function selectAll() {
    var gen = S.gen, got = new Map(), offset = 0;
    function next() {
      return api(itemsUrl(offset, 1000)).then(function (r) {
        if (gen !== S.gen) return;
        r.items.forEach(function (it) { got.set(it.id, it.path); });
        offset += r.items.length;
        if (r.items.length && offset < r.total) return next();
        got.forEach(function (p, id) { S.sel.set(id, p); });
        selChanged();
      });
    }
    next().catch(fail);
  }
  function userTags(add) {
    var tag = $("sel-tag").value.trim();
    if (!tag) { say("type a tag first", false); return; }
    var body = { ids: Array.from(S.sel.keys()) };
    body[add ? "add" : "remove"] = [tag];
    post("/api/user-tags", body).then(function (r) {
      say((add ? "added '" : "removed '") + tag + "' on " + r.changed + " item(s)", true);
      var keep = $("grid").scrollTop;
      S.pages.clear(); cells.forEach(function (c) { c.remove(); }); cells.clear();
      loadPage(0).then(function () { $("grid").scrollTop = keep; render(); });
    }).catch(fail);
  }

  // ---------------------------------------------------------------- views
  function show(view) {
    S.view = view;
    ["grid", "item", "search", "dupes"].forEach(function (v) { $(v + "-view").hidden = v !== view; });
    if (view === "grid") { schedule(); $("grid").focus({ preventScroll: true }); }
  }
  function openItem(id) { location.hash = "#/item/" + id; }

  function tagTable(item) {
    var t = el("table", { class: "tags" });
    var names = Object.keys(item.tags).sort(function (a, b) { return item.tags[b] - item.tags[a]; });
    names.forEach(function (n) {
      var userAdded = item.user_tags && item.user_tags[n] === true;
      var rm = el("button", { type: "button", title: "remove this tag (user tag)", text: "\u00d7" });
      rm.addEventListener("click", function () {
        post("/api/user-tags", { ids: [item.id], remove: [n] }).then(function () { renderItem(item.id); }).catch(fail);
      });
      t.append(el("tr", null, el("td", { class: userAdded ? "user" : "", text: n }),
                  el("td", { class: "cat muted", text: (item.categories || {})[n] || "" }),
                  el("td", { class: "p", text: userAdded ? "user" : item.tags[n].toFixed(3) }), el("td", null, rm)));
    });
    Object.keys(item.user_tags || {}).forEach(function (n) {
      if (item.user_tags[n] !== false) return;
      var undo = el("button", { type: "button", text: "undo", title: "forget this removal" });
      undo.addEventListener("click", function () {
        post("/api/user-tags", { ids: [item.id], forget: [n] }).then(function () { renderItem(item.id); }).catch(fail);
      });
      t.append(el("tr", null, el("td", { class: "muted", text: n }), el("td", { class: "muted", text: "removed" }),
                  el("td", null), el("td", null, undo)));
    });
    return t;
  }
  function renderItem(id) {
    show("item");
    var v = $("item-view");
    clear(v);
    v.append(el("p", { class: "muted", text: "loading\u2026" }));
    Promise.all([api("/api/items/" + id + (S.filter.model ? "?" + withModel(new URLSearchParams()).toString() : "")),
                 api("/api/items/" + id + "/similar?k=12"),
                 api("/api/items/" + id + "/similar?k=12&binary=1"), dupesOnce()]).then(function (r) {
      var item = r[0], sim = r[1].items, simb = r[2].items;
      clear(v);
      var addIn = el("input", { type: "text", placeholder: "add a user tag", maxlength: "200", "aria-label": "add a user tag" });
      var addBtn = el("button", { type: "button", text: "add" });
      addBtn.addEventListener("click", function () {
        var tag = addIn.value.trim();
        if (tag) post("/api/user-tags", { ids: [item.id], add: [tag] }).then(function () { renderItem(item.id); }).catch(fail);
      });
      addIn.addEventListener("keydown", function (ev) { if (ev.key === "Enter") addBtn.click(); ev.stopPropagation(); });
      var back = el("button", { type: "button", text: "\u2190 back (Esc)" });
      back.addEventListener("click", function () { history.back(); });
      var near = (r[3] || []).filter(function (g) { return g.items.some(function (x) { return x.id === item.id; }); });
      var nearItems = [];
      near.forEach(function (g) { g.items.forEach(function (x) { if (x.id !== item.id) nearItems.push(x); }); });
      (item.copies || []).forEach(function (cid) { if (!nearItems.some(function (x) { return x.id === cid; })) nearItems.push({ id: cid, path: "identical copy #" + cid }); });
      // Beside the picture: where it is, then what resembles it (what people open an item for);
      // the long tag list comes below both.
      var side = el("div", { class: "item-info" }, back,
                    el("p", { class: "path", text: item.path }),
                    el("p", { class: "muted", text: (item.width || "?") + " \u00d7 " + (item.height || "?") + " px, " +
                              (item.bytes === null ? "?" : Math.round(item.bytes / 1024) + " KiB") }));
      function strip(title, list, score) {
        var s = el("div", { class: "strip" });
        list.forEach(function (h) {
          s.append(thumbCard(h, function () { openItem(h.id); },
                             score && h.score !== null && h.score !== undefined ? el("div", { class: "cap", text: score(h) }) : null));
        });
        side.append(el("h2", { text: title + " (" + list.length + ")" }), s);
      }
      strip("near-duplicates", nearItems, null);
      strip("similar by features", sim, function (h) { return "cosine " + h.score.toFixed(3); });
      strip("similar by binary codes", simb, function (h) { return "distance " + h.distance; });
      v.append(el("div", { class: "item-top" }, el("img", { class: "big", alt: "", src: "/image/" + item.id }), side));
      v.append(el("section", { class: "item-tags" }, el("h2", { text: "tags (" + Object.keys(item.tags).length + ")" }),
                  tagTable(item), el("p", null, addIn, " ", addBtn)));
    }).catch(function (err) { clear(v); v.append(el("p", { text: String(err.message) })); });
  }

  // ---------------------------------------------------------------- query by image
  function searchImage(file) {
    if (!file || !/^image\//.test(file.type || "image/")) { say("not an image", false); return; }
    var fd = new FormData();
    fd.append("image", file, file.name || "pasted.png");
    fd.append("k", "24");
    location.hash = "#/search";
    show("search");
    var v = $("search-view");
    clear(v);
    var url = URL.createObjectURL(file);
    v.append(el("h2", { text: "query image" }), el("img", { class: "query-img", alt: "", src: url }),
             el("p", { class: "muted", text: "searching\u2026" }));
    api("/api/search", { method: "POST", body: fd }).then(function (r) {
      v.removeChild(v.lastChild);
      var s = el("div", { class: "strip", id: "search-results" });
      r.items.forEach(function (h) {
        s.append(thumbCard(h, function () { openItem(h.id); }, el("div", { class: "cap", text: "cosine " + h.score.toFixed(3) })));
      });
      v.append(el("h2", { text: "most similar (" + r.items.length + ")" }), s);
    }).catch(function (err) { v.removeChild(v.lastChild); v.append(el("p", { text: String(err.message) })); });
  }

  // ---------------------------------------------------------------- duplicate review
  function dupesOnce() {
    if (S.dupes) return Promise.resolve(S.dupes);
    return api("/api/dupes" + (S.dupeDistance != null ? "?distance=" + S.dupeDistance : "")).then(function (r) {
      S.manifests = r.manifests; S.moveTo = r.move_to; S.dupesComputing = r.computing;
      S.dupeDefault = r.default_distance; S.codeBits = r.code_bits;
      if (!r.computing) S.dupes = r.groups;
      return r.groups;
    });
  }
  function renderDupes() {
    show("dupes");
    S.dupes = null;
    dupesOnce().then(function () {
      if (S.dupesComputing) {
        var v = $("dupes-view");
        clear(v);
        v.append(distanceControl());
        v.append(el("p", { id: "dupes-wait", text: "finding near-duplicates\u2026 (this page updates when they are found)" }));
        setTimeout(function () { if (S.view === "dupes" && !S.dupes) renderDupes(); }, 1500);
        return;
      }
      drawDupes();
    }).catch(fail);
  }
  function distanceControl() {
    var d = el("input", { type: "number", id: "dupe-distance", min: "0", max: String(S.codeBits || 0), step: "1",
                          value: String(S.dupeDistance != null ? S.dupeDistance : S.dupeDefault),
                          "aria-label": "largest distance in bits" });
    d.addEventListener("keydown", function (ev) { ev.stopPropagation(); });  // digits are not review keys here
    d.addEventListener("change", function () {
      var x = parseInt(d.value, 10);
      if (!(x >= 0)) return;
      S.dupeDistance = x === S.dupeDefault ? null : x;
      S.dupeIdx = 0; S.decisions.clear();
      renderDupes();
    });
    return el("p", null, el("label", { for: "dupe-distance", text: "largest distance " }), d,
              el("span", { class: "muted", text: " of " + S.codeBits + " bits (default " + S.dupeDefault +
                           "; larger finds more edited copies, and more pictures that are only alike)" }));
  }
  function drawDupes() {
    var v = $("dupes-view");
    clear(v);
    var groups = S.dupes;
    v.append(distanceControl());
    v.append(el("p", { class: "muted", text: "Keys: \u2190/\u2192 or 1-9 choose the copy to keep, k keep this choice, s skip, " +
                       "p previous, a apply. Apply moves the other copies into " + S.moveTo + " (never deletes) and can be undone." }));
    if (!groups.length) v.append(el("p", { text: "no near-duplicates found" }));
    else {
      var i = Math.max(0, Math.min(groups.length - 1, S.dupeIdx)), g = groups[i];
      var chosen = S.decisions.has(i) ? S.decisions.get(i) : (g.choice !== undefined ? g.choice : g.keeper);
      g.choice = chosen;
      var decided = S.decisions.has(i) ? (S.decisions.get(i) === null ? "skipped" : "keep decided") : "undecided";
      v.append(el("h2", { id: "dupe-title", text: "group " + (i + 1) + " of " + groups.length + " \u2014 " + decided }));
      var row = el("div", { class: "strip dupe-group" });
      g.items.forEach(function (f, j) {
        var facts = el("div", { class: "facts", text: (j + 1) + ". " + (f.width ? f.width + "\u00d7" + f.height : "unreadable") + ", " +
                                (f.format || "?") + ", " + Math.round(f.bytes / 1024) + " KiB" + (f.keep ? " \u2014 recommended" : "") });
        var card = thumbCard(f, function () { g.choice = f.id; S.decisions.delete(i); drawDupes(); }, facts);
        if (f.id === chosen) card.classList.add("keeper");
        row.append(card);
      });
      v.append(row);
      var bk = el("button", { type: "button", class: "primary", id: "dupe-keep", text: "keep selected (k)" });
      bk.addEventListener("click", function () { decide(true); });
      var bs = el("button", { type: "button", id: "dupe-skip", text: "skip (s)" });
      bs.addEventListener("click", function () { decide(false); });
      v.append(el("p", null, bk, " ", bs));
    }
    var n = Array.from(S.decisions.values()).filter(function (x) { return x !== null; }).length;
    var ba = el("button", { type: "button", class: "primary", id: "dupe-apply", text: "apply " + n + " decision(s) (a)" });
    ba.disabled = n === 0;
    ba.addEventListener("click", applyDupes);
    v.append(el("p", null, ba));
    var ms = el("ul", { id: "manifests" });
    (S.manifests || []).forEach(function (m) {
      var u = el("button", { type: "button", text: "undo" });
      u.dataset.manifest = m;
      u.addEventListener("click", function () { undoDupes(m); });
      ms.append(el("li", null, el("span", { text: m + " " }), u));
    });
    if (S.manifests && S.manifests.length) v.append(el("h2", { text: "earlier moves" }), ms);
  }
  function decide(keep) {
    var g = S.dupes[S.dupeIdx];
    if (!g) return;
    S.decisions.set(S.dupeIdx, keep ? g.choice : null);
    if (S.dupeIdx < S.dupes.length - 1) S.dupeIdx++;
    drawDupes();
  }
  function applyDupes() {
    var body = [];
    S.decisions.forEach(function (keeper, i) {
      if (keeper === null) return;
      body.push({ ids: S.dupes[i].items.map(function (f) { return f.id; }), keeper: keeper });
    });
    if (!body.length) return;
    post("/api/dupes/apply", { groups: body }).then(function (r) {
      say(r.done + " file(s) moved" + (r.failed.length ? ", " + r.failed.length + " failed" : "") +
          (r.manifest ? "; manifest " + r.manifest : ""), !r.failed.length);
      S.decisions.clear(); S.dupeIdx = 0;
      renderDupes();
    }).catch(fail);
  }
  function undoDupes(name) {
    post("/api/dupes/undo", { manifest: name }).then(function (r) {
      say(r.restored + " file(s) put back" + (r.failed.length ? ", " + r.failed.length + " failed" : ""), !r.failed.length);
      renderDupes();
    }).catch(fail);
  }
  function dupesKey(ev) {
    var g = S.dupes && S.dupes[S.dupeIdx], k = ev.key;
    if (!g) return;
    var j = g.items.findIndex(function (f) { return f.id === g.choice; });
    if (k === "ArrowRight" || k === "ArrowLeft") j = (j + (k === "ArrowRight" ? 1 : -1) + g.items.length) % g.items.length;
    else if (/^[1-9]$/.test(k) && +k <= g.items.length) j = +k - 1;
    else if (k === "k") { decide(true); ev.preventDefault(); return; }
    else if (k === "s") { decide(false); ev.preventDefault(); return; }
    else if (k === "p") { S.dupeIdx = Math.max(0, S.dupeIdx - 1); drawDupes(); return; }
    else if (k === "a") { applyDupes(); return; }
    else return;
    ev.preventDefault();
    g.choice = g.items[j].id;
    S.decisions.delete(S.dupeIdx);
    drawDupes();
  }

  // ---------------------------------------------------------------- routing and events
  function route() {
    var h = location.hash || "#/", m;
    hideSuggest();
    if ((m = /^#\/item\/(\d+)$/.exec(h))) renderItem(m[1]);
    else if (h === "#/dupes") renderDupes();
    else if (h === "#/search" && S.view === "search") show("search");
    else show("grid");
  }
  function isTyping(t) { return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA"); }

  function init() {
    S.cell = parseInt($("size").value, 10);
    $("filter").addEventListener("input", function () {
      clearTimeout(sugg.timer);
      sugg.timer = setTimeout(suggest, 120);
    });
    $("filter").addEventListener("keydown", function (ev) {
      var open = !$("suggest").hidden && sugg.items.length;
      if (ev.key === "ArrowDown" && open) { sugg.active = (sugg.active + 1) % sugg.items.length; markActive(); ev.preventDefault(); }
      else if (ev.key === "ArrowUp" && open) { sugg.active = (sugg.active - 1 + sugg.items.length) % sugg.items.length; markActive(); ev.preventDefault(); }
      else if ((ev.key === "Tab" || ev.key === "Enter") && open && sugg.active >= 0) { pick(sugg.active); ev.preventDefault(); }
      else if (ev.key === "Enter") { hideSuggest(); applyFilter(); if (S.view !== "grid") location.hash = "#/"; }
      else if (ev.key === "Escape") { clearTimeout(sugg.timer); hideSuggest(); $("grid").focus(); }
      ev.stopPropagation();
    });
    $("filter").addEventListener("blur", function () { setTimeout(hideSuggest, 150); });
    $("min").addEventListener("input", function () { $("min-val").textContent = parseFloat($("min").value).toFixed(2); });
    $("min").addEventListener("change", applyFilter);
    $("model").addEventListener("change", applyFilter);
    $("size").addEventListener("input", function () {
      S.cell = parseInt($("size").value, 10);
      cells.forEach(function (c) { c.remove(); }); cells.clear();
      schedule();
    });
    $("grid").addEventListener("scroll", schedule, { passive: true });
    $("grid").addEventListener("keydown", gridKey);
    window.addEventListener("resize", schedule);
    $("upload-btn").addEventListener("click", function () { $("upload").click(); });
    $("upload").addEventListener("change", function () { if (this.files[0]) searchImage(this.files[0]); this.value = ""; });
    $("sel-all").addEventListener("click", selectAll);
    $("sel-clear").addEventListener("click", function () { S.sel.clear(); selChanged(); });
    $("sel-export-txt").addEventListener("click", function () {
      download("selection.txt", Array.from(S.sel.values()).join("\n") + "\n", "text/plain");
    });
    $("sel-export-json").addEventListener("click", function () {
      var rows = Array.from(S.sel.entries()).map(function (e) { return { id: e[0], path: e[1] }; });
      download("selection.json", JSON.stringify(rows, null, 1), "application/json");
    });
    $("sel-add").addEventListener("click", function () { userTags(true); });
    $("sel-remove").addEventListener("click", function () { userTags(false); });
    $("sel-tag").addEventListener("keydown", function (ev) { ev.stopPropagation(); });
    document.addEventListener("keydown", function (ev) {
      if (isTyping(ev.target)) return;
      if (ev.key === "/" ) { $("filter").focus(); ev.preventDefault(); return; }
      if (S.view === "dupes") { dupesKey(ev); return; }
      if (S.view !== "grid" && ev.key === "Escape") { location.hash = "#/"; return; }
      if (S.view === "grid" && ev.target !== $("grid")) gridKey(ev);
    });
    // drop or paste an image anywhere
    var depth = 0;
    document.addEventListener("dragenter", function (ev) { if (ev.dataTransfer && Array.from(ev.dataTransfer.types).indexOf("Files") >= 0) { depth++; $("drop-hint").hidden = false; } });
    document.addEventListener("dragleave", function () { depth = Math.max(0, depth - 1); if (!depth) $("drop-hint").hidden = true; });
    document.addEventListener("dragover", function (ev) { ev.preventDefault(); });
    document.addEventListener("drop", function (ev) {
      ev.preventDefault(); depth = 0; $("drop-hint").hidden = true;
      var f = ev.dataTransfer && ev.dataTransfer.files[0];
      if (f) searchImage(f);
    });
    document.addEventListener("paste", function (ev) {
      if (isTyping(ev.target)) return;
      var items = (ev.clipboardData && ev.clipboardData.items) || [];
      for (var i = 0; i < items.length; i++) {
        if (items[i].kind === "file" && /^image\//.test(items[i].type)) { searchImage(items[i].getAsFile()); ev.preventDefault(); return; }
      }
    });
    window.addEventListener("hashchange", route);
    var ready = Promise.all([api("/api/info"), loadPage(0)]).then(function (r) {
      S.info = r[0];
      showTaggers(r[0].taggers);
      document.title = "illust2vec \u2014 " + basename(r[0].path);
      route();
      render();
    }).catch(fail);
    // hook for tests and scripts (read-only)
    Object.defineProperty(window, "illust2vecApp", {
      value: Object.freeze({
        ready: ready,
        settled: function () {
          return new Promise(function (res) {
            requestAnimationFrame(function () {
              if (inflight === 0) res(); else idleWaiters.push(res);
            });
          });
        },
        state: function () {
          return { view: S.view, total: S.total, focus: S.focus, cols: S.cols, selected: Array.from(S.sel.keys()),
                   rendered: Array.from(cells.keys()).sort(function (a, b) { return a - b; }), dupeIndex: S.dupeIdx };
        }
      }),
      writable: false, configurable: false
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
