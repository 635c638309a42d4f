// samkit annotator page: files, image view (zoom / pan), point and box prompts, candidates,
// undo / redo, objects saved server-side, exports, and the video timeline (video.js).
// window.samkit.stats exposes the decode mode, the click-to-drawn latency and its parts (benchmarks):
// stats.last = {decode: the wasm run or the server round trip, server: the server's Server-Timing
// (queue, decode, encode ms), unpack: masks to pixels, canvas: the mask layer, render: the redraw,
// frame: render to the next animation frame}, all ms. A click's decode starts on pointerdown (the
// prompt is the press point, so the answer is the click's own); ?speculate=0 waits for pointerup.
// Latencies run from the pointer events' own timeStamp (a busy main thread may handle them late).
// Where decodes run (?decode=auto, the default): when the image opens, one warm decode in the page
// (wasm) and two on the server are timed and the faster path is kept (a local server on a few
// cores usually wins; a remote or shared one loses); ?decode=browser / ?decode=server force one.
// stats.choice = {browser, server} holds the timed ms.
import { decodeBits, decodeRle, encodeMask } from "./rle.js";
import * as browserDecoder from "./decoder.js";
import * as brush from "./brush.js";
import { Video, bindPage } from "./video.js";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const COLORS = ["#ff4d4d", "#4da6ff", "#5ce65c", "#ffb84d", "#c266ff", "#4dffe1", "#ff66c4", "#d9d94d"];

export const S = {
  folder: "", path: null, img: null, W: 0, H: 0, view: { scale: 1, tx: 0, ty: 0 }, tool: "point",
  points: [], labels: [], box: null, candidates: [], choice: 0, objects: [], revision: 0, selected: null,
  undo: [], redo: [], info: null, emb: null, seq: 0, drag: null, space: false, health: null, video: null, spec: null,
};
const stats = { mode: "server", decoder: null, numThreads: null, decodes: 0, lastDecodeMs: null, lastClickToDrawnMs: null,
                lastUpToDrawnMs: null, maskPixels: 0, errors: 0, speculated: 0, last: null };
const QUERY = new URLSearchParams(location.search);
const SPECULATE = QUERY.get("speculate") !== "0";
const TRANSPORT = QUERY.get("transport") === "rle" ? "rle" : "bits";  // ?transport=rle: COCO RLE (benchmarks)
const DECODE = ["browser", "server"].includes(QUERY.get("decode")) ? QUERY.get("decode") : "auto";
window.samkit = { S, stats };

// ------------------------------------------------------------------ helpers
export async function api(method, url, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  const r = await fetch(url, opts);
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) { const e = new Error(data?.error || r.statusText); e.status = r.status; throw e; }
  return data;
}

export function status(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
  if (error) stats.errors++;
}

function maskBox(mask, w, h) {
  // [x0, y0, x1, y1] (exclusive ends) of the set pixels of an h x w mask; [0, 0, 0, 0] when empty
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) {
    const row = y * w;
    let first = -1, last = -1;
    for (let x = 0; x < w; x++) if (mask[row + x]) { if (first < 0) first = x; last = x; }
    if (first >= 0) { if (y < y0) y0 = y; y1 = y; if (first < x0) x0 = first; if (last > x1) x1 = last; }
  }
  return y1 < 0 ? [0, 0, 0, 0] : [x0, y0, x1 + 1, y1 + 1];
}

function maskCanvas(mask, w, h, color, alpha = 0.5, box = null) {
  // the mask's box only, as a canvas drawn at (c._x, c._y) in image pixels (render)
  const [x0, y0, x1, y1] = box || maskBox(mask, w, h);
  const c = document.createElement("canvas");
  c.width = Math.max(1, x1 - x0); c.height = Math.max(1, y1 - y0); c._x = x0; c._y = y0;
  if (x1 <= x0) return c;
  const g = c.getContext("2d");
  const im = g.createImageData(c.width, c.height);
  const px = new Uint32Array(im.data.buffer);  // RGBA bytes as one little-endian word per pixel
  const r = parseInt(color.slice(1, 3), 16), gr = parseInt(color.slice(3, 5), 16), b = parseInt(color.slice(5, 7), 16);
  const word = ((Math.round(alpha * 255) << 24) | (b << 16) | (gr << 8) | r) >>> 0;
  for (let y = y0, k = 0; y < y1; y++) {
    const row = y * w;
    for (let x = x0; x < x1; x++, k++) if (mask[row + x]) px[k] = word;
  }
  g.putImageData(im, 0, 0);
  return c;
}

