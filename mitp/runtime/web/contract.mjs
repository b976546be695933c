// The bundle contract's rules in plain JavaScript, shared by the browser page (mitp.mjs beside this file) and
// the Node.js example (examples/node/mitp.mjs): nothing here touches a file, a DOM or a package, so both import
// the same code. Each function follows one field of bundle.json; verify.mjs / verify.html check them against
// the bundle's test vectors (ids, crop and pixel checksums, logits).

// ------------------------------------------------------------------------------------------ bundle paths

// bundle.json and vectors.json name files as relative paths inside the bundle; anything else is refused
// before it is read (the Node example also resolves links; a web server serves only its folder).
export function relativeNameProblem(name) {
  if (typeof name !== "string" || !name) return "is not a file name";
  if (name.includes("\0") || name.startsWith("/") || /^[a-zA-Z]:/.test(name) || name.includes("\\")) return "is not a relative path";
  if (name.split("/").some((part) => part === ".." || part === "." || part === "")) return "is not a plain relative path inside the bundle";
  if (/^[a-z][a-z0-9+.-]*:/i.test(name) || /[?#%]/.test(name)) return "looks like an address, not a file name";
  return null;
}

// ------------------------------------------------------------------------------------------ the image rule

// Refused from the header, before any pixel is decoded.
export function sizeProblem(width, height, decode) {
  if (!(width >= 1 && height >= 1)) return `has no pixels (${width} x ${height})`;
  if (width * height > decode.max_pixels) return `is too large to decode safely: ${width} x ${height} pixels (limit ${decode.max_pixels})`;
  if (Math.max(width, height) > decode.max_aspect_ratio * Math.min(width, height))
    return `is ${width} x ${height}: an aspect ratio above ${decode.max_aspect_ratio}:1 is refused`;
  return null;
}

// Decoded samples -> 8-bit RGB: 16-bit samples by their high byte, greyscale replicated, an alpha channel
// composited on white in integers. `samples` holds `channels` interleaved values per pixel (1 grey, 2 grey +
// alpha, 3 RGB, 4 RGBA), already 8-bit unless `sixteen`.
export function toRgb(samples, width, height, channels, sixteen = false) {
  const rgb = new Uint8Array(width * height * 3);
  const c = channels;
  for (let p = 0; p < width * height; p++) {
    const at = (k) => (sixteen ? samples[p * c + k] >> 8 : samples[p * c + k]);
    let r, g, b, a = 255;
    if (c <= 2) { r = g = b = at(0); if (c === 2) a = at(1); }
    else { r = at(0); g = at(1); b = at(2); if (c === 4) a = at(3); }
    if (a !== 255) {
      r = Math.floor((r * a + 255 * (255 - a) + 127) / 255);
      g = Math.floor((g * a + 255 * (255 - a) + 127) / 255);
      b = Math.floor((b * a + 255 * (255 - a) + 127) / 255);
    }
    rgb[p * 3] = r; rgb[p * 3 + 1] = g; rgb[p * 3 + 2] = b;
  }
  return { width, height, rgb };
}

// Pillow's antialiased bicubic resample (libImaging/Resample.c), 8-bit fixed point, horizontal pass first.
const PRECISION_BITS = 32 - 8 - 2;

function bicubic(x) {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 2 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const w = [];
    let ww = 0;
    for (let x = 0; x < xmax; x++) { w.push(bicubic((x + xmin - center + 0.5) * ss)); ww += w[x]; }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

const clip8 = (v) => Math.min(255, Math.max(0, v >> PRECISION_BITS));

function resize(image, outW, outH) {
  const needHorizontal = outW !== image.width, needVertical = outH !== image.height;
  if (!needHorizontal && !needVertical) return image;
  const vert = coefficients(image.height, outH);
  let source = image;
  if (needHorizontal) { // over the source rows that the vertical pass reads
    const horiz = coefficients(image.width, outW);
    const first = vert.bounds[0], last = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1];
    const rgb = new Uint8Array(outW * (last - first) * 3);
    for (let y = first; y < last; y++) {
      for (let xx = 0; xx < outW; xx++) {
        const xmin = horiz.bounds[xx * 2], xmax = horiz.bounds[xx * 2 + 1];
        for (let ch = 0; ch < 3; ch++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < xmax; x++) ss += image.rgb[(y * image.width + x + xmin) * 3 + ch] * horiz.kk[xx * horiz.ksize + x];
          rgb[((y - first) * outW + xx) * 3 + ch] = clip8(ss);
        }
      }
    }
    for (let i = 0; i < outH; i++) vert.bounds[i * 2] -= first;
    source = { width: outW, height: last - first, rgb };
  }
  if (!needVertical) return source;
  const rgb = new Uint8Array(outW * outH * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vert.bounds[yy * 2], ymax = vert.bounds[yy * 2 + 1];
    for (let xx = 0; xx < outW; xx++) {
      for (let ch = 0; ch < 3; ch++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < ymax; y++) ss += source.rgb[((y + ymin) * source.width + xx) * 3 + ch] * vert.kk[yy * vert.ksize + y];
        rgb[(yy * outW + xx) * 3 + ch] = clip8(ss);
      }
    }
  }
  return { width: outW, height: outH, rgb };
}

