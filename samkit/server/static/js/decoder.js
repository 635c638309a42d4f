// The prompt decoder in the page: onnxruntime-web (vendored under /vendor/ort/, no CDN) runs the
// exported decoder on the image embedding the server computed once (GET /api/image/embedding):
// the fast pair (samkit.export.fast_decoder) when the export has it, else the reference decoder
// (segment-anything ONNX contract, EfficientSAM's, or samkit's SAM 2 layout). Returns the same
// candidates as POST /api/image/decode: masks (Uint8Array h * w), scores, with each mask's box
// [x0, y0, x1, y1] (exclusive ends) and pixel count. Runs one at a time (a click's decode may start
// on pointerdown while the last one still runs); the prompt-independent inputs are made once per
// image; with non-negative taps (bilinear) and threshold 0 the upsampling covers only the box of
// the positive low-res logits (options.crop; the same pixels as the whole image: a pixel outside
// gets only taps <= 0, so its sum is <= 0).

export const options = { crop: true };
let running = Promise.resolve();

let ortModule = null;
const sessions = {};  // graph id -> Promise<InferenceSession>

async function ort() {
  if (!ortModule) {
    ortModule = await import("/vendor/ort/ort.wasm.min.mjs");
    ortModule.env.wasm.wasmPaths = "/vendor/ort/";
    // threads need SharedArrayBuffer, which the server's COOP / COEP headers allow (crossOriginIsolated)
    ortModule.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  }
  return ortModule;
}

export function numThreads() { return ortModule ? ortModule.env.wasm.numThreads : null; }

function session(graph) {
  if (!sessions[graph]) {
    sessions[graph] = (async () => {
      const o = await ort();
      const r = await fetch("/api/image/decoder?graph=" + graph);
      if (!r.ok) throw new Error((await r.json()).error);
      return o.InferenceSession.create(new Uint8Array(await r.arrayBuffer()), { executionProviders: ["wasm"] });
    })();
  }
  return sessions[graph];
}

// The fast pair (decoder_image once per image, prompt_decoder_fast per click) when the export has
// it; the page's ?decoder=reference keeps the reference decoder (benchmarks compare the two).
export function usesFast(info) {
  return !!(info && info.fast) && new URLSearchParams(location.search).get("decoder") !== "reference";
}

export async function loadDecoder(info) {
  if (usesFast(info)) await Promise.all([session("decoder_image"), session("prompt_decoder_fast")]);
  else await session("prompt_decoder");
}

export async function loadEmbedding(path, info) {
  const r = await fetch("/api/image/embedding?path=" + encodeURIComponent(path));
  if (!r.ok) throw new Error((await r.json()).error);
  const buf = await r.arrayBuffer();
  const n = new DataView(buf).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  const base = 4 + n;
  const o = await ort();
  const tensors = {};
  for (const t of header.tensors) {
    const data = new Float32Array(buf.slice(base + t.offset, base + t.offset + t.bytes));
    tensors[t.name] = new o.Tensor("float32", data, t.shape);
  }
  let first = null;  // the first block's image-side projections, once per image
  if (usesFast(info)) {
    const emb = tensors[info.layout === "sam2" ? "image_embed" : "image_embeddings"];
    first = await (await session("decoder_image")).run({ image_embeddings: emb });
  }
  return { header, tensors, first };
}

function promptArrays(info, emb, points, labels, box) {
  const { width: W, height: H } = emb.header;
  const [nh, nw] = emb.header.input_hw;
  const sx = nw / W, sy = nh / H;
  let clicks = points.map(([x, y], i) => [x * sx, y * sy, labels[i]]);
  let corners = box ? [[box[0] * sx, box[1] * sy, 2], [box[2] * sx, box[3] * sy, 3]] : [];
  let all = info.layout === "sam2" ? corners.concat(clicks) : clicks.concat(corners);
  if (info.layout === "sam" && !box) all.push([0, 0, -1]);
  const coords = new Float32Array(all.length * 2), labs = new Float32Array(all.length);
  all.forEach(([x, y, l], i) => { coords[2 * i] = x; coords[2 * i + 1] = y; labs[i] = l; });
  return { coords, labs, n: all.length };
}

// ---- upsampling as separable taps: out[y][x] = sum rows(y) x cols(x) of the low-res logits
// linear(out, src): torch's bilinear (align_corners = false) from src to out samples; cubic: its
// bicubic (A = -0.75, edge samples repeated); compose(outer, inner): outer applied after inner.
function linear(out, src) {
  const idx = new Int32Array(out * 2), wt = new Float64Array(out * 2), scale = src / out;
  for (let o = 0; o < out; o++) {
    const real = Math.max((o + 0.5) * scale - 0.5, 0);
    const i0 = Math.min(Math.floor(real), src - 1), l = Math.min(Math.max(real - i0, 0), 1);
    idx[2 * o] = i0; wt[2 * o] = 1 - l; idx[2 * o + 1] = Math.min(i0 + 1, src - 1); wt[2 * o + 1] = l;
  }
  return { k: 2, idx, wt };
}

