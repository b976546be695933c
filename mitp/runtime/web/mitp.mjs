// Run an mitp bundle in a web page: onnxruntime-web (wasm by default, WebGPU when the site has it and asked),
// a pure-JavaScript tokenizer over the bundle's tokenizer.json, and the image rule of bundle.json. The page
// reads only the files of its own site: the bundle under bundle/, the runtime under vendor/ (import map in the
// page). The rules themselves are contract.mjs, shared with the Node.js example.
import { decodeHTML } from "entities";
import { Tokenizer } from "@huggingface/tokenizers";
import { convertIndexedToRgb, decode as decodePng } from "fast-png";
import { cleanHead, clipCrop, decide, frameIds, normalize, relativeNameProblem, sizeProblem, toRgb } from "./contract.mjs";

export { clipCrop, decide, normalize };
export const siteRoot = new URL("../", import.meta.url);

// ------------------------------------------------------------------------------------------- the bundle

// A file that bundle.json or vectors.json names, fetched from the site's bundle folder only.
export async function bundleFile(bundle, name, what) {
  const problem = relativeNameProblem(name);
  if (problem) throw new Error(`bundle: ${what} ${JSON.stringify(name)} ${problem}`);
  const response = await fetch(new URL(name, bundle.base));
  if (!response.ok) throw new Error(`bundle: ${what} ${name}: HTTP ${response.status}`);
  return response;
}

export async function loadContract(base = new URL("bundle/", siteRoot)) {
  const response = await fetch(new URL("bundle.json", base));
  if (!response.ok) throw new Error(`bundle.json: HTTP ${response.status}`);
  const contract = await response.json();
  const size = contract.image?.size;
  if (!Number.isInteger(size) || size < 1 || size > 1024) throw new Error(`bundle.json: image size ${size} is not in 1..1024`);
  const site = await (await fetch(new URL("site.json", siteRoot))).json(); // which variants and backends this site has
  return { base, contract, site };
}

// onnxruntime-web, from the site's vendor folder: the wasm build, or the WebGPU build (which also runs wasm).
// `threads` (wasm): onnxruntime-web's default is min(4, half the cores), and one without cross-origin isolation.
export async function loadRuntime(backend = "wasm", threads = 0) {
  const ort = await import(backend === "webgpu" ? "onnxruntime-web/webgpu" : "onnxruntime-web/wasm");
  ort.env.wasm.wasmPaths = new URL("vendor/onnxruntime-web/dist/", siteRoot).href; // never a CDN
  if (threads > 0) ort.env.wasm.numThreads = threads;
  return ort;
}

export async function loadBundle({ base, contract, site }, { variant = "fp32", backend = "wasm", threads = 0 } = {}) {
  const bundle = { base, contract, site, variant, backend };
  if (!contract.models?.[variant]) throw new Error(`this bundle has no ${variant} model`);
  if (!site.variants.includes(variant)) throw new Error(`this site was built without the ${variant} model`);
  bundle.tokenizer = await loadTokenizer(await (await bundleFile(bundle, contract.tokenizer.file, "tokenizer file")).json(), contract.tokenizer);
  bundle.ort = await loadRuntime(backend, threads);
  const model = new Uint8Array(await (await bundleFile(bundle, contract.models[variant].file, "model")).arrayBuffer());
  const apart = site.external_data?.[variant]; // weights above 1 GiB live beside the model (ONNX external data)
  if (apart && relativeNameProblem(apart)) throw new Error(`site.json: external data ${JSON.stringify(apart)} ${relativeNameProblem(apart)}`);
  const externalData = apart ? [{ path: apart, data: new URL(apart, base).href }] : undefined;
  bundle.session = await bundle.ort.InferenceSession.create(model, { executionProviders: [backend], externalData });
  bundle.threads = backend === "wasm" ? bundle.ort.env.wasm.numThreads || 1 : null;
  return bundle;
}

// ------------------------------------------------------------------------------------------ the caption

// Hugging Face's `Whitespace` pre-tokenizer splits on Unicode \w (Rust regex); tokenizers.js's JavaScript \w
// is ASCII only, so the same split is spelled with Unicode properties (checked against the Python tokenizer).
const WORD = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}";
const UNICODE_WHITESPACE_SPLIT = { type: "Split", pattern: { Regex: `[${WORD}]+|[^${WORD}\\p{White_Space}]+` }, behavior: "Removed", invert: true };
const unicodeWords = (p) =>
  p?.type === "Whitespace" ? UNICODE_WHITESPACE_SPLIT : p?.type === "Sequence" ? { ...p, pretokenizers: p.pretokenizers.map(unicodeWords) } : p;

export function loadTokenizer(json, rules) {
  const tokenizer = new Tokenizer({ ...json, pre_tokenizer: unicodeWords(json.pre_tokenizer) }, { unk_token: json.model?.unk_token });
  // frameIds adds start and end itself: the file's post-processor must do exactly that, or this port is wrong.
  const plain = tokenizer.encode("a photo", { add_special_tokens: false }).ids;
  const framed = tokenizer.encode("a photo", { add_special_tokens: true }).ids;
  if (JSON.stringify(framed) !== JSON.stringify([rules.bos_token_id, ...plain, rules.eos_token_id]))
    throw new Error("tokenizer.json: its post-processor does not add exactly the start and end tokens of bundle.json");
  return tokenizer;
}