function candidateCanvas(c) {
  if (!c._canvas) c._canvas = maskCanvas(c.mask, S.W, S.H, c.color, 0.55, c.box);
  return c._canvas;
}
export { maskCanvas, COLORS };
bindPage({ S, api, status, render, fit, drawn, maskCanvas, COLORS, pushHistory });

// ------------------------------------------------------------------ view
function resize() {
  const r = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(r.width));
  canvas.height = Math.max(1, Math.round(r.height));
  render();
}

export function fit() {
  if (!S.W) return;
  const s = Math.min(canvas.width / S.W, canvas.height / S.H) * 0.95;
  S.view = { scale: s, tx: (canvas.width - S.W * s) / 2, ty: (canvas.height - S.H * s) / 2 };
  render();
}

function toImage(ev) {
  const r = canvas.getBoundingClientRect();
  const cx = (ev.clientX - r.left) * canvas.width / r.width, cy = (ev.clientY - r.top) * canvas.height / r.height;
  return [(cx - S.view.tx) / S.view.scale, (cy - S.view.ty) / S.view.scale];
}

export function render() {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!S.img) return;
  const { scale, tx, ty } = S.view;
  ctx.setTransform(scale, 0, 0, scale, tx, ty);
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.drawImage(S.img, 0, 0);
  const layers = S.video ? S.video.layers() : S.objects.map((o) => o._canvas);
  for (const c of layers) if (c) ctx.drawImage(c, c._x || 0, c._y || 0);
  const cand = S.candidates[S.choice];
  if (cand) { const c = candidateCanvas(cand); ctx.drawImage(c, c._x, c._y); }
  const box = S.drag?.kind === "box" ? S.drag.box : S.box;
  if (box) {
    ctx.lineWidth = 2 / scale; ctx.strokeStyle = "#ffd400";
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
  S.points.forEach(([x, y], i) => {
    ctx.beginPath(); ctx.arc(x, y, 5 / scale, 0, 2 * Math.PI);
    ctx.fillStyle = S.labels[i] ? "#2ecc40" : "#ff4136"; ctx.fill();
    ctx.lineWidth = 1.5 / scale; ctx.strokeStyle = "#fff"; ctx.stroke();
  });
  canvas.dataset.maskPixels = String(stats.maskPixels);
  canvas.dataset.objects = String(S.video ? S.video.objectCount() : S.objects.length);
}

// ------------------------------------------------------------------ prompts and decoding
function snapshot() {
  return { points: S.points.map((p) => p.slice()), labels: S.labels.slice(), box: S.box && S.box.slice(),
           objects: S.objects.slice() };
}

export function pushHistory() { S.undo.push(snapshot()); S.redo = []; }

async function restore(snap) {
  const objectsChanged = snap.objects.length !== S.objects.length || snap.objects.some((o, i) => o !== S.objects[i]);
  Object.assign(S, { points: snap.points, labels: snap.labels, box: snap.box, objects: snap.objects });
  if (objectsChanged) await saveObjects();
  await decodeNow(performance.now());
}

async function undo() { if (S.undo.length) { S.redo.push(snapshot()); await restore(S.undo.pop()); } }
async function redo() { if (S.redo.length) { S.undo.push(snapshot()); await restore(S.redo.pop()); } }

function currentPrompt(extra = null) {
  const p = { path: S.path, points: S.points.slice(), labels: S.labels.slice(), box: S.box, multimask: $("multimask").checked };
  if (extra) { p.points.push(extra.point); p.labels.push(extra.label); }
  return p;
}

async function decodeServer(p) {
  const t = performance.now();
  const r = await fetch("/api/image/decode", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ path: p.path, points: p.points, labels: p.labels, box: p.box, multimask: p.multimask,
                           polygons: false, mask_format: TRANSPORT }) });
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) { const e = new Error(data?.error || r.statusText); e.status = r.status; throw e; }
  const t1 = performance.now();
  const server = {};
  for (const part of (r.headers.get("server-timing") || "").split(",")) {
    const [k, v] = part.trim().split(";dur=");
    if (v !== undefined) server[k] = Number(v);
  }
  const cands = data.masks.map((m) => (m.bits ? { ...decodeBits(m.bits, data.height, data.width), score: m.score }
    : { mask: decodeRle(m.rle), box: m.box.map(Math.round), pixels: m.area, score: m.score }));
  return { cands, mode: "server", last: { decode: t1 - t, server, unpack: performance.now() - t1 } };
}

