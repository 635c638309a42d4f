// COCO RLE in the browser (the same codec as samkit/server/rle.py): column-major runs, the
// first run counting zeros; compressed counts: 5-bit groups + 48, bit 0x20 = more groups,
// each run minus the run two before it from the third run on.

export function encodeMask(mask, h, w) {
  // mask: Uint8Array of h * w, row-major (1 = set) -> {size: [h, w], counts: string}
  const counts = [];
  let prev = 0, run = 0;
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      const v = mask[y * w + x] ? 1 : 0;
      if (v !== prev) { counts.push(run); run = 0; prev = v; }
      run++;
    }
  }
  counts.push(run);
  return { size: [h, w], counts: countsToString(counts) };
}

export function countsToString(counts) {
  let out = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i] - (i > 2 ? counts[i - 2] : 0);
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x = Math.floor(x / 32);  // arithmetic shift that stays exact beyond 32 bits
      more = (c & 0x10) ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out += String.fromCharCode(c + 48);
    }
  }
  return out;
}

export function stringToCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * Math.pow(32, k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x -= Math.pow(32, k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

export function decodeRle(rle) {
  // {size: [h, w], counts} -> Uint8Array h * w row-major (runs walked column by column, no division per pixel)
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? stringToCounts(rle.counts) : rle.counts;
  const out = new Uint8Array(h * w);
  let x = 0, y = 0, v = 0;
  for (const c of counts) {
    if (v) {
      for (let i = 0; i < c; i++) { out[y * w + x] = 1; if (++y === h) { y = 0; x++; } }
    } else {
      const at = y + c;  // skip c pixels down the columns
      x += Math.floor(at / h); y = at % h;
    }
    v = 1 - v;
  }
  return out;
}

// The bit mask of a box (samkit/server/rle.py bits_encode; POST /api/image/decode with mask_format
// "bits"): {box: [x0, y0, x1, y1] exclusive, data: base64 of the crop's pixels row-major, 8 a byte,
// most significant bit first} -> {mask: Uint8Array h * w, box, pixels}.
export function decodeBits(bits, h, w) {
  const out = new Uint8Array(h * w);
  const [x0, y0, x1, y1] = bits.box;
  let pixels = 0;
  if (x1 > x0 && y1 > y0) {
    const raw = atob(bits.data);
    let k = 0;
    for (let y = y0; y < y1; y++) {
      const row = y * w;
      for (let x = x0; x < x1; x++, k++) {
        if ((raw.charCodeAt(k >> 3) >> (7 - (k & 7))) & 1) { out[row + x] = 1; pixels++; }
      }
    }
  }
  return { mask: out, box: [x0, y0, x1, y1], pixels };
}
