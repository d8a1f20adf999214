// Does a photo look like the toy world's pictures (one object on a plain background)?
// A cheap look at a 64 px copy: the border ring should be one colour, and something
// different from it should sit inside. Ordinary photos fail the first test.

const SIDE = 64;
const RING = 4;
const BORDER_SPREAD_MAX = 28; // mean absolute deviation of the ring's pixels, 0–255
const OBJECT_SHARE_MIN = 0.03; // share of pixels clearly unlike the background

/** { ok, why } for a loaded <img>. */
export function toyWorldLook(img) {
  const canvas = document.createElement("canvas");
  canvas.width = SIDE;
  canvas.height = SIDE;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0, SIDE, SIDE);
  const { data } = ctx.getImageData(0, 0, SIDE, SIDE);
  const ring = [];
  for (let y = 0; y < SIDE; y++) {
    for (let x = 0; x < SIDE; x++) {
      if (x < RING || y < RING || x >= SIDE - RING || y >= SIDE - RING) ring.push((y * SIDE + x) * 4);
    }
  }
  const mean = [0, 1, 2].map((c) => ring.reduce((s, i) => s + data[i + c], 0) / ring.length);
  const distance = (i) => (Math.abs(data[i] - mean[0]) + Math.abs(data[i + 1] - mean[1]) + Math.abs(data[i + 2] - mean[2])) / 3;
  const spread = ring.reduce((s, i) => s + distance(i), 0) / ring.length;
  if (spread > BORDER_SPREAD_MAX) return { ok: false, why: "its background is not plain" };
  let object = 0;
  for (let i = 0; i < data.length; i += 4) if (distance(i) > 40) object++;
  if (object / (SIDE * SIDE) < OBJECT_SHARE_MIN) return { ok: false, why: "no object stands out from the background" };
  return { ok: true, why: "" };
}
