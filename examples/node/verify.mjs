// node verify.mjs BUNDLE [BUNDLE ...]: run this port on each bundle's test vectors, every model variant.
// Exit code 0 only if token ids, attention masks, crops, pixels and logits all match what the bundle expects.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { bundleFile, clipCrop, decodeImage, loadBundle, logits, normalize, tokenize } from "./mitp.mjs";

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
let failures = 0;
const check = (ok, what) => {
  if (!ok) failures += 1;
  console.log(`${ok ? "ok    " : "FAILED"} ${what}`);
};

for (const folder of process.argv.slice(2)) {
  const vectors = JSON.parse(readFileSync(join(folder, "test_vectors", "vectors.json"), "utf8"));
  const contract = JSON.parse(readFileSync(join(folder, "bundle.json"), "utf8"));
  const { size, normalize: norm, decode } = contract.image;
  const inputs = [];
  const fp32 = await loadBundle(folder, "fp32");
  for (const [i, v] of vectors.vectors.entries()) {
    const name = `${folder} vector ${i} (${v.name})`;
    const { ids, mask } = await tokenize(fp32, v.text);
    check(JSON.stringify(ids) === JSON.stringify(v.input_ids) && JSON.stringify(mask) === JSON.stringify(v.attention_mask), `${name}: token ids and attention mask`);
    const crop = clipCrop(await decodeImage(bundleFile(folder, v.image, `vector ${i}'s image`), decode), size);
    const pixels = normalize(crop, size, norm);
    check(sha256(crop) === v.crop_sha256, `${name}: crop`);
    check(sha256(Buffer.from(pixels.buffer)) === v.pixels_sha256, `${name}: pixels`);
    inputs.push({ name, pixels, ids, mask, v });
  }
  for (const variant of Object.keys(contract.models)) {
    const bundle = variant === "fp32" ? fp32 : await loadBundle(folder, variant);
    let worst = 0;
    for (const { pixels, ids, mask, v } of inputs) {
      const out = await logits(bundle, pixels, ids, mask);
      worst = Math.max(worst, ...out.map((x, k) => Math.abs(x - v.logits[variant][k])));
    }
    check(worst <= vectors.tolerance[variant], `${folder} ${contract.models[variant].file}: logits within ${vectors.tolerance[variant]} (max |diff| ${worst.toExponential(2)})`);
  }
}
console.log(failures ? `${failures} check(s) failed` : "all test vectors pass");
process.exit(failures ? 1 : 0);