async function decodeBrowser(p) {
  const t = performance.now();
  const cands = await browserDecoder.decode(S.info, S.emb, p.points, p.labels, p.box, p.multimask);
  return { cands, mode: "browser", last: { decode: performance.now() - t, server: null, unpack: 0 } };
}

function startDecode(p) {
  const job = S.emb ? decodeBrowser(p) : decodeServer(p);
  job.catch(() => {});  // a dropped speculation's error is nobody's
  return job;
}

function speculate(d) {
  // pointerdown of a click: decode the prompt the click will make (taken back by pointerup if not)
  S.spec = null;
  if (!SPECULATE || S.video || !S.path || d.kind !== "point" || d.x0 < 0 || d.y0 < 0 || d.x0 > S.W || d.y0 > S.H) return;
  const p = currentPrompt({ point: [Math.round(d.x0 * 10) / 10, Math.round(d.y0 * 10) / 10], label: d.neg ? 0 : 1 });
  S.spec = { key: JSON.stringify(p), job: startDecode(p) };
}

async function decodeNow(t0) {
  if (S.video) return S.video.prompt(t0);
  const seq = ++S.seq;
  const spec = S.spec;
  S.spec = null;
  if (!S.points.length && !S.box) { S.candidates = []; stats.maskPixels = 0; showCandidates(); render(); return; }
  const p = currentPrompt();
  let result;
  try {
    const reuse = spec && spec.key === JSON.stringify(p);
    if (reuse) stats.speculated++;
    result = await (reuse ? spec.job : startDecode(p));
  } catch (e) { status(e.message, true); return; }
  if (seq !== S.seq) return;  // a newer prompt is on its way
  const { cands, mode, last } = result;
  stats.mode = mode;
  stats.lastDecodeMs = last.decode;
  stats.decodes++;
  const color = COLORS[(S.objects.length) % COLORS.length];
  for (const c of cands) { c.color = color; c._canvas = null; }
  S.candidates = cands;
  S.choice = cands.reduce((best, c, i) => (c.score > cands[best].score ? i : best), 0);
  const t = performance.now();
  candidateCanvas(cands[S.choice]);  // the others when chosen
  last.canvas = performance.now() - t;
  showCandidates();
  drawn(t0, last);
}

export function drawn(t0, last = null) {
  const cand = S.candidates[S.choice];
  stats.maskPixels = S.video ? S.video.maskPixels() : cand ? (cand.pixels ?? cand.mask.reduce((a, v) => a + v, 0)) : 0;
  const t = performance.now();
  render();
  const tUp = S.upAt;
  S.upAt = null;
  if (last) last.render = performance.now() - t;
  requestAnimationFrame(() => {
    const now = performance.now();
    stats.lastClickToDrawnMs = now - t0;
    stats.lastUpToDrawnMs = tUp != null ? now - tUp : null;
    if (last) { last.frame = now - t - (last.render || 0); stats.last = last; }
    canvas.dataset.drawn = String(stats.decodes);
  });
}

function showCandidates() {
  const el = $("candidates");
  el.innerHTML = "";
  S.candidates.forEach((c, i) => {
    const b = document.createElement("button");
    b.textContent = `${i + 1}: ${c.score.toFixed(2)}`;
    b.className = i === S.choice ? "active" : "";
    b.title = `Candidate ${i + 1} (key ${i + 1})`;
    b.onclick = () => choose(i);
    el.appendChild(b);
  });
}

function choose(i) { if (i < S.candidates.length) { S.choice = i; S.upAt = null; showCandidates(); drawn(performance.now()); } }

// ------------------------------------------------------------------ objects (saved server-side)
function objectCanvas(o) {
  o._canvas = maskCanvas(decodeRle(o.rle), S.W, S.H, o.color || COLORS[o.id % COLORS.length], 0.45);
  return o;
}

