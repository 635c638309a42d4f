// The prompt decoder in the page: onnxruntime-web (vendored under /vendor/ort/, no CDN) runs the
// exported decoder (segment-anything ONNX contract, or samkit's SAM 2 layout) on the image
// embedding the server computed once (GET /api/image/embedding). Returns the same candidates as
// POST /api/image/decode: masks (Uint8Array h * w), scores.

let ortModule = null;
let sessionPromise = null;

async function ort() {
  if (!ortModule) {
    ortModule = await import("/vendor/ort/ort.wasm.min.mjs");
    ortModule.env.wasm.wasmPaths = "/vendor/ort/";
    // threads need SharedArrayBuffer, which the server's COOP / COEP headers allow (crossOriginIsolated)
    ortModule.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  }
  return ortModule;
}

export async function loadDecoder() {
  if (!sessionPromise) {
    sessionPromise = (async () => {
      const o = await ort();
      const bytes = new Uint8Array(await (await fetch("/api/image/decoder")).arrayBuffer());
      return o.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    })();
  }
  return sessionPromise;
}

export async function loadEmbedding(path) {
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
  return { header, tensors };
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

function bilinear(src, sh, sw, H, W) {
  // low-res logits sh x sw -> H x W (align_corners = false), thresholded at 0
  const out = new Uint8Array(H * W);
  for (let y = 0; y < H; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sh / H - 0.5, 0), sh - 1), y0 = Math.floor(fy), y1 = Math.min(y0 + 1, sh - 1), wy = fy - y0;
    for (let x = 0; x < W; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sw / W - 0.5, 0), sw - 1), x0 = Math.floor(fx), x1 = Math.min(x0 + 1, sw - 1), wx = fx - x0;
      const v = (1 - wy) * ((1 - wx) * src[y0 * sw + x0] + wx * src[y0 * sw + x1]) + wy * ((1 - wx) * src[y1 * sw + x0] + wx * src[y1 * sw + x1]);
      out[y * W + x] = v > 0 ? 1 : 0;
    }
  }
  return out;
}

export async function decode(info, emb, points, labels, box, multimask) {
  const o = await ort();
  const session = await loadDecoder();
  const { width: W, height: H } = emb.header;
  const { coords, labs, n } = promptArrays(info, emb, points, labels, box);
  const [mh, mw] = info.mask_input_size;
  const made = {
    point_coords: new o.Tensor("float32", coords, [1, n, 2]),
    point_labels: new o.Tensor("float32", labs, [1, n]),
    mask_input: new o.Tensor("float32", new Float32Array(mh * mw), [1, 1, mh, mw]),
    has_mask_input: new o.Tensor("float32", new Float32Array([0]), [1]),
    orig_im_size: new o.Tensor("float32", new Float32Array([H, W]), [2]),
  };
  const feeds = {};
  for (const name of info.inputs) feeds[name] = emb.tensors[name] || made[name];
  const out = await session.run(feeds);
  const iou = out.iou_predictions.data;
  const k = iou.length;
  const picks = multimask && k > 1 ? [...Array(k - 1).keys()].map((i) => i + 1) : [0];
  const full = out.masks && out.masks.dims[2] === H && out.masks.dims[3] === W ? out.masks : null;
  const low = out.low_res_masks || out.masks;
  const [sh, sw] = [low.dims[2], low.dims[3]];
  const thr = info.mask_threshold || 0;
  return picks.map((idx) => {
    let mask;
    if (full) {
      const plane = full.data.subarray(idx * H * W, (idx + 1) * H * W);
      mask = new Uint8Array(H * W);
      for (let i = 0; i < H * W; i++) mask[i] = plane[i] > thr ? 1 : 0;
    } else {
      mask = bilinear(low.data.subarray(idx * sh * sw, (idx + 1) * sh * sw), sh, sw, H, W);
    }
    return { mask, score: iou[idx] };
  });
}
