// The demo page: pick an image, type a caption, see the bundle's decision, the time it took and what ran it.
import { loadBundle, loadContract, predict } from "./mitp.mjs";

const $ = (id) => document.getElementById(id);
const status = (text, error = false) => { $("status").textContent = text; $("status").className = error ? "error" : ""; };
const loaded = new Map(); // "variant backend" -> the bundle, loaded once

function showCrop(crop, size) {
  const canvas = $("crop"), rgba = new Uint8ClampedArray(size * size * 4);
  for (let i = 0; i < size * size; i++) rgba.set([crop[i * 3], crop[i * 3 + 1], crop[i * 3 + 2], 255], i * 4);
  canvas.width = canvas.height = size;
  canvas.getContext("2d").putImageData(new ImageData(rgba, size, size), 0, 0);
}

function showResult(bundle, result) {
  const { contract } = bundle, sigmoid = contract.decision.rule === "sigmoid-threshold";
  showCrop(result.crop, contract.image.size);
  $("decision").textContent = result.labels.length ? result.labels.join(", ") : `no label reaches ${contract.decision.threshold}`;
  const ranked = contract.labels.map((label, i) => ({ label, p: result.probs[i] })).sort((a, b) => b.p - a.p).slice(0, 5);
  $("scores").replaceChildren(...ranked.map(({ label, p }) => {
    const item = document.createElement("li"), bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(p * 160)}px`;
    item.append(bar, `${label} ${(100 * p).toFixed(1)}%${sigmoid && p >= contract.decision.threshold ? " (decided)" : ""}`);
    return item;
  }));
  const ms = (v) => `${v.toFixed(1)} ms`, threads = bundle.threads ? `, ${bundle.threads} thread${bundle.threads > 1 ? "s" : ""}` : "";
  $("timing").textContent = `${ms(result.ms.total)} in all: model ${ms(result.ms.model)}, image ${ms(result.ms.image)}, caption ${ms(result.ms.caption)}; ` +
    `${bundle.variant} model on ${bundle.backend}${threads}${crossOriginIsolated ? "" : " (not cross-origin isolated: one wasm thread)"}`;
  $("result").dataset.labels = JSON.stringify(result.labels);
  $("result").hidden = false;
}

async function main() {
  const source = await loadContract();
  const { contract, site } = source;
  $("bundle-name").textContent = `${contract.dataset} · ${contract.setting} · ${contract.labels.length} labels`;
  $("variant").replaceChildren(...site.variants.map((v) => new Option(`${v} (${contract.models[v].file})`, v, false, v === site.default_variant)));
  const backends = site.backends.filter((b) => b !== "webgpu" || "gpu" in navigator);
  $("backend").replaceChildren(...backends.map((b) => new Option(b, b)));
  const bundleFor = (variant, backend) => {
    const key = `${variant} ${backend}`;
    if (!loaded.has(key)) loaded.set(key, loadBundle(source, { variant, backend }).catch((error) => { loaded.delete(key); throw error; })); // a failure is tried again
    return loaded.get(key);
  };
  $("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("run").disabled = true;
    $("result").hidden = true; // never the previous pair's decision beside this pair's outcome
    delete $("result").dataset.labels;
    try {
      status("Running...");
      const bundle = await bundleFor($("variant").value, $("backend").value);
      const file = $("image").files[0];
      showResult(bundle, await predict(bundle, file, $("caption").value));
      status(`Done: ${file.name}`);
    } catch (error) {
      status(String(error.message || error), true);
    } finally {
      $("run").disabled = false;
    }
  });
  await bundleFor(site.default_variant, backends[0]); // loaded before the first click
  $("run").disabled = false;
  status("Ready.");
}

main().catch((error) => status(String(error.message || error), true));
