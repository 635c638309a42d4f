// Video mode of the annotator: a tracking session (POST /api/video/sessions), prompts on any
// frame, propagation forward / backward streamed as NDJSON (one line per frame, RLE per object)
// with a progress bar, and a timeline that shows the tracked masks of every frame.
import { decodeRle } from "./rle.js";

// The page's state and drawing functions, handed over by app.js (bindPage) so that this module
// does not import app.js back (imports run one way: app.js -> video.js).
let S, api, status, render, fit, drawn, maskCanvas, COLORS, pushHistory;
export function bindPage(page) {
  ({ S, api, status, render, fit, drawn, maskCanvas, COLORS, pushHistory } = page);
}

const $ = (id) => document.getElementById(id);

export class Video {
  constructor(path) {
    this.path = path; this.id = null; this.frame = 0; this.n = 0; this.objId = 1;
    this.results = new Map();  // frame -> [{id, label, rle, score, _canvas}]
  }

  async open() {
    status("opening " + this.path + " ...");
    const info = await api("POST", "/api/video/sessions", { path: this.path });
    Object.assign(this, { id: info.id, n: info.num_frames });
    S.W = info.width; S.H = info.height;
    const t = $("timeline");
    t.max = String(this.n - 1); t.value = "0";
    t.oninput = () => this.show(Number(t.value));
    $("prev-frame").onclick = () => this.step(-1);
    $("next-frame").onclick = () => this.step(1);
    $("propagate").onclick = () => this.propagate(false);
    $("propagate-back").onclick = () => this.propagate(true);
    $("video-bar").hidden = false;
    const saved = await api("GET", "/api/annotations?path=" + encodeURIComponent(this.path));
    for (const [t, objects] of Object.entries(saved.frames || {})) this.keep(Number(t), objects);
    this.objId = 1 + Math.max(0, ...[...this.results.values()].flat().map((o) => o.id));
    await this.show(0);
    fit();
    document.getElementById("canvas").dataset.ready = this.path;
    status(`${this.path}: ${this.n} frames; click to prompt object ${this.objId}, Enter for a new object`);
  }

  async show(t) {
    this.frame = Math.max(0, Math.min(this.n - 1, t));
    $("timeline").value = String(this.frame);
    $("frame-label").textContent = `${this.frame + 1} / ${this.n}`;
    const im = new Image();
    await new Promise((ok) => { im.onload = ok; im.onerror = ok; im.src = `/api/video/sessions/${this.id}/frames/${this.frame}`; });
    S.img = im;
    S.points = []; S.labels = []; S.box = null;
    render();
  }

  step(d) { return this.show(this.frame + d); }

  keep(t, objects) {
    this.results.set(t, objects.map((o) => {
      const m = decodeRle(o.rle);
      return { ...o, _pixels: m.reduce((a, v) => a + v, 0), _canvas: maskCanvas(m, S.W, S.H, COLORS[(o.id - 1) % COLORS.length], 0.5) };
    }));
  }

  layers() { return (this.results.get(this.frame) || []).map((o) => o._canvas); }

  maskPixels() { return (this.results.get(this.frame) || []).reduce((a, o) => a + o._pixels, 0); }

  objectCount() { return (this.results.get(this.frame) || []).length; }

  async prompt(t0) {
    if (!S.points.length && !S.box) { render(); return; }
    try {
      const r = await api("POST", `/api/video/sessions/${this.id}/prompt`, {
        frame: this.frame, obj_id: this.objId, points: S.points, labels: S.labels, box: S.box,
        label: document.getElementById("label").value.trim() || undefined });
      this.keep(r.frame, r.objects);
      drawn(t0);
    } catch (e) { status(e.message, true); }
  }

  nextObject() { this.objId += 1; pushHistory(); S.points = []; S.labels = []; S.box = null; render(); status(`now prompting object ${this.objId}`); }

  async propagate(reverse) {
    const bar = $("progress");
    bar.value = 0;
    const r = await fetch(`/api/video/sessions/${this.id}/propagate`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ start: this.frame, reverse }) });
    if (!r.ok) { status((await r.json()).error, true); return; }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "", frames = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = JSON.parse(buf.slice(0, nl)); buf = buf.slice(nl + 1);
        if (line.error) { status(line.error, true); return; }
        if (line.end) { status(`propagated ${line.frames} frame(s); saved (revision ${line.revision})`); document.getElementById("canvas").dataset.propagated = String(line.frames); continue; }
        this.keep(line.frame, line.objects); frames++;
        bar.max = line.total; bar.value = line.done;
        if (line.frame === this.frame) render();
      }
    }
    render();
  }

  close() { if (this.id) fetch(`/api/video/sessions/${this.id}`, { method: "DELETE" }); }
}
