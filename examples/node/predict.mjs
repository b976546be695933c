// node predict.mjs BUNDLE IMAGE "caption" [fp32|int8|fp16]
import { loadBundle, predict } from "./mitp.mjs";

const [folder, image, text, variant = "fp32"] = process.argv.slice(2);
if (!text) {
  console.error('usage: node predict.mjs BUNDLE IMAGE "caption" [fp32|int8|fp16]');
  process.exit(2);
}
const bundle = await loadBundle(folder, variant);
const { labels, probs } = await predict(bundle, image, text);
console.log(JSON.stringify({ labels, scores: Object.fromEntries(bundle.contract.labels.map((label, i) => [label, probs[i]])) }));