export function clipCrop(image, size) {
  const { width: w, height: h } = image;
  const [newW, newH] = w <= h ? [size, Math.floor((size * h) / w)] : [Math.floor((size * w) / h), size];
  const resized = resize(image, newW, newH);
  const left = Math.floor((newW - size) / 2), top = Math.floor((newH - size) / 2);
  const crop = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) crop.set(resized.rgb.subarray(((y + top) * newW + left) * 3, ((y + top) * newW + left + size) * 3), y * size * 3);
  return crop; // (size, size, 3) uint8
}

export function normalize(crop, size, { mean, std }) {
  const f = Math.fround, pixels = new Float32Array(3 * size * size);
  for (let i = 0; i < size * size; i++)
    for (let ch = 0; ch < 3; ch++) pixels[ch * size * size + i] = f(f(f(crop[i * 3 + ch] / 255) - f(mean[ch])) / f(std[ch]));
  return pixels; // (3, size, size) float32, NCHW without the batch
}

// ---------------------------------------------------------------------------------------- the caption rule

const WHITESPACE = /[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/g; // Python's str.isspace()

// HTML-unescape twice, one space per whitespace run, stripped; `decodeHTML` is the `entities` package's
// (HTML5 rules, as Python's html.unescape), passed in so that this file imports nothing.
export const cleanCaption = (text, decodeHTML) => decodeHTML(decodeHTML(text)).replace(WHITESPACE, " ").replace(/^ | $/g, "");

// The cleaned caption cut after its first `words` words, read from the head of the text only (Python's
// clean_head): every word yields at least one token, so the ids are those of the whole caption, and a long
// caption costs what its first 77 words cost. Raw words are cleaned locally (an entity holds no whitespace);
// the head grows while cleaning makes words vanish (`&nbsp;` alone).
const RAW_WORD = /[^\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/g;
export function cleanHead(text, decodeHTML, words = 77) {
  for (let take = 4 * words; ; take *= 4) {
    const raw = [];
    for (const match of text.matchAll(RAW_WORD)) if (raw.push(match[0]) > take) break;
    const head = cleanCaption(raw.slice(0, take).join(" "), decodeHTML).split(" ");
    if (raw.length <= take || head.length > words) return head.slice(0, words).join(" ");
  }
}

// The text's ids (no special tokens) -> the model's input: cut so that start + text + end fit max_length,
// then padded; the mask is 1 for start, text and end, 0 for padding (never ids != pad: pad may equal end).
export function frameIds(textIds, rules) {
  const kept = textIds.slice(0, rules.max_length - 2);
  const ids = [rules.bos_token_id, ...kept, rules.eos_token_id];
  const mask = ids.map(() => 1);
  while (ids.length < rules.max_length) { ids.push(rules.pad_token_id); mask.push(0); }
  return { ids, mask };
}

// --------------------------------------------------------------------------------------- the decision rule

// logits -> the labels decided and a score per label (softmax for single-label, sigmoid per label otherwise).
export function decide(logits, contract) {
  const { decision, labels } = contract;
  if (decision.rule === "sigmoid-threshold") {
    const probs = logits.map((v) => 1 / (1 + Math.exp(-v)));
    return { labels: labels.filter((_, i) => probs[i] >= decision.threshold), probs };
  }
  const top = Math.max(...logits), exp = logits.map((v) => Math.exp(v - top)), sum = exp.reduce((a, b) => a + b, 0);
  const probs = exp.map((v) => v / sum);
  return { labels: [labels[probs.indexOf(Math.max(...probs))]], probs };
}
