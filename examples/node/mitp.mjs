// Run an mitp bundle from Node.js, reading nothing but bundle.json, tokenizer.json and the model.
// Every step follows a field of bundle.json: the image rule (EXIF, alpha, 16-bit, Pillow's bicubic
// resize, centre crop, float32 normalisation), the caption rule (clean, tokenize, pad, mask) and the
// decision rule. verify.mjs checks this file against the bundle's test vectors.
import { readFileSync, realpathSync, statSync } from "node:fs";
import { isAbsolute, join, relative } from "node:path";
import { createRequire } from "node:module";
import ort from "onnxruntime-node";
import sharp from "sharp";
import { decodeHTML } from "entities";

const require = createRequire(import.meta.url);
const { Tokenizer } = require("tokenizers");

// A file that bundle.json or vectors.json names: a relative path inside the bundle, to a regular file
// (no "..", no absolute path, no link out of the folder); anything else is refused before it is read.
export function bundleFile(folder, name, what) {
  const bad = typeof name !== "string" || !name || name.includes("\0") || isAbsolute(name) || name.split(/[\\/]/).includes("..");
  if (bad) throw new Error(`${folder}: ${what} ${JSON.stringify(name)} is not a relative path inside the bundle`);
  const path = join(folder, name);
  const inside = relative(realpathSync(folder), realpathSync(path));
  if (inside.startsWith("..") || isAbsolute(inside)) throw new Error(`${folder}: ${what} ${JSON.stringify(name)} leads out of the bundle`);
  if (!statSync(path).isFile()) throw new Error(`${folder}: ${what} ${JSON.stringify(name)} is not a file in the bundle`);
  return path;
}

export async function loadBundle(folder, variant = "fp32") {
  const contract = JSON.parse(readFileSync(join(folder, "bundle.json"), "utf8"));
  const size = contract.image.size;
  if (!Number.isInteger(size) || size < 1 || size > 1024) throw new Error(`${folder}: image size ${size} is not in 1..1024`);
  const tokenizer = Tokenizer.fromFile(bundleFile(folder, contract.tokenizer.file, "tokenizer file"));
  const rules = contract.tokenizer;
  tokenizer.setTruncation(rules.max_length); // keeps the end token: the post-processor adds it after cutting
  tokenizer.setPadding({ maxLength: rules.max_length, padId: rules.pad_token_id, direction: rules.padding.side });
  const session = await ort.InferenceSession.create(bundleFile(folder, contract.models[variant].file, "model"));
  return { folder, contract, tokenizer, session };
}

// ---------------------------------------------------------------------------------------- the image rule

export async function decodeImage(path, decode) {
  const header = await sharp(path).metadata();
  const [w, h] = [header.width, header.height];
  if (w * h > decode.max_pixels) throw new Error(`${path}: ${w} x ${h} pixels is above ${decode.max_pixels}`);
  if (Math.max(w, h) > decode.max_aspect_ratio * Math.min(w, h)) throw new Error(`${path}: aspect ratio above ${decode.max_aspect_ratio}:1`);
  const sixteen = header.depth === "ushort";
  let pipeline = sharp(path, { limitInputPixels: false }).rotate(); // the EXIF Orientation tag
  if (sixteen) pipeline = pipeline.toColourspace(header.space); // keep grey16 / rgb16 samples as they are
  const { data, info } = await pipeline.raw({ depth: sixteen ? "ushort" : "uchar" }).toBuffer({ resolveWithObject: true });
  const samples = sixteen ? new Uint16Array(data.buffer, data.byteOffset, data.length / 2) : data;
  const rgb = new Uint8Array(info.width * info.height * 3);
  const c = info.channels;
  for (let p = 0; p < info.width * info.height; p++) {
    let px = [];
    for (let k = 0; k < c; k++) px.push(sixteen ? samples[p * c + k] >> 8 : samples[p * c + k]); // 16-bit: high byte
    if (c <= 2) px = [px[0], px[0], px[0], ...(c === 2 ? [px[1]] : [])]; // grey (+ alpha)
    if (px.length === 4) { // composite on white, in integers
      const a = px[3];
      px = px.slice(0, 3).map((v) => Math.floor((v * a + 255 * (255 - a) + 127) / 255));
    }
    rgb.set(px, p * 3);
  }
  return { width: info.width, height: info.height, rgb };
}

// Pillow's antialiased bicubic resample (Resample.c), 8-bit fixed point, horizontal pass first.
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

// -------------------------------------------------------------------------------------- the caption rule

const WHITESPACE = /[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/g; // Python's str.isspace()
export const cleanCaption = (text) => decodeHTML(decodeHTML(text)).replace(WHITESPACE, " ").replace(/^ | $/g, "");

export async function tokenize(bundle, text) {
  const encoding = await bundle.tokenizer.encode(cleanCaption(text));
  return { ids: encoding.getIds(), mask: encoding.getAttentionMask() }; // the mask from the encoding, not ids != pad
}

// ---------------------------------------------------------------------------------------------- predict

export async function logits(bundle, pixels, ids, mask) {
  const { size } = bundle.contract.image, length = ids.length;
  const feeds = {
    pixel_values: new ort.Tensor("float32", pixels, [1, 3, size, size]),
    input_ids: new ort.Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, length]),
    attention_mask: new ort.Tensor("int64", BigInt64Array.from(mask.map(BigInt)), [1, length]),
  };
  return Array.from((await bundle.session.run(feeds)).logits.data);
}

export async function predict(bundle, imagePath, text) {
  const { image, decision, labels } = bundle.contract;
  const pixels = normalize(clipCrop(await decodeImage(imagePath, image.decode), image.size), image.size, image.normalize);
  const { ids, mask } = await tokenize(bundle, text);
  const out = await logits(bundle, pixels, ids, mask); // out[i] belongs to labels[i]
  if (decision.rule === "sigmoid-threshold") {
    const probs = out.map((v) => 1 / (1 + Math.exp(-v)));
    return { labels: labels.filter((_, i) => probs[i] >= decision.threshold), probs };
  }
  const top = Math.max(...out), exp = out.map((v) => Math.exp(v - top)), sum = exp.reduce((a, b) => a + b, 0);
  const probs = exp.map((v) => v / sum);
  return { labels: [labels[probs.indexOf(Math.max(...probs))]], probs };
}
