// The verification page: every test vector of the bundle and every model variant of this site, checked as
// `mitp bundle verify` checks them. The outcome is also left in window.mitpVerify for a test driver.
import { bundleFile, loadBundle, loadContract, logits, preprocess, tokenize } from "./mitp.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const backend = params.get("backend") || "wasm", benchRuns = Number(params.get("bench") || 0), threads = Number(params.get("threads") || 0);
const outcome = (window.mitpVerify = { done: false, failures: 0, checks: [], backend, bench: [] });

const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
const sha256 = async (bytes) => (crypto.subtle ? hex(await crypto.subtle.digest("SHA-256", bytes)) : null); // secure contexts only
const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

function check(ok, what, detail = "") {
  outcome.checks.push({ ok, what, detail });
  if (!ok) outcome.failures += 1;
  const row = document.createElement("tr");
  for (const [text, cls] of [[ok ? "ok" : "FAILED", ok ? "ok" : "failed"], [what], [detail]]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (cls) cell.className = cls;
    row.append(cell);
  }
  $("rows").append(row);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const source = await loadContract();
  const { contract, site } = source;
  $("bundle-name").textContent = `${contract.dataset} · ${contract.setting}`;
  const first = await loadBundle(source, { variant: site.default_variant, backend, threads }); // int8 when fp32 is too large
  outcome.threads = first.threads;
  if (backend === "webgpu") { // which GPU ran it (a software adapter in a headless browser without one)
    const info = (await navigator.gpu.requestAdapter())?.info || {};
    outcome.adapter = `WebGPU adapter: ${[info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ") || "unnamed"}`;
  }
  const vectors = await (await bundleFile(first, contract.test_vectors, "test vectors")).json();
  const inputs = [];
  for (const [i, v] of vectors.vectors.entries()) {
    const name = `vector ${i} (${v.name})`;
    const { ids, mask } = tokenize(first, v.text);
    check(same(ids, v.input_ids) && same(mask, v.attention_mask), `${name}: token ids and attention mask`);
    const image = await (await bundleFile(first, v.image, `${name}'s image`)).blob();
    const { crop, pixels } = await preprocess(first, image, v.image);
    const expected = new Uint8Array(await (await bundleFile(first, v.crop, `${name}'s crop`)).arrayBuffer());
    const cropSha = await sha256(crop);
    check(same(crop, expected) && (cropSha === null || cropSha === v.crop_sha256), `${name}: crop`, cropSha ? "bytes and sha256" : "bytes (no crypto.subtle here)");
    const pixelSha = await sha256(new Uint8Array(pixels.buffer));
    check(pixelSha === null || pixelSha === v.pixels_sha256, `${name}: pixels`, pixelSha ? "sha256" : "not checked: no crypto.subtle (serve over https or from localhost)");
    inputs.push({ pixels, ids, mask, v, image });
  }
  for (const variant of site.variants) {
    let bundle;
    try {
      bundle = variant === first.variant ? first : await loadBundle(source, { variant, backend, threads });
    } catch (error) { // too large for this tab's memory, or an operator this backend lacks: said, and the rest go on
      check(false, `${contract.models[variant].file} on ${backend}: cannot run here`, String(error.message || error));
      continue;
    }
    let worst = 0;
    for (const { pixels, ids, mask, v } of inputs) {
      const out = await logits(bundle, pixels, ids, mask);
      worst = Math.max(worst, ...out.map((x, k) => Math.abs(x - v.logits[variant][k])));
    }
    const tolerance = vectors.tolerance[variant];
    check(worst <= tolerance, `${contract.models[variant].file} on ${backend}: logits within ${tolerance}`, `max |diff| ${worst.toExponential(2)}`);
    if (benchRuns > 0) {
      const { pixels, ids, mask } = inputs[0], times = [];
      await logits(bundle, pixels, ids, mask); // warm-up
      for (let r = 0; r < benchRuns; r++) {
        const t0 = performance.now();
        await logits(bundle, pixels, ids, mask);
        times.push(performance.now() - t0);
      }
      outcome.bench.push({ variant, backend, threads: bundle.threads, runs: benchRuns, median_ms: median(times), min_ms: Math.min(...times) });
    }
  }
  if (outcome.bench.length) $("bench").textContent = JSON.stringify(outcome.bench, null, 2);
  $("status").textContent = outcome.failures ? `${outcome.failures} check(s) failed` : "all test vectors pass";
}

main()
  .catch((error) => { outcome.error = String(error.message || error); outcome.failures += 1; $("status").textContent = outcome.error; $("status").className = "error"; })
  .finally(() => { outcome.crossOriginIsolated = crossOriginIsolated; outcome.done = true; });