function cubic(out, src) {
  const A = -0.75, idx = new Int32Array(out * 4), wt = new Float64Array(out * 4), scale = src / out;
  const near = (x) => ((A + 2) * x - (A + 3)) * x * x + 1, far = (x) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  for (let o = 0; o < out; o++) {
    const real = (o + 0.5) * scale - 0.5, i = Math.floor(real), t = real - i;
    const w = [far(t + 1), near(t), near(1 - t), far(2 - t)];
    for (let j = 0; j < 4; j++) { idx[4 * o + j] = Math.min(Math.max(i - 1 + j, 0), src - 1); wt[4 * o + j] = w[j]; }
  }
  return { k: 4, idx, wt };
}

function compose(outer, inner) {
  const n = outer.idx.length / outer.k, k = outer.k * inner.k;
  const idx = new Int32Array(n * k), wt = new Float64Array(n * k);
  for (let o = 0; o < n; o++) {
    for (let a = 0; a < outer.k; a++) {
      const m = outer.idx[o * outer.k + a], w = outer.wt[o * outer.k + a];
      for (let b = 0; b < inner.k; b++) {
        idx[o * k + a * inner.k + b] = inner.idx[m * inner.k + b];
        wt[o * k + a * inner.k + b] = w * inner.wt[m * inner.k + b];
      }
    }
  }
  return { k, idx, wt };
}

// The layout's postprocessing of low-res logits (sh x sw) to the H x W image, as taps per axis:
// sam: bilinear to the S x S frame, crop to the resized image (nh x nw), bilinear to H x W
// (segment-anything's postprocess_masks); sam2: bilinear straight to H x W; efficient_sam: bicubic.
function postTaps(info, emb, sh, sw) {
  const { width: W, height: H } = emb.header;
  if (info.layout === "sam") {
    const S = info.input_size, [nh, nw] = emb.header.input_hw;
    return [compose(linear(H, nh), linear(S, sh)), compose(linear(W, nw), linear(S, sw))];
  }
  if (info.layout === "efficient_sam") return [cubic(H, sh), cubic(W, sw)];
  return [linear(H, sh), linear(W, sw)];
}

function span(taps, n, lo, hi) {
  // [first, last] output index with a tap inside [lo, hi] (taps grow with the index); null if none
  let first = -1, last = -1;
  for (let o = 0; o < n; o++) {
    for (let j = 0; j < taps.k; j++) {
      const i = taps.idx[o * taps.k + j];
      if (i >= lo && i <= hi) { if (first < 0) first = o; last = o; break; }
    }
  }
  return first < 0 ? null : [first, last];
}

function positiveBox(src, sh, sw, thr) {
  // [r0, r1, c0, c1] of the low-res logits above thr (inclusive), or null
  let r0 = sh, r1 = -1, c0 = sw, c1 = -1;
  for (let i = 0; i < sh; i++) {
    for (let j = 0; j < sw; j++) {
      if (src[i * sw + j] > thr) { if (i < r0) r0 = i; r1 = i; if (j < c0) c0 = j; if (j > c1) c1 = j; }
    }
  }
  return r1 < 0 ? null : [r0, r1, c0, c1];
}

let scratch = new Float32Array(0);

function resample(src, sh, sw, rows, cols, H, W, thr) {
  // low-res logits sh x sw -> {mask: Uint8Array H x W (1 where the upsampled logit > thr), box, pixels}
  const out = new Uint8Array(H * W);
  let ys = [0, H - 1], xs = [0, W - 1], rlo = 0, rhi = sh - 1;
  if (options.crop && thr === 0 && rows.wt.every((v) => v >= 0) && cols.wt.every((v) => v >= 0)) {
    const pos = positiveBox(src, sh, sw, thr);
    ys = pos && span(rows, H, pos[0], pos[1]);
    xs = pos && span(cols, W, pos[2], pos[3]);
    if (!ys || !xs) return { mask: out, box: [0, 0, 0, 0], pixels: 0 };
    rlo = sh; rhi = -1;  // the low-res rows the output rows read
    for (let y = ys[0]; y <= ys[1]; y++) {
      for (let r = 0; r < rows.k; r++) { const i = rows.idx[y * rows.k + r]; if (i < rlo) rlo = i; if (i > rhi) rhi = i; }
    }
  }
  const cw = xs[1] - xs[0] + 1;
  if (scratch.length < sh * cw) scratch = new Float32Array(sh * cw);
  const tmp = scratch;  // columns first (rows rlo..rhi, output columns xs), then rows: the full path's order
  for (let i = rlo; i <= rhi; i++) {
    for (let x = xs[0]; x <= xs[1]; x++) {
      let v = 0;
      for (let c = 0; c < cols.k; c++) v += cols.wt[x * cols.k + c] * src[i * sw + cols.idx[x * cols.k + c]];
      tmp[i * cw + x - xs[0]] = v;
    }
  }
  let x0 = W, y0 = H, x1 = -1, y1 = -1, pixels = 0;
  const k = rows.k, off = new Int32Array(k), wt = new Float64Array(k);
  for (let y = ys[0]; y <= ys[1]; y++) {
    // this output row's taps, hoisted out of the pixel loop (same sums in the same order)
    for (let r = 0; r < k; r++) { off[r] = rows.idx[y * k + r] * cw - xs[0]; wt[r] = rows.wt[y * k + r]; }
    for (let x = xs[0]; x <= xs[1]; x++) {
      let v = 0;
      for (let r = 0; r < k; r++) v += wt[r] * tmp[off[r] + x];
      if (v > thr) {
        out[y * W + x] = 1; pixels++;
        if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; y1 = y;
      }
    }
  }
  return { mask: out, box: pixels ? [x0, y0, x1 + 1, y1 + 1] : [0, 0, 0, 0], pixels };
}