async function accept() {
  if (S.video) return S.video.nextObject();
  const cand = S.candidates[S.choice];
  if (!cand) { status("nothing to add: click on the image first"); return; }
  pushHistory();
  const id = S.objects.reduce((m, o) => Math.max(m, o.id), 0) + 1;
  const o = objectCanvas({ id, label: $("label").value.trim() || "object", rle: encodeMask(cand.mask, S.H, S.W),
                           score: cand.score, color: COLORS[(id - 1) % COLORS.length] });
  S.objects = S.objects.concat([o]);
  S.points = []; S.labels = []; S.box = null; S.candidates = [];
  showCandidates();
  await saveObjects();
  render();
}

export async function saveObjects() {
  const objects = S.objects.map(({ id, label, rle, score, color }) => ({ id, label, rle, score, color }));
  try {
    const doc = await api("PUT", "/api/annotations", { path: S.path, revision: S.revision, objects });
    S.revision = doc.revision;
    status(`saved ${objects.length} object(s) (revision ${doc.revision})`);
  } catch (e) {
    status(e.message, true);
    if (e.status === 409) await loadObjects();
  }
  listObjects();
}

async function loadObjects() {
  const doc = await api("GET", "/api/annotations?path=" + encodeURIComponent(S.path));
  S.revision = doc.revision;
  S.objects = doc.objects.map(objectCanvas);
  listObjects();
}

function listObjects() {
  const ul = $("objects");
  ul.innerHTML = "";
  for (const o of S.objects) {
    const li = document.createElement("li");
    li.className = S.selected === o.id ? "selected" : "";
    const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = o.color || "#888";
    const inp = document.createElement("input"); inp.value = o.label;
    inp.onchange = async () => {
      pushHistory();
      S.objects = S.objects.map((x) => (x.id === o.id ? { ...x, label: inp.value.trim() || x.label } : x));
      await saveObjects();
    };
    const del = document.createElement("button"); del.textContent = "x"; del.title = "Delete (Del)";
    del.onclick = () => removeObject(o.id);
    li.onclick = () => { S.selected = o.id; listObjects(); };
    li.append(sw, inp, del);
    ul.appendChild(li);
  }
  render();
}

async function removeObject(id) {
  pushHistory();
  S.objects = S.objects.filter((o) => o.id !== id);
  await saveObjects();
}

// ------------------------------------------------------------------ files
async function listFolder(folder) {
  const data = await api("GET", "/api/files?path=" + encodeURIComponent(folder));
  S.folder = data.path;
  $("folder-path").textContent = "/" + data.path;
  const ul = $("file-list");
  ul.innerHTML = "";
  const add = (text, cls, onclick, title) => {
    const li = document.createElement("li");
    li.textContent = text; li.className = cls; li.onclick = onclick; li.title = title || text;
    ul.appendChild(li); return li;
  };
  if (data.path) add("..", "dir", () => listFolder(data.path.split("/").slice(0, -1).join("/")));
  for (const e of data.examples || []) add(e.name + " (example)", "example", () => openImage(e.path), e.path);
  for (const d of data.dirs) {
    add(d.name, "dir", () => listFolder(d.path));
    if (d.frames > 0) add(`${d.name} as video (${d.frames} frames)`, "video", () => openVideo(d.path), d.path);
  }
  for (const v of data.videos) add(v.name, "video", () => openVideo(v.path), v.path);
  for (const i of data.images) add(i.name, "image", () => openImage(i.path), i.path);
}

function loadImg(url) {
  return new Promise((ok, bad) => { const im = new Image(); im.onload = () => ok(im); im.onerror = () => bad(new Error("the image did not load")); im.src = url; });
}

async function browserIsFaster(path) {
  // one warm page decode against the better of two server decodes, of the same centre click
  const p = { path, points: [[S.W / 2, S.H / 2]], labels: [1], box: null, multimask: true };
  const timed = async (fn) => { const t = performance.now(); await fn(p); return performance.now() - t; };
  const browser = await timed(decodeBrowser);
  let server = Infinity;
  for (let i = 0; i < 2; i++) server = Math.min(server, await timed(decodeServer));
  stats.choice = { browser, server };
  return browser <= server;
}

