/* illust2vec map viewer.  No network, no dependencies.
 *
 * Data comes from <script type="application/json" id="i2v-data"> (written by
 * illust2vec.maps.viewer.write_viewer).  User strings are put into the DOM
 * only through textContent.  Thumbnails live in atlas pages: "base" pages
 * (small cells, all loaded at start) and "hi" pages (thumb_size cells, decoded
 * on demand when their points are on screen at a zoom that needs them).
 *
 * Read-only hook for tests and automation: window.illust2vecViewer
 *   ready            Promise, resolved after the first frame is drawn (the map is
 *                    interactive; points show their mean colours until the
 *                    overview atlas is decoded)
 *   settled()        Promise, resolved once the overview atlas and every hi
 *                    atlas page the current view needs are loaded and drawn
 *   renderer         "webgl" or "canvas" (chosen automatically: canvas when WebGL is
 *                    missing or software-rendered; #renderer=webgl|canvas in the URL forces one)
 *   count            number of points
 *   pointToScreen(i) {x, y, size}: centre of point i in client CSS pixels and
 *                    its drawn side length
 *   screenToPoint(x, y)  index of the topmost point drawn at client (x, y), or -1
 *   visibleCount()   points whose thumbnails intersect the window
 *   highlighted()    sorted indices matching the search/legend filter ([] if none active)
 *   selection()      sorted indices of the box/lasso selection
 *   hovered()        index under the mouse or -1
 *   view()           {x, y, zoom} camera (world units of the normalised map)
 *   timings()        milliseconds since navigation start: scriptStart, dataParsed,
 *                    rendererMade, baseDecoded, firstFrame; frames: start times of
 *                    the last frames drawn; lastFrameJs: JS time of the last frame
 */