function threshold(plane, H, W, thr) {
  // a full-resolution plane (the graph upsampled it) -> {mask, box, pixels}
  const out = new Uint8Array(H * W);
  let x0 = W, y0 = H, x1 = -1, y1 = -1, pixels = 0;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      if (plane[y * W + x] > thr) {
        out[y * W + x] = 1; pixels++;
        if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; y1 = y;
      }
    }
  }
  return { mask: out, box: pixels ? [x0, y0, x1 + 1, y1 + 1] : [0, 0, 0, 0], pixels };
}

function fixedInputs(o, info, emb) {
  // the inputs that do not depend on the prompt, made once per image
  if (!emb.fixed) {
    const { width: W, height: H } = emb.header;
    const [mh, mw] = info.mask_input_size;
    emb.fixed = {
      mask_input: new o.Tensor("float32", new Float32Array(mh * mw), [1, 1, mh, mw]),
      has_mask_input: new o.Tensor("float32", new Float32Array([0]), [1]),
      orig_im_size: new o.Tensor("float32", new Float32Array([H, W]), [2]),
      taps: {},
    };
  }
  return emb.fixed;
}

export function decode(info, emb, points, labels, box, multimask) {
  const job = running.then(() => decodeOnce(info, emb, points, labels, box, multimask));
  running = job.catch(() => {});
  return job;
}

async function decodeOnce(info, emb, points, labels, box, multimask) {
  const o = await ort();
  const fast = emb.first !== null;
  const session_ = await session(fast ? "prompt_decoder_fast" : "prompt_decoder");
  const { width: W, height: H } = emb.header;
  const { coords, labs, n } = promptArrays(info, emb, points, labels, box);
  const fixed = fixedInputs(o, info, emb);
  const made = {
    ...fixed,
    point_coords: new o.Tensor("float32", coords, [1, n, 2]),
    point_labels: new o.Tensor("float32", labs, [1, n]),
  };
  const feeds = {};
  for (const name of fast ? info.fast.inputs : info.inputs) feeds[name] = (fast && emb.first[name]) || emb.tensors[name] || made[name];
  const out = await session_.run(feeds);
  const iou = out.iou_predictions.data;
  const k = iou.length;
  const picks = multimask && k > 1 ? [...Array(k - 1).keys()].map((i) => i + 1) : [0];
  const full = !fast && out.masks && out.masks.dims[2] === H && out.masks.dims[3] === W ? out.masks : null;
  const low = out.low_res_masks || out.masks;
  const [sh, sw] = [low.dims[2], low.dims[3]];
  const thr = info.mask_threshold || 0;
  const tapKey = `${sh}x${sw}`;
  if (!full && !fixed.taps[tapKey]) fixed.taps[tapKey] = postTaps(info, emb, sh, sw);
  const [rows, cols] = full ? [null, null] : fixed.taps[tapKey];
  const cands = picks.map((idx) => {
    const m = full ? threshold(full.data.subarray(idx * H * W, (idx + 1) * H * W), H, W, thr)
      : resample(low.data.subarray(idx * sh * sw, (idx + 1) * sh * sw), sh, sw, rows, cols, H, W, thr);
    return { ...m, score: iou[idx] };
  });
  return cands;
}

// One decode of a dummy click right after the embedding arrives, so the first real click finds
// the session's kernels and buffers warm (its result is dropped).
export async function warmUp(info, emb) {
  const { width: W, height: H } = emb.header;
  await decode(info, emb, [[W / 2, H / 2]], [1], null, true);
}