// As mitp predict: a caption whose first 77 words hold more than this many characters is refused (BPE's cost
// grows with a word's length squared; no caption of the data sets comes near it).
export const MAX_CAPTION_CHARS = 16384;

export function tokenize(bundle, text) {
  const head = cleanHead(text, decodeHTML, bundle.contract.tokenizer.max_length);
  if (head.length > MAX_CAPTION_CHARS) throw new Error(`the caption's first words hold ${head.length} characters, more than the ${MAX_CAPTION_CHARS} allowed`);
  return frameIds(bundle.tokenizer.encode(head, { add_special_tokens: false }).ids, bundle.contract.tokenizer);
}

// -------------------------------------------------------------------------------------------- the image

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
const isPng = (bytes) => PNG_SIGNATURE.every((v, i) => bytes[i] === v);

const ascii = (bytes, at, length) => String.fromCharCode(...bytes.subarray(at, at + length));

// Width and height from the header of a PNG, JPEG, GIF, BMP or WebP, before anything is decoded (null for
// other formats, which are checked once decoded).
function headerSize(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (isPng(bytes) && bytes.length >= 24) return [view.getUint32(16), view.getUint32(20)];
  if (/^GIF8[79]a$/.test(ascii(bytes, 0, 6)) && bytes.length >= 10) return [view.getUint16(6, true), view.getUint16(8, true)];
  if (ascii(bytes, 0, 2) === "BM" && bytes.length >= 26) {
    return view.getUint32(14, true) === 12 ? [view.getUint16(18, true), view.getUint16(20, true)] : [Math.abs(view.getInt32(18, true)), Math.abs(view.getInt32(22, true))];
  }
  if (ascii(bytes, 0, 4) === "RIFF" && ascii(bytes, 8, 4) === "WEBP" && bytes.length >= 30) {
    const chunk = ascii(bytes, 12, 4), u24 = (at) => bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16);
    if (chunk === "VP8X") return [1 + u24(24), 1 + u24(27)];
    if (chunk === "VP8L") { const bits = view.getUint32(21, true); return [1 + (bits & 0x3fff), 1 + ((bits >> 14) & 0x3fff)]; }
    if (chunk === "VP8 ") return [view.getUint16(26, true) & 0x3fff, view.getUint16(28, true) & 0x3fff];
    return null;
  }
  if (bytes[0] !== 0xff || bytes[1] !== 0xd8) return null;
  for (let at = 2; at + 9 < bytes.length; ) { // JPEG: walk the markers to the first start-of-frame
    if (bytes[at] !== 0xff) return null;
    const marker = bytes[at + 1];
    if (marker === 0xff) { at += 1; continue; }
    const length = view.getUint16(at + 2);
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) return [view.getUint16(at + 7), view.getUint16(at + 5)];
    at += 2 + length;
  }
  return null;
}

// The EXIF Orientation tag (0x0112) of a TIFF-structured EXIF block, 1 when absent.
function exifOrientation(tiff) {
  if (tiff.length < 8) return 1;
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  const little = tiff[0] === 0x49;
  const ifd = view.getUint32(4, little);
  if (ifd + 2 > tiff.length) return 1;
  const count = view.getUint16(ifd, little);
  for (let i = 0; i < count && ifd + 2 + i * 12 + 12 <= tiff.length; i++) {
    const entry = ifd + 2 + i * 12;
    if (view.getUint16(entry, little) === 0x0112) return view.getUint16(entry + 8, little);
  }
  return 1;
}

// Pillow's ImageOps.exif_transpose for orientations 2..8, on 8-bit RGB.
function orient(image, orientation) {
  if (!(orientation >= 2 && orientation <= 8)) return image;
  const { width: w, height: h, rgb } = image;
  const swap = orientation >= 5;
  const [W, H] = swap ? [h, w] : [w, h];
  const out = new Uint8Array(rgb.length);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      // (x, y) in the output comes from (sx, sy) in the stored image
      const [sx, sy] = {
        2: [w - 1 - x, y], 3: [w - 1 - x, h - 1 - y], 4: [x, h - 1 - y],
        5: [y, x], 6: [y, h - 1 - x], 7: [w - 1 - y, h - 1 - x], 8: [w - 1 - y, x],
      }[orientation];
      out.set(rgb.subarray((sy * w + sx) * 3, (sy * w + sx) * 3 + 3), (y * W + x) * 3);
    }
  return { width: W, height: H, rgb: out };
}

