// Brush fix-ups of the current mask (tool "brush", key R): a drag paints discs of radius r image
// pixels along its path into the candidate's Uint8Array mask (1), Shift or the right button erases
// (0). The candidate's pixel count and box follow; a new click decodes afresh (undo does too).

// Paint the segment (x0, y0) -> (x1, y1) with discs of radius r into cand (mask W x H, pixels, box).
export function stroke(cand, x0, y0, x1, y1, r, value, W, H) {
  const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0) / Math.max(0.5, r / 2)));
  for (let s = 0; s <= steps; s++) disc(cand, x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps, r, value, W, H);
}

function disc(cand, cx, cy, r, value, W, H) {
  const ya = Math.max(0, Math.floor(cy - r)), yb = Math.min(H - 1, Math.ceil(cy + r));
  const xa = Math.max(0, Math.floor(cx - r)), xb = Math.min(W - 1, Math.ceil(cx + r));
  const m = cand.mask;
  let changed = false;
  for (let y = ya; y <= yb; y++) {
    for (let x = xa; x <= xb; x++) {
      if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 > r * r) continue;  // pixel centres inside the disc
      const i = y * W + x;
      if (m[i] !== value) { m[i] = value; cand.pixels += value ? 1 : -1; changed = true; }
    }
  }
  if (changed && value) {  // the box grows with paint; erasing shrinks it at the stroke's end (fitBox)
    const b = cand.box;
    cand.box = b[2] > b[0] ? [Math.min(b[0], xa), Math.min(b[1], ya), Math.max(b[2], xb + 1), Math.max(b[3], yb + 1)]
      : [xa, ya, xb + 1, yb + 1];
  }
}

// The tight box of the mask after a stroke (exclusive ends; [0, 0, 0, 0] when empty).
export function fitBox(cand, W) {
  const [bx0, by0, bx1, by1] = cand.box;
  let x0 = bx1, y0 = by1, x1 = -1, y1 = -1;
  for (let y = by0; y < by1; y++) {
    for (let x = bx0; x < bx1; x++) {
      if (cand.mask[y * W + x]) { if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; y1 = y; }
    }
  }
  cand.box = y1 < 0 ? [0, 0, 0, 0] : [x0, y0, x1 + 1, y1 + 1];
}