(function () {
  "use strict";

  var T = { scriptStart: performance.now() };
  var D = JSON.parse(document.getElementById("i2v-data").textContent);
  T.dataParsed = performance.now();
  var N = D.n;
  var A = D.atlas;
  var params = new URLSearchParams((location.hash || "").replace(/^#/, ""));
  var BG = [0x17, 0x18, 0x1b];
  var MIN_PX = 3;
  var HOVER_RGB = [255, 255, 255];
  var MATCH_RGB = [255, 206, 84];
  var SEL_RGB = [106, 176, 255];
  var HI_SLOTS = 12;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function showError(msg) {
    var box = $("i2v-error");
    box.textContent = msg;
    box.hidden = false;
  }

  // ------------------------------------------------------------------ geometry
  var wx = new Float32Array(N), wy = new Float32Array(N);
  (function normalise() {
    var x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity, i;
    for (i = 0; i < N; i++) {
      var x = D.x[i], y = D.y[i];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    var span = Math.max(x1 - x0, y1 - y0) || 1;
    var cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    for (i = 0; i < N; i++) { wx[i] = (D.x[i] - cx) / span; wy[i] = (D.y[i] - cy) / span; }
  })();
  // side of a thumbnail in world units (the writer's, when it spread the points for it)
  var WORLD_SIZE = D.pointSize || Math.min(0.25, 0.8 / Math.sqrt(N));
  var AVG = b64ToBytes(D.avg); // mean colour per thumbnail (RGB)
  var ext = new Float32Array(2 * N); // content half-extent fractions (aspect)
  for (var i0 = 0; i0 < N; i0++) {
    var w = D.size[4 * i0], h = D.size[4 * i0 + 1], m = Math.max(w, h, 1);
    ext[2 * i0] = w / m; ext[2 * i0 + 1] = h / m;
  }

  // atlas rectangles (normalised uv) per point, for both levels
  function rects(cell, dimW, dimH, sizeOff) {
    var perRow = Math.floor(A.page / cell), perPage = perRow * perRow;
    var r = new Float32Array(4 * N), layer = new Float32Array(N), px = new Int32Array(4 * N);
    for (var i = 0; i < N; i++) {
      var k = D.slot[i], p = Math.floor(k / perPage), q = k - p * perPage;
      var row = Math.floor(q / perRow), col = q - row * perRow;
      var cw = D.size[4 * i + sizeOff], ch = D.size[4 * i + sizeOff + 1];
      var ox = col * cell + Math.floor((cell - cw) / 2), oy = row * cell + Math.floor((cell - ch) / 2);
      px[4 * i] = ox; px[4 * i + 1] = oy; px[4 * i + 2] = cw; px[4 * i + 3] = ch;
      r[4 * i] = (ox + 0.5) / dimW; r[4 * i + 1] = (oy + 0.5) / dimH;
      r[4 * i + 2] = (ox + cw - 0.5) / dimW; r[4 * i + 3] = (oy + ch - 0.5) / dimH;
      layer[i] = p;
    }
    return { uv: r, layer: layer, px: px };
  }
  var baseR = rects(A.baseCell, A.baseDim[0], A.baseDim[1], 2);
  var hiR = rects(A.hiCell, A.hiDim[0], A.hiDim[1], 0);

  // ------------------------------------------------------------------ spatial grid (CSR)
  var grid = (function build() {
    var x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity, i;
    for (i = 0; i < N; i++) {
      if (wx[i] < x0) x0 = wx[i]; if (wx[i] > x1) x1 = wx[i];
      if (wy[i] < y0) y0 = wy[i]; if (wy[i] > y1) y1 = wy[i];
    }
    var cell = Math.max(WORLD_SIZE, 1 / Math.sqrt(N));
    var gw = Math.max(1, Math.ceil((x1 - x0) / cell) + 1), gh = Math.max(1, Math.ceil((y1 - y0) / cell) + 1);
    var start = new Int32Array(gw * gh + 1), items = new Int32Array(N), cellOf = new Int32Array(N);
    for (i = 0; i < N; i++) {
      var c = Math.floor((wx[i] - x0) / cell) + gw * Math.floor((wy[i] - y0) / cell);
      cellOf[i] = c; start[c + 1]++;
    }
    for (i = 0; i < gw * gh; i++) start[i + 1] += start[i];
    var fill = start.slice(0, gw * gh);
    for (i = 0; i < N; i++) items[fill[cellOf[i]]++] = i; // indices ascending within a cell
    return { x0: x0, y0: y0, cell: cell, gw: gw, gh: gh, start: start, items: items, bx0: x0, bx1: x1, by0: y0, by1: y1 };
  })();
  // calls fn(i) for points whose centre lies in the world rectangle
  function queryRect(ax, ay, bx, by, fn) {
    var g = grid;
    var cx0 = Math.max(0, Math.floor((ax - g.x0) / g.cell)), cx1 = Math.min(g.gw - 1, Math.floor((bx - g.x0) / g.cell));
    var cy0 = Math.max(0, Math.floor((ay - g.y0) / g.cell)), cy1 = Math.min(g.gh - 1, Math.floor((by - g.y0) / g.cell));
    for (var cy = cy0; cy <= cy1; cy++) {
      for (var cx = cx0; cx <= cx1; cx++) {
        var c = cx + cy * g.gw;
        for (var k = g.start[c], e = g.start[c + 1]; k < e; k++) {
          var i = g.items[k];
          if (wx[i] >= ax && wx[i] <= bx && wy[i] >= ay && wy[i] <= by) fn(i);
        }
      }
    }
  }

  // ------------------------------------------------------------------ colours and groups
  var PALETTE = ["#4e9cff", "#ff7a45", "#3fc98a", "#f45b7a", "#b58cff", "#f2c14e", "#37c6d0", "#ff9ad5",
    "#9ccc65", "#e07b53", "#7f8cff", "#d4a373", "#5fd3a7", "#ff6b6b", "#c77dff", "#ffd166",
    "#4dd0e1", "#f78fb3", "#a3be8c", "#ffb86c"];
  function hexRgb(h) { return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)]; }
  function groupRgb(k) {
    if (k < PALETTE.length) return hexRgb(PALETTE[k]);
    var hue = (k * 137.508) % 360, s = 0.62, l = 0.62;
    var f = function (n) {
      var kk = (n + hue / 30) % 12, a = s * Math.min(l, 1 - l);
      return Math.round(255 * (l - a * Math.max(-1, Math.min(kk - 3, 9 - kk, 1))));
    };
    return [f(0), f(8), f(4)];
  }
  var modes = [["none", "Thumbnails only"]];
  if (D.label) modes.push(["label", "Label"]);
  if (D.cluster) modes.push(["cluster", "Cluster"]);
  var colourMode = D.label ? "label" : D.cluster ? "cluster" : "none";
  var clusterIndex = {};
  (D.clusters || []).forEach(function (c, k) { clusterIndex[c[0]] = k; });
  function groupOf(i, mode) {
    if (mode === "label") return D.label[i];
    if (mode === "cluster") { var c = D.cluster[i]; return c === -2 ? -1 : clusterIndex[c]; }
    return -1;
  }
  function groupName(g, mode) { return mode === "label" ? D.labels[g] : D.clusters[g][1]; }
  function groupColour(g, mode) {
    if (g < 0) return [110, 112, 120];
    if (mode === "cluster" && D.clusters[g][0] === -1) return [110, 112, 120];
    return groupRgb(mode === "cluster" ? g - (clusterIndex[-1] === 0 ? 1 : 0) : g);
  }

  // per-point style: rgb + flags (1 match, 2 selected)
  var style = new Uint8Array(4 * N);
  var selected = new Uint8Array(N);
  var match = new Uint8Array(N);
  var filterActive = false;
  var focusGroup = null;
  var searchTerms = [];
  var hay = null;
  function buildHaystack() {
    hay = new Array(N);
    for (var i = 0; i < N; i++) {
      var s = D.path[i];
      var t = D.tags[i];
      for (var k = 0; k < t.length; k += 2) s += "\n" + D.tagNames[t[k]];
      if (D.label && D.label[i] >= 0) s += "\n" + D.labels[D.label[i]];
      hay[i] = s.toLowerCase();
    }
  }
  function recomputeStyle() {
    for (var i = 0; i < N; i++) {
      var rgb = colourMode === "none" ? [0, 0, 0] : groupColour(groupOf(i, colourMode), colourMode);
      style[4 * i] = rgb[0]; style[4 * i + 1] = rgb[1]; style[4 * i + 2] = rgb[2];
      style[4 * i + 3] = (filterActive && match[i] ? 1 : 0) | (selected[i] ? 2 : 0);
    }
    styleDirty = true;
    requestDraw();
  }
  var styleDirty = true;
  function applyFilter() {
    filterActive = searchTerms.length > 0 || focusGroup !== null;
    var n = 0;
    if (searchTerms.length && !hay) buildHaystack();
    for (var i = 0; i < N; i++) {
      var ok = true;
      if (focusGroup !== null) ok = groupOf(i, focusGroup.mode) === focusGroup.g;
      for (var k = 0; ok && k < searchTerms.length; k++) ok = hay[i].indexOf(searchTerms[k]) >= 0;
      match[i] = ok ? 1 : 0;
      n += ok ? 1 : 0;
    }
    var sc = $("i2v-search-count");
    sc.textContent = filterActive ? n + " of " + N + " match" : "";
    recomputeStyle();
  }

  // ------------------------------------------------------------------ camera
  var canvas = $("i2v-canvas");
  var cssW = 1, cssH = 1, dpr = 1;
  var cam = { x: 0, y: 0, zoom: 1 };
  var sizeScale = 1;
  function pointPx() { return Math.max(WORLD_SIZE * sizeScale * cam.zoom, MIN_PX); }
  function toScreen(i) { return [(wx[i] - cam.x) * cam.zoom + cssW / 2, (wy[i] - cam.y) * cam.zoom + cssH / 2]; }
  function toWorld(sx, sy) { return [(sx - cssW / 2) / cam.zoom + cam.x, (sy - cssH / 2) / cam.zoom + cam.y]; }
  function fit() {
    var left = 12, right = 12, top = 12, bottom = 28;
    if (cssW > 760) {
      left = $("i2v-panel").getBoundingClientRect().right + 16;
      var side = $("i2v-side");
      right = side.hidden ? 16 : cssW - side.getBoundingClientRect().left + 16;
    }
    var aw = Math.max(50, cssW - left - right), ah = Math.max(50, cssH - top - bottom);
    var x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (var i = 0; i < N; i++) {
      if (wx[i] < x0) x0 = wx[i]; if (wx[i] > x1) x1 = wx[i];
      if (wy[i] < y0) y0 = wy[i]; if (wy[i] > y1) y1 = wy[i];
    }
    var pad = WORLD_SIZE * sizeScale;
    var zw = aw / (x1 - x0 + pad), zh = ah / (y1 - y0 + pad);
    cam.zoom = Math.min(zw, zh);
    // centre of the available area in screen space maps to the centre of the data
    var sx = left + aw / 2, sy = top + ah / 2;
    cam.x = (x0 + x1) / 2 - (sx - cssW / 2) / cam.zoom;
    cam.y = (y0 + y1) / 2 - (sy - cssH / 2) / cam.zoom;
    requestDraw();
  }
  function resize() {
    dpr = window.devicePixelRatio || 1;
    cssW = Math.max(1, window.innerWidth); cssH = Math.max(1, window.innerHeight);
    canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr);
    overlay.width = canvas.width; overlay.height = canvas.height;
    requestDraw();
  }

  // ------------------------------------------------------------------ atlas loading
  function b64ToBytes(b64) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(b64);
    var s = atob(b64), n = s.length, out = new Uint8Array(n);
    for (var i = 0; i < n; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function dataUriToBitmap(uri) {
    var comma = uri.indexOf(",");
    var mime = uri.slice(5, uri.indexOf(";"));
    var blob = new Blob([b64ToBytes(uri.slice(comma + 1))], { type: mime });
    return createImageBitmap(blob, { premultiplyAlpha: "none", colorSpaceConversion: "none" });
  }
  var domReady = new Promise(function (res) {
    if (document.readyState !== "loading") res();
    else document.addEventListener("DOMContentLoaded", function () { res(); });
  });
  var jsonpWaiting = {};
  Object.defineProperty(window, "__i2vAtlas", {
    value: function (kind, index, uri) {
      var key = kind + ":" + index, cb = jsonpWaiting[key];
      if (cb && typeof uri === "string") { delete jsonpWaiting[key]; cb(uri); }
    }
  });
  function atlasUri(kind, index) {
    if (A.embed || kind === "base") {
      var get = function () {
        var e = $("i2v-" + kind + "-" + index);
        if (!e) throw new Error("atlas page " + kind + " " + index + " is missing from the page");
        return e.textContent;
      };
      var e0 = $("i2v-" + kind + "-" + index);
      return e0 ? Promise.resolve(e0.textContent) : domReady.then(get);
    }
    return new Promise(function (res, rej) {
      var src = A.hiSrc[index];
      jsonpWaiting[kind + ":" + index] = res;
      var s = document.createElement("script");
      s.src = src;
      s.onload = function () { s.remove(); };
      s.onerror = function () { s.remove(); rej(new Error("cannot read " + src + " (keep the _files folder beside the page)")); };
      document.head.appendChild(s);
    });
  }
  function loadBitmap(kind, index) { return atlasUri(kind, index).then(dataUriToBitmap); }

  // hi pages: state 0 none, 1 loading, 2 resident, 3 failed
  var hiPages = A.hiPages;
  var hiState = new Uint8Array(hiPages);
  var hiBitmap = new Array(hiPages);   // level-0 bitmap (for tooltip / canvas renderer)
  var hiSlot = new Int16Array(hiPages).fill(-1);
  var slotPage = [], slotUsed = [];
  for (var s0 = 0; s0 < Math.min(HI_SLOTS, hiPages); s0++) { slotPage.push(-1); slotUsed.push(0); }
  var loadingCount = 0;
  var frameNo = 0;
  var neededPages = null;   // Map page -> visible count, for the current view
  var missingNeeded = 0;

  function ensureHi(p) {
    if (hiState[p] !== 0) return;
    hiState[p] = 1; loadingCount++;
    loadBitmap("hi", p).then(function (bmp) {
      return renderer.prepareHi ? renderer.prepareHi(bmp).then(function (mips) { return [bmp, mips]; }) : [bmp, null];
    }).then(function (r) {
      loadingCount--;
      // choose a slot: a free one, else the least recently used page not needed now
      var best = -1, bestUsed = Infinity;
      for (var s = 0; s < slotPage.length; s++) {
        var q = slotPage[s];
        if (q < 0) { best = s; break; }
        if (neededPages && neededPages.has(q) && slotUsed[s] === frameNo) continue;
        if (slotUsed[s] < bestUsed) { bestUsed = slotUsed[s]; best = s; }
      }
      if (best < 0) best = 0;
      var old = slotPage[best];
      if (old >= 0) {
        hiState[old] = 0; hiSlot[old] = -1;
        if (hiBitmap[old]) { hiBitmap[old].close(); hiBitmap[old] = null; }
        if (renderer.setHiSlot) renderer.setHiSlot(old, -1);
      }
      slotPage[best] = p; slotUsed[best] = frameNo; hiSlot[p] = best; hiState[p] = 2; hiBitmap[p] = r[0];
      if (renderer.uploadHi) renderer.uploadHi(best, r[0], r[1]);
      if (renderer.setHiSlot) renderer.setHiSlot(p, best);
      if (tipIndex >= 0 && pageOfHi(tipIndex) === p) drawTipImage(tipIndex);
      requestDraw();
    }).catch(function (err) {
      loadingCount--; hiState[p] = 3; // failed: not retried, the base atlas stays in use
      showError(String(err && err.message || err));
      requestDraw();
    });
  }
  function pageOfHi(i) { return hiR.layer[i]; }

  // ------------------------------------------------------------------ renderers
  var overlay = document.createElement("canvas");
  overlay.id = "i2v-overlay";
  overlay.style.cssText = "position:fixed;inset:0;width:100vw;height:100vh;pointer-events:none;z-index:1";
  canvas.after(overlay);
  var octx = overlay.getContext("2d");

  function makeWebGL() {
    var gl = canvas.getContext("webgl2", { antialias: false, alpha: false, premultipliedAlpha: false, preserveDrawingBuffer: false });
    if (!gl) return null;
    var VS = "#version 300 es\n" +
      "precision highp float; precision highp int;\n" +
      "in vec2 a_corner; in vec2 a_pos; in vec2 a_ext; in vec4 a_base; in float a_bl; in vec4 a_hi; in float a_hp; in vec4 a_style; in vec3 a_avg;\n" +
      "uniform vec2 u_cam; uniform float u_zoom; uniform vec2 u_view; uniform float u_px; uniform int u_pass;\n" +
      "uniform bool u_filter; uniform bool u_useHi; uniform bool u_colour; uniform bool u_baseReady; uniform lowp usampler2D u_hiMap; uniform int u_hiMapW;\n" +
      "out vec2 v_local; flat out vec2 v_half; flat out vec4 v_rect; flat out float v_layer; flat out int v_tex;\n" +
      "flat out vec3 v_ring; flat out float v_ringW; flat out float v_dim; flat out int v_solid; flat out vec3 v_col;\n" +
      "void main() {\n" +
      "  int flags = int(a_style.w + 0.5); bool match = (flags & 1) != 0; bool sel = (flags & 2) != 0;\n" +
      "  bool emph = (u_filter && match) || sel;\n" +
      "  if ((u_pass == 0 && emph) || (u_pass == 1 && !emph)) { gl_Position = vec4(2.0, 2.0, 2.0, 1.0); return; }\n" +
      "  float px = u_px; vec2 half_ = a_ext * px * 0.5;\n" +
      "  bool small_ = px < 6.0;\n" +
      "  float ring = small_ ? 0.0 : (px < 14.0 ? 1.0 : 2.0);\n" +
      "  vec3 ringCol = a_style.rgb / 255.0; bool hasRing = u_colour;\n" +
      "  if (u_filter && match) { ringCol = vec3(1.0, 0.807, 0.329); hasRing = true; }\n" +
      "  if (sel) { ringCol = vec3(0.416, 0.69, 1.0); hasRing = true; }\n" +
      "  if (u_pass == 2) { ringCol = vec3(1.0); hasRing = true; ring = max(ring, 2.0); }\n" +
      "  if (!hasRing) ring = 0.0;\n" +
      "  vec2 h2 = half_ + ring;\n" +
      "  vec2 c = (a_pos - u_cam) * u_zoom + u_view * 0.5;\n" +
      "  vec2 d = (a_corner * 2.0 - 1.0) * h2;\n" +
      "  vec2 p = c + d;\n" +
      "  gl_Position = vec4(p.x / u_view.x * 2.0 - 1.0, 1.0 - p.y / u_view.y * 2.0, 0.0, 1.0);\n" +
      "  v_local = d; v_half = half_; v_ring = ringCol; v_ringW = ring;\n" +
      "  v_dim = (u_filter && !match && !sel && u_pass != 2) ? 1.0 : 0.0;\n" +
      "  v_solid = (small_ || !u_baseReady) ? 1 : 0; v_col = (small_ && hasRing) ? ringCol : a_avg;\n" +
      "  v_tex = 0; v_rect = a_base; v_layer = a_bl;\n" +
      "  if (u_useHi) {\n" +
      "    int hp = int(a_hp + 0.5);\n" +
      "    uint s = texelFetch(u_hiMap, ivec2(hp % u_hiMapW, hp / u_hiMapW), 0).r;\n" +
      "    if (s > 0u) { v_tex = 1; v_rect = a_hi; v_layer = float(s - 1u); }\n" +
      "  }\n" +
      "}\n";
    var FS = "#version 300 es\n" +
      "precision highp float; precision highp sampler2DArray;\n" +
      "in vec2 v_local; flat in vec2 v_half; flat in vec4 v_rect; flat in float v_layer; flat in int v_tex;\n" +
      "flat in vec3 v_ring; flat in float v_ringW; flat in float v_dim; flat in int v_solid; flat in vec3 v_col;\n" +
      "uniform sampler2DArray u_base; uniform sampler2DArray u_hi; uniform vec3 u_bg;\n" +
      "out vec4 o;\n" +
      "void main() {\n" +
      "  vec3 col;\n" +
      "  vec2 a = abs(v_local);\n" +
      "  if (v_solid == 1) col = v_col;\n" +
      "  else if (a.x > v_half.x || a.y > v_half.y) col = v_ring;\n" +
      "  else {\n" +
      "    vec2 t = v_local / max(v_half, vec2(1e-6)) * 0.5 + 0.5;\n" +
      "    vec2 uv = mix(v_rect.xy, v_rect.zw, t);\n" +
      "    col = v_tex == 1 ? texture(u_hi, vec3(uv, v_layer)).rgb : texture(u_base, vec3(uv, v_layer)).rgb;\n" +
      "  }\n" +
      "  if (v_dim > 0.5) col = mix(col, u_bg, 0.78);\n" +
      "  o = vec4(col, 1.0);\n" +
      "}\n";
    function sh(type, src) {
      var s = gl.createShader(type);
      gl.shaderSource(s, src); gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error("shader: " + gl.getShaderInfoLog(s));
      return s;
    }
    var prog = gl.createProgram();
    gl.attachShader(prog, sh(gl.VERTEX_SHADER, VS)); gl.attachShader(prog, sh(gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error("program: " + gl.getProgramInfoLog(prog));
    gl.useProgram(prog);
    var U = {};
    ["u_cam", "u_zoom", "u_view", "u_px", "u_pass", "u_filter", "u_useHi", "u_colour", "u_baseReady", "u_hiMap", "u_hiMapW", "u_base", "u_hi", "u_bg"].forEach(function (n) { U[n] = gl.getUniformLocation(prog, n); });
    var L = {};
    ["a_corner", "a_pos", "a_ext", "a_base", "a_bl", "a_hi", "a_hp", "a_style", "a_avg"].forEach(function (n) { L[n] = gl.getAttribLocation(prog, n); });

    var vao = gl.createVertexArray();
    gl.bindVertexArray(vao);
    var quad = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, quad);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([0, 0, 1, 0, 0, 1, 1, 1]), gl.STATIC_DRAW);
    gl.enableVertexAttribArray(L.a_corner);
    gl.vertexAttribPointer(L.a_corner, 2, gl.FLOAT, false, 0, 0);
    // static per-instance data: pos(2) ext(2) base(4) bl(1) hi(4) hp(1) = 14 floats
    var ST = 14, stat = new Float32Array(ST * N);
    for (var i = 0; i < N; i++) {
      var o = ST * i;
      stat[o] = wx[i]; stat[o + 1] = wy[i]; stat[o + 2] = ext[2 * i]; stat[o + 3] = ext[2 * i + 1];
      stat.set(baseR.uv.subarray(4 * i, 4 * i + 4), o + 4); stat[o + 8] = baseR.layer[i];
      stat.set(hiR.uv.subarray(4 * i, 4 * i + 4), o + 9); stat[o + 13] = hiR.layer[i];
    }
    var sbuf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, sbuf);
    gl.bufferData(gl.ARRAY_BUFFER, stat, gl.STATIC_DRAW);
    var abuf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, abuf);
    gl.bufferData(gl.ARRAY_BUFFER, AVG, gl.STATIC_DRAW);
    var dbuf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, dbuf);
    gl.bufferData(gl.ARRAY_BUFFER, style, gl.DYNAMIC_DRAW);
    function pointers(first) {
      var sb = ST * 4, off = first * sb;
      gl.bindBuffer(gl.ARRAY_BUFFER, sbuf);
      [["a_pos", 2, 0], ["a_ext", 2, 2], ["a_base", 4, 4], ["a_bl", 1, 8], ["a_hi", 4, 9], ["a_hp", 1, 13]].forEach(function (a) {
        var loc = L[a[0]];
        if (loc < 0) return;
        gl.enableVertexAttribArray(loc);
        gl.vertexAttribPointer(loc, a[1], gl.FLOAT, false, sb, off + a[2] * 4);
        gl.vertexAttribDivisor(loc, 1);
      });
      gl.bindBuffer(gl.ARRAY_BUFFER, abuf);
      gl.enableVertexAttribArray(L.a_avg);
      gl.vertexAttribPointer(L.a_avg, 3, gl.UNSIGNED_BYTE, true, 3, first * 3);
      gl.vertexAttribDivisor(L.a_avg, 1);
      gl.bindBuffer(gl.ARRAY_BUFFER, dbuf);
      gl.enableVertexAttribArray(L.a_style);
      gl.vertexAttribPointer(L.a_style, 4, gl.UNSIGNED_BYTE, false, 4, first * 4);
      gl.vertexAttribDivisor(L.a_style, 1);
    }
    pointers(0);

    function arrayTex(unit, w, h, layers, levels) {
      var t = gl.createTexture();
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(gl.TEXTURE_2D_ARRAY, t);
      gl.texStorage3D(gl.TEXTURE_2D_ARRAY, levels, gl.RGBA8, w, h, layers);
      gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MIN_FILTER, levels > 1 ? gl.LINEAR_MIPMAP_NEAREST : gl.LINEAR);
      gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
      gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MAX_LEVEL, levels - 1);
      return t;
    }
    function levelsFor(cell, w, h, cap) {
      var n = 1;
      while (n < cap && (cell >> n) >= 2 && (w >> n) >= 1 && (h >> n) >= 1 && (w % (1 << n)) === 0 && (h % (1 << n)) === 0) n++;
      return n;
    }
    var baseLevels = levelsFor(A.baseCell, A.baseDim[0], A.baseDim[1], 8);
    var hiLevels = levelsFor(A.hiCell, A.hiDim[0], A.hiDim[1], 3);
    var baseTex = arrayTex(0, A.baseDim[0], A.baseDim[1], Math.max(1, A.basePages), baseLevels);
    var hiTex = arrayTex(1, A.hiDim[0], A.hiDim[1], Math.max(1, slotPage.length), hiLevels);
    var mapW = Math.max(1, Math.min(hiPages, 1024)), mapH = Math.max(1, Math.ceil(hiPages / 1024));
    var hiMapData = new Uint8Array(mapW * mapH);
    var hiMapTex = gl.createTexture();
    gl.activeTexture(gl.TEXTURE2);
    gl.bindTexture(gl.TEXTURE_2D, hiMapTex);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.R8UI, mapW, mapH, 0, gl.RED_INTEGER, gl.UNSIGNED_BYTE, hiMapData);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    var hiMapDirty = false;
    gl.uniform1i(U.u_base, 0); gl.uniform1i(U.u_hi, 1); gl.uniform1i(U.u_hiMap, 2); gl.uniform1i(U.u_hiMapW, mapW);
    gl.uniform3f(U.u_bg, BG[0] / 255, BG[1] / 255, BG[2] / 255);

    return {
      name: "webgl",
      uploadBase: function (layer, bmp) {
        gl.activeTexture(gl.TEXTURE0);
        gl.bindTexture(gl.TEXTURE_2D_ARRAY, baseTex);
        gl.texSubImage3D(gl.TEXTURE_2D_ARRAY, 0, 0, 0, layer, bmp.width, bmp.height, 1, gl.RGBA, gl.UNSIGNED_BYTE, bmp);
      },
      baseDone: function () {
        gl.activeTexture(gl.TEXTURE0);
        gl.bindTexture(gl.TEXTURE_2D_ARRAY, baseTex);
        if (baseLevels > 1) gl.generateMipmap(gl.TEXTURE_2D_ARRAY);
      },
      prepareHi: function (bmp) {
        var jobs = [];
        for (var l = 1; l < hiLevels; l++) {
          jobs.push(createImageBitmap(bmp, { resizeWidth: Math.max(1, bmp.width >> l), resizeHeight: Math.max(1, bmp.height >> l), resizeQuality: "medium" }));
        }
        return Promise.all(jobs);
      },
      uploadHi: function (slot, bmp, mips) {
        gl.activeTexture(gl.TEXTURE1);
        gl.bindTexture(gl.TEXTURE_2D_ARRAY, hiTex);
        gl.texSubImage3D(gl.TEXTURE_2D_ARRAY, 0, 0, 0, slot, bmp.width, bmp.height, 1, gl.RGBA, gl.UNSIGNED_BYTE, bmp);
        (mips || []).forEach(function (m, k) {
          gl.texSubImage3D(gl.TEXTURE_2D_ARRAY, k + 1, 0, 0, slot, m.width, m.height, 1, gl.RGBA, gl.UNSIGNED_BYTE, m);
          m.close();
        });
      },
      setHiSlot: function (page, slot) { hiMapData[page] = slot + 1; hiMapDirty = true; },
      draw: function (st) {
        gl.viewport(0, 0, canvas.width, canvas.height);
        gl.clearColor(BG[0] / 255, BG[1] / 255, BG[2] / 255, 1);
        gl.clear(gl.COLOR_BUFFER_BIT);
        if (styleDirty) {
          gl.bindBuffer(gl.ARRAY_BUFFER, dbuf);
          gl.bufferSubData(gl.ARRAY_BUFFER, 0, style);
          styleDirty = false;
        }
        if (hiMapDirty) {
          gl.activeTexture(gl.TEXTURE2);
          gl.bindTexture(gl.TEXTURE_2D, hiMapTex);
          gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, mapW, mapH, gl.RED_INTEGER, gl.UNSIGNED_BYTE, hiMapData);
          hiMapDirty = false;
        }
        gl.uniform2f(U.u_cam, cam.x, cam.y);
        gl.uniform1f(U.u_zoom, cam.zoom);
        gl.uniform2f(U.u_view, cssW, cssH);
        gl.uniform1f(U.u_px, st.px);
        gl.uniform1i(U.u_filter, filterActive ? 1 : 0);
        gl.uniform1i(U.u_useHi, st.useHi ? 1 : 0);
        gl.uniform1i(U.u_colour, colourMode !== "none" ? 1 : 0);
        gl.uniform1i(U.u_baseReady, st.baseReady ? 1 : 0);
        pointers(0);
        gl.uniform1i(U.u_pass, 0);
        gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, N);
        if (filterActive || st.anySelected) {
          gl.uniform1i(U.u_pass, 1);
          gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, N);
        }
        if (st.hover >= 0) {
          pointers(st.hover);
          gl.uniform1i(U.u_pass, 2);
          gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, 1);
          pointers(0);
        }
      }
    };
  }

  function makeCanvas2D() {
    var ctx = canvas.getContext("2d", { alpha: false });
    var baseBmp = [];
    function css(rgb) { return "rgb(" + rgb[0] + "," + rgb[1] + "," + rgb[2] + ")"; }
    // dots straight into an ImageData: 100k points cost a few milliseconds
    var dotImg = null, dotBuf = null;
    function drawDots(all, st) {
      var W = canvas.width, H = canvas.height;
      if (!dotImg || dotImg.width !== W || dotImg.height !== H) {
        dotImg = ctx.createImageData(W, H);
        dotBuf = new Uint32Array(dotImg.data.buffer);
      }
      var pack = function (r, g, b) { return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0; };
      dotBuf.fill(pack(BG[0], BG[1], BG[2]));
      var z = cam.zoom * dpr, ox = (cssW / 2 - cam.x * cam.zoom) * dpr, oy = (cssH / 2 - cam.y * cam.zoom) * dpr;
      var size = Math.max(1, Math.round(st.px * dpr)), h0 = size >> 1, small = st.px < 6;
      for (var j = 0; j < all.length; j++) {
        var p = all[j], isHover = j === all.length - 1 && st.hover === p;
        var flagged = selected[p] || (filterActive && match[p]);
        var r, g, b;
        if (isHover) { r = 255; g = 255; b = 255; }
        else if (small && selected[p]) { r = SEL_RGB[0]; g = SEL_RGB[1]; b = SEL_RGB[2]; }
        else if (small && filterActive && match[p]) { r = MATCH_RGB[0]; g = MATCH_RGB[1]; b = MATCH_RGB[2]; }
        else if (small && colourMode !== "none") { r = style[4 * p]; g = style[4 * p + 1]; b = style[4 * p + 2]; }
        else { r = AVG[3 * p]; g = AVG[3 * p + 1]; b = AVG[3 * p + 2]; }
        if (filterActive && !flagged && !isHover) {
          r = Math.round(r * 0.22 + BG[0] * 0.78); g = Math.round(g * 0.22 + BG[1] * 0.78); b = Math.round(b * 0.22 + BG[2] * 0.78);
        }
        var c = pack(r, g, b);
        var x0 = Math.max(0, Math.round(wx[p] * z + ox) - h0), y0 = Math.max(0, Math.round(wy[p] * z + oy) - h0);
        var x1 = Math.min(W, Math.round(wx[p] * z + ox) - h0 + size), y1 = Math.min(H, Math.round(wy[p] * z + oy) - h0 + size);
        for (var y = y0; y < y1; y++) dotBuf.fill(c, y * W + x0, y * W + x1);
      }
      ctx.putImageData(dotImg, 0, 0);
    }
    return {
      name: "canvas",
      uploadBase: function (layer, bmp) {
        baseBmp[layer] = bmp;
      },
      baseDone: function () {},
      draw: function (st) {
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
        ctx.fillStyle = css(BG);
        ctx.fillRect(0, 0, cssW, cssH);
        var px = st.px, vis = st.visible;
        var thumbs = st.baseReady && px >= 6 && vis.length <= 40000;
        var order = [];
        var emphList = [];
        for (var k = 0; k < vis.length; k++) {
          var i = vis[k];
          ((filterActive && match[i]) || selected[i] ? emphList : order).push(i);
        }
        if (thumbs) { // overlapping thumbnails: draw in index order, as WebGL does
          order.sort(function (a, b) { return a - b; });
          emphList.sort(function (a, b) { return a - b; });
        }
        var all = order.concat(emphList);
        if (st.hover >= 0) all.push(st.hover);
        if (!thumbs) { drawDots(all, st); return; }
        ctx.imageSmoothingEnabled = true;
        ctx.imageSmoothingQuality = "medium";
        for (var j = 0; j < all.length; j++) {
          var p = all[j], sc = toScreen(p);
          var hw = ext[2 * p] * px / 2, hh = ext[2 * p + 1] * px / 2;
          var isHover = j === all.length - 1 && st.hover === p;
          var flagged = selected[p] || (filterActive && match[p]);
          var ringRgb = selected[p] ? SEL_RGB : (filterActive && match[p]) ? MATCH_RGB : colourMode !== "none" ? [style[4 * p], style[4 * p + 1], style[4 * p + 2]] : null;
          if (isHover) ringRgb = HOVER_RGB;
          ctx.globalAlpha = filterActive && !flagged && !isHover ? 0.22 : 1;
          if (!thumbs) {
            var dot = (px < 6 && ringRgb) || [AVG[3 * p], AVG[3 * p + 1], AVG[3 * p + 2]];
            ctx.fillStyle = css(dot);
            ctx.fillRect(sc[0] - hw, sc[1] - hh, Math.max(1, 2 * hw), Math.max(1, 2 * hh));
            continue;
          }
          var ring = !ringRgb ? 0 : (px < 14 ? 1 : 2);
          if (isHover) ring = 2;
          if (ring) {
            ctx.fillStyle = css(ringRgb);
            ctx.fillRect(sc[0] - hw - ring, sc[1] - hh - ring, 2 * (hw + ring), 2 * (hh + ring));
          }
          var hp = hiR.layer[p];
          var useHi = st.useHi && hiState[hp] === 2 && hiBitmap[hp];
          var R = useHi ? hiR.px : baseR.px, bmp = useHi ? hiBitmap[hp] : baseBmp[baseR.layer[p]];
          if (!bmp) continue;
          ctx.drawImage(bmp, R[4 * p], R[4 * p + 1], R[4 * p + 2], R[4 * p + 3], sc[0] - hw, sc[1] - hh, 2 * hw, 2 * hh);
        }
        ctx.globalAlpha = 1;
      },
      baseBitmap: function (l) { return baseBmp[l]; }
    };
  }

  var renderer = null;
  var baseBitmaps = [];
  // WebGL unless asked otherwise (#renderer=canvas) or when WebGL is a software
  // rasteriser (SwiftShader, llvmpipe), which is slower than the 2D canvas for
  // many small quads; #renderer=webgl forces WebGL.
  function softwareGL() {
    try {
      var g = document.createElement("canvas").getContext("webgl2");
      if (!g) return false;
      var info = g.getExtension("WEBGL_debug_renderer_info");
      var name = String(g.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : g.RENDERER));
      var lose = g.getExtension("WEBGL_lose_context");
      if (lose) lose.loseContext();
      return /swiftshader|llvmpipe|softpipe|software/i.test(name);
    } catch (e) { return false; }
  }
  var want = params.get("renderer");
  if (want === "webgl" || (want !== "canvas" && !softwareGL())) {
    try { renderer = makeWebGL(); } catch (e) { renderer = null; console.warn("WebGL unavailable, using canvas: " + e.message); }
  }
  if (!renderer) renderer = makeCanvas2D();

  // ------------------------------------------------------------------ frame
  var drawQueued = false, firstFrame = null, lastState = null;
  var settleWaiters = [];
  var baseLoaded = false;
  function requestDraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(frame);
  }
  var allIndices = null;
  var maxExt = 1;
  // points whose drawn square intersects the window: their indices (collect) or just the count
  function visibleSet(px, collect) {
    var pad = (px / 2 + 3) / cam.zoom;
    var a = toWorld(0, 0), b = toWorld(cssW, cssH);
    var out = collect ? [] : null, count = 0;
    var z = cam.zoom, ox = cssW / 2 - cam.x * z, oy = cssH / 2 - cam.y * z, h = px / 2;
    var g = grid;
    if (g.bx0 * z + ox - h >= 0 && g.bx1 * z + ox + h <= cssW && g.by0 * z + oy - h >= 0 && g.by1 * z + oy + h <= cssH) {
      if (!collect) return N; // the whole map is inside the window
      if (!allIndices) { allIndices = new Array(N); for (var k = 0; k < N; k++) allIndices[k] = k; }
      return allIndices;
    }
    // the grid walk of queryRect, inlined: this runs every frame over up to N points
    var cx0 = Math.max(0, Math.floor((a[0] - pad - g.x0) / g.cell)), cx1 = Math.min(g.gw - 1, Math.floor((b[0] + pad - g.x0) / g.cell));
    var cy0 = Math.max(0, Math.floor((a[1] - pad - g.y0) / g.cell)), cy1 = Math.min(g.gh - 1, Math.floor((b[1] + pad - g.y0) / g.cell));
    var items = g.items, start = g.start, W = cssW, H = cssH;
    var mx = h * maxExt, cz = g.cell * z;
    for (var cy = cy0; cy <= cy1; cy++) {
      var sy0 = (g.y0 + cy * g.cell) * z + oy, yin = sy0 - mx >= 0 && sy0 + cz + mx <= H;
      for (var cx = cx0, c = cx0 + cy * g.gw; cx <= cx1; cx++, c++) {
        var sx0 = (g.x0 + cx * g.cell) * z + ox;
        if (yin && sx0 - mx >= 0 && sx0 + cz + mx <= W) { // the whole cell is on screen
          count += start[c + 1] - start[c];
          if (collect) for (var k3 = start[c]; k3 < start[c + 1]; k3++) out.push(items[k3]);
          continue;
        }
        for (var k2 = start[c], e = start[c + 1]; k2 < e; k2++) {
          var i = items[k2];
          var sx = wx[i] * z + ox, sy = wy[i] * z + oy, hw = ext[2 * i] * h, hh = ext[2 * i + 1] * h;
          if (sx + hw >= 0 && sx - hw <= W && sy + hh >= 0 && sy - hh <= H) {
            count++;
            if (collect) out.push(i);
          }
        }
      }
    }
    return collect ? out : count;
  }
  function frame() {
    drawQueued = false;
    var t0 = performance.now();
    frameNo++;
    var px = pointPx();
    var useHi = px * (window.devicePixelRatio || 1) > A.baseCell * 1.1;
    var vis = visibleSet(px, useHi || renderer.name === "canvas");
    var nvis = typeof vis === "number" ? vis : vis.length;
    missingNeeded = 0;
    neededPages = null;
    if (useHi && nvis <= 60000) {
      var counts = new Map();
      for (var k = 0; k < vis.length; k++) { var p = hiR.layer[vis[k]]; counts.set(p, (counts.get(p) || 0) + 1); }
      var pages = Array.from(counts.keys()).sort(function (a, b) { return counts.get(b) - counts.get(a); }).slice(0, slotPage.length);
      neededPages = new Set(pages);
      pages.forEach(function (p) {
        if (hiState[p] === 2) { slotUsed[hiSlot[p]] = frameNo; return; }
        if (hiState[p] === 3) return;
        missingNeeded++;
        if (loadingCount < 3) ensureHi(p);
      });
    }
    // the tooltip shows the full-resolution thumbnail (one page at a time while hovering)
    if (tipIndex >= 0 && hiState[hiR.layer[tipIndex]] === 0 && loadingCount < 3) ensureHi(hiR.layer[tipIndex]);
    var anySel = selCount > 0;
    var st = { px: px, useHi: useHi, visible: vis, hover: tipIndex, anySelected: anySel, baseReady: baseLoaded };
    lastState = st;
    renderer.draw(st);
    drawOverlay();
    T.lastFrameJs = performance.now() - t0;
    frameLog.push(t0);
    if (frameLog.length > 300) frameLog.splice(0, 100);
    var status = N + " images \u00b7 " + nvis + " visible \u00b7 zoom " + (cam.zoom / (fitZoom || 1)).toFixed(1) + "\u00d7";
    if (loadingCount || !baseLoaded) status += " \u00b7 loading thumbnails\u2026";
    $("i2v-status").textContent = status;
    if (firstFrame) { var f = firstFrame; firstFrame = null; T.firstFrame = performance.now(); f(); }
    if (baseLoaded && missingNeeded === 0 && loadingCount === 0 && settleWaiters.length) {
      var w = settleWaiters; settleWaiters = [];
      w.forEach(function (r) { r(); });
    }
  }
  var fitZoom = 1;
  var frameLog = []; // start times of the last frames drawn (for benchmarks)

  // ------------------------------------------------------------------ overlay: box / lasso
  var drag = null;
  function drawOverlay() {
    octx.setTransform(dpr, 0, 0, dpr, 0, 0);
    octx.clearRect(0, 0, cssW, cssH);
    if (!drag || (drag.kind !== "box" && drag.kind !== "lasso")) return;
    octx.lineWidth = 1.5;
    octx.strokeStyle = "rgba(106,176,255,0.95)";
    octx.fillStyle = "rgba(106,176,255,0.12)";
    octx.beginPath();
    if (drag.kind === "box") {
      octx.rect(Math.min(drag.x0, drag.x1), Math.min(drag.y0, drag.y1), Math.abs(drag.x1 - drag.x0), Math.abs(drag.y1 - drag.y0));
    } else {
      drag.path.forEach(function (q, k) { if (k) octx.lineTo(q[0], q[1]); else octx.moveTo(q[0], q[1]); });
      octx.closePath();
    }
    octx.fill(); octx.stroke();
  }

  // ------------------------------------------------------------------ hit testing
  function hitTest(sx, sy) {
    var px = pointPx(), w = toWorld(sx, sy), r = (px / 2 + 2) / cam.zoom;
    var best = -1, bestKey = -1;
    queryRect(w[0] - r, w[1] - r, w[0] + r, w[1] + r, function (i) {
      var sc = toScreen(i), hw = ext[2 * i] * px / 2, hh = ext[2 * i + 1] * px / 2;
      if (Math.abs(sx - sc[0]) <= hw + 0.5 && Math.abs(sy - sc[1]) <= hh + 0.5) {
        var emph = (filterActive && match[i]) || selected[i];
        var key = (emph ? N : 0) + i;
        if (key > bestKey) { bestKey = key; best = i; }
      }
    });
    return best;
  }

  // ------------------------------------------------------------------ tooltip
  var tip = $("i2v-tooltip"), tipIndex = -1;
  var tipCanvas = $("i2v-tip-image"), tipCtx = tipCanvas.getContext("2d");
  function drawTipImage(i) {
    tipCtx.fillStyle = "#111214";
    tipCtx.fillRect(0, 0, tipCanvas.width, tipCanvas.height);
    var hp = hiR.layer[i], R, bmp;
    if (hiState[hp] === 2 && hiBitmap[hp]) { R = hiR.px; bmp = hiBitmap[hp]; }
    else {
      R = baseR.px; bmp = baseBitmaps[baseR.layer[i]]; // frame() requests the hi page
    }
    if (!bmp) return;
    var w = R[4 * i + 2], h = R[4 * i + 3], s = Math.min(tipCanvas.width / w, tipCanvas.height / h);
    tipCtx.imageSmoothingQuality = "high";
    tipCtx.drawImage(bmp, R[4 * i], R[4 * i + 1], w, h, (tipCanvas.width - w * s) / 2, (tipCanvas.height - h * s) / 2, w * s, h * s);
  }
  function showTip(i, cx, cy) {
    if (i !== tipIndex) {
      tipIndex = i;
      if (i < 0) { tip.hidden = true; requestDraw(); return; }
      $("i2v-tip-path").textContent = D.path[i];
      var lab = [];
      if (D.label && D.label[i] >= 0) lab.push(D.labels[D.label[i]]);
      if (D.cluster && D.cluster[i] !== -2) {
        var ci = clusterIndex[D.cluster[i]];
        lab.push(D.clusters[ci][1]);
      }
      $("i2v-tip-label").textContent = lab.join(" \u00b7 ");
      var tb = $("i2v-tip-tags");
      tb.replaceChildren();
      var t = D.tags[i];
      for (var k = 0; k < t.length && k < 24; k += 2) {
        var tr = el("tr");
        tr.appendChild(el("td", null, D.tagNames[t[k]]));
        tr.appendChild(el("td", null, t[k + 1].toFixed(2)));
        tb.appendChild(tr);
      }
      drawTipImage(i);
      tip.hidden = false;
      requestDraw();
    }
    if (i < 0) return;
    var r = tip.getBoundingClientRect(), x = cx + 18, y = cy + 18;
    if (x + r.width > cssW - 8) x = cx - r.width - 18;
    if (y + r.height > cssH - 8) y = Math.max(8, cssH - r.height - 8);
    if (x < 8) x = 8;
    tip.style.transform = "translate(" + Math.round(x) + "px," + Math.round(y) + "px)";
  }

  // ------------------------------------------------------------------ selection
  var selCount = 0;
  function setSelection(indices, add) {
    if (!add) selected.fill(0);
    indices.forEach(function (i) { selected[i] = 1; });
    selCount = 0;
    for (var i = 0; i < N; i++) selCount += selected[i];
    $("i2v-sel-count").textContent = selCount ? selCount + " selected" : "No selection";
    ["i2v-export-csv", "i2v-export-json", "i2v-sel-clear"].forEach(function (id) { $(id).disabled = selCount === 0; });
    recomputeStyle();
  }
  function selectedList() { var out = []; for (var i = 0; i < N; i++) if (selected[i]) out.push(i); return out; }
  function finishBox(d) {
    var a = toWorld(Math.min(d.x0, d.x1), Math.min(d.y0, d.y1)), b = toWorld(Math.max(d.x0, d.x1), Math.max(d.y0, d.y1));
    var out = [];
    queryRect(a[0], a[1], b[0], b[1], function (i) { out.push(i); });
    setSelection(out, d.add);
  }
  function finishLasso(d) {
    if (d.path.length < 3) return;
    var poly = d.path.map(function (q) { return toWorld(q[0], q[1]); });
    var x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    poly.forEach(function (q) { x0 = Math.min(x0, q[0]); x1 = Math.max(x1, q[0]); y0 = Math.min(y0, q[1]); y1 = Math.max(y1, q[1]); });
    var out = [];
    queryRect(x0, y0, x1, y1, function (i) {
      var x = wx[i], y = wy[i], inside = false;
      for (var a = 0, b = poly.length - 1; a < poly.length; b = a++) {
        var ya = poly[a][1], yb = poly[b][1];
        if ((ya > y) !== (yb > y) && x < (poly[b][0] - poly[a][0]) * (y - ya) / (yb - ya) + poly[a][0]) inside = !inside;
      }
      if (inside) out.push(i);
    });
    setSelection(out, d.add);
  }
  function rowFor(i) {
    return {
      index: i, path: D.path[i], x: D.x[i], y: D.y[i],
      label: D.label && D.label[i] >= 0 ? D.labels[D.label[i]] : null,
      cluster: D.cluster && D.cluster[i] !== -2 ? D.cluster[i] : null,
      href: D.href ? D.href[i] : null
    };
  }
  function csvField(v) {
    if (v === null || v === undefined) return "";
    var s = String(v);
    // a text cell that a spreadsheet would run as a formula gets a leading quote
    if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function download(name, text, mime) {
    var url = URL.createObjectURL(new Blob([text], { type: mime }));
    var a = document.createElement("a");
    a.href = url; a.download = name; a.style.display = "none";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { a.remove(); URL.revokeObjectURL(url); }, 1000);
  }
  function exportCsv() {
    var lines = ["path,x,y,label,cluster"];
    selectedList().forEach(function (i) {
      var r = rowFor(i);
      lines.push([r.path, r.x, r.y, r.label, r.cluster].map(csvField).join(","));
    });
    download("selection.csv", lines.join("\r\n") + "\r\n", "text/csv;charset=utf-8");
  }
  function exportJson() {
    var rows = selectedList().map(rowFor);
    download("selection.json", JSON.stringify({ title: D.title, count: rows.length, points: rows }, null, 1), "application/json");
  }

  // ------------------------------------------------------------------ input
  var mouseMode = "pan";
  function setMode(m) {
    mouseMode = m;
    document.querySelectorAll(".i2v-mode").forEach(function (b) { b.classList.toggle("i2v-active", b.dataset.mode === m); });
    canvas.classList.toggle("i2v-select", m !== "pan");
  }
  canvas.addEventListener("pointerdown", function (e) {
    if (e.button !== 0) return;
    canvas.setPointerCapture(e.pointerId);
    var kind = e.shiftKey || mouseMode === "box" ? "box" : e.altKey || mouseMode === "lasso" ? "lasso" : "pan";
    drag = { kind: kind, x0: e.clientX, y0: e.clientY, x1: e.clientX, y1: e.clientY, moved: 0, cam: { x: cam.x, y: cam.y },
      path: [[e.clientX, e.clientY]], add: e.ctrlKey || e.metaKey };
    if (kind === "pan") canvas.classList.add("i2v-dragging");
    e.preventDefault();
  });
  canvas.addEventListener("pointermove", function (e) {
    if (drag) {
      drag.x1 = e.clientX; drag.y1 = e.clientY;
      drag.moved = Math.max(drag.moved, Math.abs(drag.x1 - drag.x0) + Math.abs(drag.y1 - drag.y0));
      if (drag.kind === "pan") {
        cam.x = drag.cam.x - (drag.x1 - drag.x0) / cam.zoom;
        cam.y = drag.cam.y - (drag.y1 - drag.y0) / cam.zoom;
        if (drag.moved > 3) showTip(-1);
      } else if (drag.kind === "lasso") {
        var last = drag.path[drag.path.length - 1];
        if (Math.abs(last[0] - e.clientX) + Math.abs(last[1] - e.clientY) > 2) drag.path.push([e.clientX, e.clientY]);
      }
      requestDraw();
      if (drag.kind === "pan" && drag.moved <= 3) showTip(hitTest(e.clientX, e.clientY), e.clientX, e.clientY);
      return;
    }
    var i = hitTest(e.clientX, e.clientY);
    showTip(i, e.clientX, e.clientY);
    canvas.classList.toggle("i2v-over", i >= 0 && !!(D.href && D.href[i]));
  });
  function endDrag(e) {
    if (!drag) return;
    var d = drag;
    drag = null;
    canvas.classList.remove("i2v-dragging");
    if (d.kind === "box" && d.moved > 3) finishBox(d);
    else if (d.kind === "lasso" && d.moved > 3) finishLasso(d);
    else if (d.moved <= 3 && e && e.type === "pointerup") {
      var i = hitTest(e.clientX, e.clientY);
      if (i >= 0) openOriginal(i);
    }
    requestDraw();
  }
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("pointerleave", function () { if (!drag) showTip(-1); });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    var dy = e.deltaY * (e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? cssH : 1);
    var f = Math.exp(-Math.max(-300, Math.min(300, dy)) * 0.0016);
    var before = toWorld(e.clientX, e.clientY);
    cam.zoom = clampZoom(cam.zoom * f);
    var after = toWorld(e.clientX, e.clientY);
    cam.x += before[0] - after[0]; cam.y += before[1] - after[1];
    requestDraw();
    if (tipIndex >= 0) showTip(hitTest(e.clientX, e.clientY), e.clientX, e.clientY);
  }, { passive: false });
  function openOriginal(i) {
    var h = D.href && D.href[i];
    if (!h) return;
    var url;
    try { url = new URL(h, location.href); } catch (err) { return; }
    if (["http:", "https:", "file:"].indexOf(url.protocol) < 0) return;
    window.open(url.href, "_blank", "noopener");
  }
  window.addEventListener("keydown", function (e) {
    if (e.target && (e.target.tagName === "INPUT" || e.target.tagName === "SELECT")) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.key === "f" || e.key === "F") { fit(); fitZoom = cam.zoom; }
    else if (e.key === "Escape") setSelection([], false);
    else if (e.key === "+" || e.key === "=") zoomBy(1.5);
    else if (e.key === "-") zoomBy(1 / 1.5);
  });
  // from a fifth of the fitted view to thumbnails at 2.5x their atlas resolution
  function clampZoom(z) {
    var zmax = Math.max(fitZoom * 4, 2.5 * A.hiCell / (WORLD_SIZE * sizeScale * dpr));
    return Math.min(Math.max(z, fitZoom * 0.2), zmax);
  }
  function zoomBy(f) {
    cam.zoom = clampZoom(cam.zoom * f);
    requestDraw();
  }
  window.addEventListener("resize", function () { resize(); });

  // ------------------------------------------------------------------ panels
  $("i2v-title").textContent = D.title;
  $("i2v-count").textContent = N + " images" + (D.labels.length ? " \u00b7 " + D.labels.length + " labels" : "") +
    (D.clusters.length ? " \u00b7 " + D.clusters.filter(function (c) { return c[0] !== -1; }).length + " clusters" : "");
  var sel = $("i2v-colour");
  modes.forEach(function (m) {
    var o = el("option", null, m[1]);
    o.value = m[0];
    sel.appendChild(o);
  });
  sel.value = colourMode;
  sel.addEventListener("change", function () { colourMode = sel.value; focusGroup = null; buildLegend(); applyFilter(); });
  var searchBox = $("i2v-search"), searchTimer = 0;
  searchBox.addEventListener("input", function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(function () {
      searchTerms = searchBox.value.toLowerCase().split(",").map(function (s) { return s.trim(); }).filter(Boolean);
      applyFilter();
    }, 120);
  });
  $("i2v-scale").addEventListener("input", function (e) { sizeScale = Math.pow(2, parseFloat(e.target.value)); requestDraw(); });
  document.querySelectorAll(".i2v-mode").forEach(function (b) { b.addEventListener("click", function () { setMode(b.dataset.mode); }); });
  $("i2v-fit").addEventListener("click", function () { fit(); fitZoom = cam.zoom; });
  $("i2v-export-csv").addEventListener("click", exportCsv);
  $("i2v-export-json").addEventListener("click", exportJson);
  $("i2v-sel-clear").addEventListener("click", function () { setSelection([], false); });
  function buildLegend() {
    var ul = $("i2v-legend");
    ul.replaceChildren();
    var box = $("i2v-legend-box");
    if (colourMode === "none") { box.hidden = true; return; }
    box.hidden = false;
    $("i2v-legend-title").textContent = colourMode === "label" ? "Labels" : "Clusters";
    var n = colourMode === "label" ? D.labels.length : D.clusters.length;
    var counts = new Int32Array(n);
    for (var i = 0; i < N; i++) { var g = groupOf(i, colourMode); if (g >= 0) counts[g]++; }
    for (var g2 = 0; g2 < n; g2++) {
      (function (g) {
        var li = el("li");
        var sw = el("span", "i2v-swatch");
        var rgb = groupColour(g, colourMode);
        sw.style.background = "rgb(" + rgb.join(",") + ")";
        li.appendChild(sw);
        var nm = el("span", "i2v-name", groupName(g, colourMode));
        nm.title = groupName(g, colourMode);
        li.appendChild(nm);
        li.appendChild(el("span", "i2v-n", counts[g]));
        li.addEventListener("click", function () {
          var same = focusGroup && focusGroup.g === g && focusGroup.mode === colourMode;
          focusGroup = same ? null : { g: g, mode: colourMode };
          ul.querySelectorAll("li").forEach(function (x) { x.classList.remove("i2v-active"); });
          if (!same) li.classList.add("i2v-active");
          applyFilter();
        });
        ul.appendChild(li);
      })(g2);
    }
  }
  buildLegend();
  if (D.quality && D.quality.length) {
    $("i2v-quality-box").hidden = false;
    var qt = $("i2v-quality");
    D.quality.forEach(function (q) {
      var tr = el("tr");
      tr.appendChild(el("td", null, q[0].replace(/_/g, " ")));
      tr.appendChild(el("td", null, q[1] === null ? "n/a" : q[1].toFixed(3)));
      qt.appendChild(tr);
    });
  }
  if ($("i2v-legend-box").hidden && $("i2v-quality-box").hidden) $("i2v-side").hidden = true;
  setMode("pan");

  // ------------------------------------------------------------------ start
  T.rendererMade = performance.now();
  resize();
  fit();
  fitZoom = cam.zoom;
  recomputeStyle();
  var ready = new Promise(function (resolve) { firstFrame = resolve; requestDraw(); });
  var baseReady = new Promise(function (resolve, reject) {
    var jobs = [];
    for (var p = 0; p < A.basePages; p++) {
      (function (p) {
        jobs.push(loadBitmap("base", p).then(function (bmp) { baseBitmaps[p] = bmp; renderer.uploadBase(p, bmp); }));
      })(p);
    }
    Promise.all(jobs).then(function () {
      T.baseDecoded = performance.now();
      renderer.baseDone();
      baseLoaded = true;
      resolve();
      requestDraw();
    }).catch(function (err) { showError(String(err && err.message || err)); reject(err); });
  });

  var hook = {
    ready: ready,
    settled: function () { return baseReady.then(function () { return new Promise(function (r) { settleWaiters.push(r); requestDraw(); }); }); },
    renderer: renderer.name,
    count: N,
    pointToScreen: function (i) { var s = toScreen(i); return { x: s[0], y: s[1], size: pointPx() }; },
    screenToPoint: function (x, y) { return hitTest(x, y); },
    visibleCount: function () { return visibleSet(pointPx(), false); },
    highlighted: function () { var out = []; if (filterActive) for (var i = 0; i < N; i++) if (match[i]) out.push(i); return out; },
    selection: selectedList,
    hovered: function () { return tipIndex; },
    view: function () { return { x: cam.x, y: cam.y, zoom: cam.zoom }; },
    timings: function () { return Object.assign({ frames: frameLog.slice() }, T); }
  };
  Object.defineProperty(window, "illust2vecViewer", { value: Object.freeze(hook), writable: false, configurable: false, enumerable: true });
})();