async function openImage(path) {
  if (S.video) { S.video.close(); S.video = null; $("video-bar").hidden = true; }
  Object.assign(S, { path, points: [], labels: [], box: null, candidates: [], undo: [], redo: [], emb: null, info: null });
  status("loading " + path + " ...");
  S.img = await loadImg("/api/image/file?path=" + encodeURIComponent(path));
  S.W = S.img.naturalWidth; S.H = S.img.naturalHeight;
  fit();
  await loadObjects();
  const enc = await api("POST", "/api/image/encode", { path });
  if (enc.browser_decoder && DECODE !== "server") {
    try {
      S.info = enc.browser_decoder;
      await browserDecoder.loadDecoder(S.info);
      S.emb = await browserDecoder.loadEmbedding(path, S.info);
      await browserDecoder.warmUp(S.info, S.emb);
      stats.mode = "browser";
      stats.decoder = S.emb.first ? "fast" : "reference";
      stats.numThreads = browserDecoder.numThreads();
      if (DECODE === "auto" && !(await browserIsFaster(path))) { S.emb = null; stats.mode = "server"; }
    } catch (e) { S.emb = null; stats.mode = "server"; status("browser decoder unavailable, decoding on the server: " + e.message); }
  } else stats.mode = "server";
  canvas.dataset.ready = path;
  canvas.dataset.mode = stats.mode;
  status(`${path}: ${S.W} x ${S.H}, decoding in the ${stats.mode}`);
}

async function openVideo(path) {
  if (S.video) S.video.close();
  S.video = new Video(path);
  Object.assign(S, { path, points: [], labels: [], box: null, candidates: [], objects: [], undo: [], redo: [], emb: null });
  listObjects();
  await S.video.open();
}

async function upload(file) {
  const r = await fetch("/api/upload?name=" + encodeURIComponent(file.name), { method: "PUT", body: file });
  const data = await r.json();
  if (!r.ok) { status(data.error, true); return; }
  await listFolder("uploads");
  await openImage(data.path);
}

async function exportAnnotations() {
  const format = $("export-format").value;
  const body = $("export-scope").value === "folder" ? { format, folder: S.folder } : { format, path: S.path };
  try {
    const r = await api("POST", "/api/export", body);
    const el = $("exported");
    el.innerHTML = "";
    for (const f of r.files) {
      const a = document.createElement("a");
      a.href = "/api/download?path=" + encodeURIComponent(f); a.textContent = f; a.download = f.split("/").pop();
      el.appendChild(a);
    }
    status(`exported ${r.images} image(s) as ${format}`);
  } catch (e) { status(e.message, true); }
}

// ------------------------------------------------------------------ input
canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("pointerdown", (ev) => {
  if (!S.img) return;
  canvas.setPointerCapture(ev.pointerId);
  const [x, y] = toImage(ev);
  if (ev.button === 1 || S.space) { S.drag = { kind: "pan", x: ev.clientX, y: ev.clientY, tx: S.view.tx, ty: S.view.ty }; return; }
  if (S.tool === "brush") { startBrush(x, y, ev.shiftKey || ev.button === 2); return; }
  S.drag = { kind: S.tool === "box" ? "box" : "point", x0: x, y0: y, t0: ev.timeStamp, neg: ev.shiftKey || ev.button === 2, box: null };
  speculate(S.drag);
});

const BRUSH_PX = 10;  // brush radius on screen

function startBrush(x, y, erase) {
  if (S.video) { status("the brush edits image masks; on a video, prompt with points or a box"); return; }
  pushHistory();  // undo decodes the prompts again: the mask before the stroke
  if (!S.candidates.length) {  // painting from nothing: an empty mask to paint into
    S.candidates = [{ mask: new Uint8Array(S.W * S.H), box: [0, 0, 0, 0], pixels: 0, score: 1,
                      color: COLORS[S.objects.length % COLORS.length] }];
    S.choice = 0; showCandidates();
  }
  S.drag = { kind: "brush", x, y, value: erase ? 0 : 1 };
  paintTo(x, y);
}