// Greyscale of 1, 2 or 4 bits, packed in rows of whole bytes (first sample in the high bits), scaled to
// 0..255 as Pillow reads it.
function unpack(packed, samplesPerRow, rows, depth) {
  const out = new Uint8Array(samplesPerRow * rows), bytesPerRow = Math.ceil((samplesPerRow * depth) / 8);
  const scale = 255 / (2 ** depth - 1), mask = 2 ** depth - 1;
  for (let y = 0; y < rows; y++)
    for (let x = 0; x < samplesPerRow; x++) {
      const bit = x * depth, byte = packed[y * bytesPerRow + (bit >> 3)];
      out[y * samplesPerRow + x] = ((byte >> (8 - depth - (bit & 7))) & mask) * scale;
    }
  return out;
}

// PNG samples as stored (fast-png: no premultiplied alpha, no colour management, 16-bit kept) -> RGB.
function pngToRgb(png) {
  const { width, height, depth, palette, transparency, data, channels } = png;
  if (palette) return toRgb(convertIndexedToRgb(png), width, height, palette[0].length); // entries carry tRNS's alpha
  // 8-bit samples as Pillow holds them: low depths scaled to 0..255, 16-bit by the high byte
  const eight = depth === 8 ? data : depth === 16 ? Uint8Array.from(data, (v) => v >> 8) : unpack(data, width * channels, height, depth);
  const keyed = transparency?.length && (channels === 3 || (channels === 1 && depth !== 16)); // 16-bit grey: Pillow keeps no key
  if (!keyed) return toRgb(eight, width, height, channels);
  // a colour key (tRNS): Pillow compares its raw value with the 8-bit samples, and makes matches transparent
  const rgba = new Uint8Array(width * height * (channels + 1));
  for (let p = 0; p < width * height; p++) {
    let match = true;
    for (let k = 0; k < channels; k++) { rgba[p * (channels + 1) + k] = eight[p * channels + k]; match &&= eight[p * channels + k] === transparency[k]; }
    rgba[p * (channels + 1) + channels] = match ? 0 : 255;
  }
  return toRgb(rgba, width, height, channels + 1);
}

function pngExif(bytes) { // the eXIf chunk, which Pillow's getexif() reads for PNG
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 8; at + 12 <= bytes.length; ) {
    const length = view.getUint32(at), type = ascii(bytes, at + 4, 4);
    if (type === "eXIf") return bytes.subarray(at + 8, at + 8 + length);
    if (type === "IDAT" || type === "IEND") return null; // eXIf must come before the image data
    at += 12 + length;
  }
  return null;
}

// Any other format: the browser decodes, with no premultiplied alpha, no colour conversion and the EXIF
// orientation applied. Exact for opaque 8-bit images (JPEG); translucent pixels pass a premultiplied canvas.
async function browserDecode(blob) {
  const bitmap = await createImageBitmap(blob, { premultiplyAlpha: "none", colorSpaceConversion: "none", imageOrientation: "from-image" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height, { colorSpace: "srgb" }).data;
  bitmap.close();
  return toRgb(rgba, canvas.width, canvas.height, 4);
}

export async function decodeImage(blob, decode, name = "image") {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  const size = headerSize(bytes);
  const problem = size && sizeProblem(size[0], size[1], decode);
  if (problem) throw new Error(`${name} ${problem}`);
  let image;
  try {
    if (isPng(bytes)) {
      image = pngToRgb(decodePng(bytes));
      const exif = pngExif(bytes);
      if (exif) image = orient(image, exifOrientation(exif));
    } else {
      image = await browserDecode(blob);
    }
  } catch (error) {
    throw new Error(`cannot decode ${name} as an image (${error.message || error})`);
  }
  const late = !size && sizeProblem(image.width, image.height, decode); // formats whose header is not read here
  if (late) throw new Error(`${name} ${late}`);
  return image;
}

export async function preprocess(bundle, blob, name) {
  const { size, normalize: norm, decode } = bundle.contract.image;
  const crop = clipCrop(await decodeImage(blob, decode, name), size);
  return { crop, pixels: normalize(crop, size, norm) };
}

// ---------------------------------------------------------------------------------------------- predict

export async function logits(bundle, pixels, ids, mask) {
  const { Tensor } = bundle.ort, { size } = bundle.contract.image, length = ids.length;
  const feeds = {
    pixel_values: new Tensor("float32", pixels, [1, 3, size, size]),
    input_ids: new Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, length]),
    attention_mask: new Tensor("int64", BigInt64Array.from(mask.map(BigInt)), [1, length]),
  };
  return Array.from((await bundle.session.run(feeds)).logits.data);
}

// One image and one caption -> the decision, the scores and where the time went (milliseconds).
export async function predict(bundle, blob, text) {
  const t0 = performance.now();
  const { crop, pixels } = await preprocess(bundle, blob, blob.name || "the image");
  const t1 = performance.now();
  if (!cleanHead(text, decodeHTML)) throw new Error("the caption is empty (once HTML entities and whitespace are cleaned)"); // as mitp predict
  const { ids, mask } = tokenize(bundle, text);
  const t2 = performance.now();
  const out = await logits(bundle, pixels, ids, mask);
  const t3 = performance.now();
  return { ...decide(out, bundle.contract), logits: out, crop, ms: { image: t1 - t0, caption: t2 - t1, model: t3 - t2, total: t3 - t0 } };
}
