// Run an mitp bundle from Node.js, reading nothing but bundle.json, tokenizer.json and the model.
// Every step follows a field of bundle.json: the image rule (EXIF, alpha, 16-bit, Pillow's bicubic
// resize, centre crop, float32 normalisation), the caption rule (clean, tokenize, pad, mask) and the
// decision rule. The rules themselves are plain JavaScript shared with the browser page
// (mitp/runtime/web/contract.mjs); this file adds Node's file access, image decoder (sharp), tokenizer
// (Hugging Face tokenizers) and onnxruntime-node. verify.mjs checks it against the bundle's test vectors.
import { readFileSync, realpathSync, statSync } from "node:fs";
import { isAbsolute, join, relative } from "node:path";
import { createRequire } from "node:module";
import ort from "onnxruntime-node";
import sharp from "sharp";
import { decodeHTML } from "entities";
import { clipCrop, cleanCaption as clean, decide, normalize, relativeNameProblem, sizeProblem, toRgb } from "../../mitp/runtime/web/contract.mjs";

export { clipCrop, normalize };
const require = createRequire(import.meta.url);
const { Tokenizer } = require("tokenizers");

// A file that bundle.json or vectors.json names: a relative path inside the bundle, to a regular file
// (no "..", no absolute path, no link out of the folder); anything else is refused before it is read.
export function bundleFile(folder, name, what) {
  const problem = relativeNameProblem(name);
  if (problem) throw new Error(`${folder}: ${what} ${JSON.stringify(name)} ${problem}`);
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

// The image file -> 8-bit RGB by the contract (sharp decodes; the header is checked first).
export async function decodeImage(path, decode) {
  const header = await sharp(path).metadata();
  const problem = sizeProblem(header.width, header.height, decode);
  if (problem) throw new Error(`${path} ${problem}`);
  const sixteen = header.depth === "ushort";
  let pipeline = sharp(path, { limitInputPixels: false }).rotate(); // the EXIF Orientation tag
  if (sixteen) pipeline = pipeline.toColourspace(header.space); // keep grey16 / rgb16 samples as they are
  const { data, info } = await pipeline.raw({ depth: sixteen ? "ushort" : "uchar" }).toBuffer({ resolveWithObject: true });
  const samples = sixteen ? new Uint16Array(data.buffer, data.byteOffset, data.length / 2) : data;
  return toRgb(samples, info.width, info.height, info.channels, sixteen);
}

export const cleanCaption = (text) => clean(text, decodeHTML);

export async function tokenize(bundle, text) {
  const encoding = await bundle.tokenizer.encode(cleanCaption(text));
  return { ids: encoding.getIds(), mask: encoding.getAttentionMask() }; // the mask from the encoding, not ids != pad
}

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
  const { image } = bundle.contract;
  const pixels = normalize(clipCrop(await decodeImage(imagePath, image.decode), image.size), image.size, image.normalize);
  const { ids, mask } = await tokenize(bundle, text);
  return decide(await logits(bundle, pixels, ids, mask), bundle.contract); // probs[i] belongs to labels[i]
}