function paintTo(x, y) {
  const d = S.drag, cand = S.candidates[S.choice];
  brush.stroke(cand, d.x, d.y, x, y, BRUSH_PX / S.view.scale, d.value, S.W, S.H);
  d.x = x; d.y = y;
  cand._canvas = null;
  stats.maskPixels = cand.pixels;
  render();
}
canvas.addEventListener("pointermove", (ev) => {
  const d = S.drag;
  if (!d) return;
  if (d.kind === "pan") { S.view.tx = d.tx + (ev.clientX - d.x); S.view.ty = d.ty + (ev.clientY - d.y); render(); return; }
  if (d.kind === "brush") { paintTo(...toImage(ev)); return; }
  if (d.kind === "box") {
    const [x, y] = toImage(ev);
    d.box = [Math.min(d.x0, x), Math.min(d.y0, y), Math.max(d.x0, x), Math.max(d.y0, y)].map((v, i) => Math.max(0, Math.min(v, i % 2 ? S.H : S.W)));
    render();
  }
});
canvas.addEventListener("pointerup", async (ev) => {
  const d = S.drag;
  S.drag = null;
  S.upAt = ev.timeStamp;  // the event's own time: a busy main thread may handle it late
  if (!d || d.kind === "pan") return;
  if (d.kind === "brush") {
    const cand = S.candidates[S.choice];
    brush.fitBox(cand, S.W);
    cand._canvas = null;
    render();
    return;
  }
  const t0 = d.t0;
  if (d.kind === "box") {
    if (!d.box || d.box[2] - d.box[0] < 2 || d.box[3] - d.box[1] < 2) { render(); return; }
    pushHistory(); S.box = d.box.map(Math.round);
  } else {
    if (d.x0 < 0 || d.y0 < 0 || d.x0 > S.W || d.y0 > S.H) return;
    pushHistory(); S.points.push([Math.round(d.x0 * 10) / 10, Math.round(d.y0 * 10) / 10]); S.labels.push(d.neg ? 0 : 1);
  }
  render();
  await decodeNow(t0);
});
canvas.addEventListener("wheel", (ev) => {
  ev.preventDefault();
  const r = canvas.getBoundingClientRect();
  const cx = (ev.clientX - r.left) * canvas.width / r.width, cy = (ev.clientY - r.top) * canvas.height / r.height;
  const k = Math.exp(-ev.deltaY * 0.0015);
  S.view.tx = cx - (cx - S.view.tx) * k; S.view.ty = cy - (cy - S.view.ty) * k; S.view.scale *= k;
  render();
}, { passive: false });

function setTool(t) { S.tool = t; for (const k of ["point", "box", "brush"]) $("tool-" + k).classList.toggle("active", t === k); }

function clearPrompt() { if (S.points.length || S.box) { pushHistory(); S.points = []; S.labels = []; S.box = null; decodeNow(performance.now()); } }

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" && ev.target.type !== "checkbox" && ev.target.type !== "range") return;
  const k = ev.key.toLowerCase();
  if (ev.key === " ") { S.space = true; ev.preventDefault(); return; }
  if ((ev.ctrlKey || ev.metaKey) && k === "z") { ev.preventDefault(); ev.shiftKey ? redo() : undo(); return; }
  if ((ev.ctrlKey || ev.metaKey) && k === "y") { ev.preventDefault(); redo(); return; }
  if (k === "p") setTool("point");
  else if (k === "b") setTool("box");
  else if (k === "r") setTool("brush");
  else if (k === "m") { $("multimask").checked = !$("multimask").checked; decodeNow(performance.now()); }
  else if (k === "f") fit();
  else if (["1", "2", "3"].includes(k)) choose(Number(k) - 1);
  else if (ev.key === "Enter") accept();
  else if (ev.key === "Escape") clearPrompt();
  else if ((ev.key === "Delete" || ev.key === "Backspace") && S.selected != null) removeObject(S.selected);
  else if (S.video && (k === "," || k === ".")) S.video.step(k === "." ? 1 : -1);
});
document.addEventListener("keyup", (ev) => { if (ev.key === " ") S.space = false; });

$("tool-point").onclick = () => setTool("point");
$("tool-box").onclick = () => setTool("box");
$("tool-brush").onclick = () => setTool("brush");
$("multimask").onchange = () => decodeNow(performance.now());
$("undo").onclick = undo;
$("redo").onclick = redo;
$("accept").onclick = accept;
$("clear").onclick = clearPrompt;
$("fit").onclick = fit;
$("export").onclick = exportAnnotations;
$("upload").onchange = (e) => e.target.files[0] && upload(e.target.files[0]);
window.addEventListener("resize", resize);

(async () => {
  resize();
  try {
    S.health = await api("GET", "/api/health");
    $("model").textContent = `${S.health.model} (${S.health.kind}${S.health.browser_decoder ? ", decoder in the page" : ""})`;
    await listFolder("");
    document.body.dataset.ready = "1";
  } catch (e) { status(e.message, true); }
})();
