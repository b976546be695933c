// node check.mjs URL [URL ...] [--demo] [--screenshot FILE (the first site's demo page)] [--bench N] [--threads N] [--backend wasm|webgpu] [--json FILE]
//
// Drives headless Chromium (puppeteer-core over the system's Chromium, never a downloaded one) over sites
// written by `mitp bundle web` and served at URL (`mitp bundle serve SITE`): verify.html must pass every test
// vector of every variant, no request may leave the site's origin, and with --demo the demo page must show,
// for a test image and caption, the label that the test vector's expected logits decide.
// Exit code 0 only if every check passes. CHROMIUM names the browser binary when it is not on the usual paths.
import { existsSync, writeFileSync } from "node:fs";
import puppeteer from "puppeteer-core";
import { decide } from "../../mitp/runtime/web/contract.mjs";

const args = process.argv.slice(2);
const option = (name, fallback = null) => { const i = args.indexOf(name); return i >= 0 ? args.splice(i, 2)[1] : fallback; };
const flag = (name) => { const i = args.indexOf(name); return i >= 0 && args.splice(i, 1).length > 0; };
const demo = flag("--demo"), screenshot = option("--screenshot"), bench = Number(option("--bench", 0));
const backend = option("--backend", "wasm"), jsonOut = option("--json"), threads = option("--threads");
const urls = args.map((u) => (u.endsWith("/") ? u : `${u}/`));
if (!urls.length) {
  console.error("usage: node check.mjs URL [URL ...] [--demo] [--screenshot FILE] [--bench N] [--threads N] [--backend wasm|webgpu] [--json FILE]");
  process.exit(2);
}

const candidates = [process.env.CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].filter(Boolean);
const executablePath = candidates.find((p) => existsSync(p));
if (!executablePath) {
  console.error(`no Chromium found (tried ${candidates.join(", ")}): apt-get install chromium, or set CHROMIUM`);
  process.exit(2);
}

let failures = 0;
const report = { browser: null, sites: [] };
const say = (ok, what) => { if (!ok) failures += 1; console.log(`${ok ? "ok    " : "FAILED"} ${what}`); };

// A page whose every request outside its site's origin is refused and recorded.
async function sitePage(browser, url, outside) {
  const page = await browser.newPage();
  const origin = new URL(url).origin;
  await page.setRequestInterception(true);
  page.on("request", (request) => {
    const target = request.url();
    if (target.startsWith("data:") || target.startsWith("blob:") || new URL(target).origin === origin) return request.continue();
    outside.push(target);
    return request.abort();
  });
  page.on("pageerror", (error) => console.log(`page error on ${url}: ${error.message}`));
  return page;
}

async function verify(browser, url, site) {
  const page = await sitePage(browser, url, site.outside);
  const query = new URLSearchParams({ backend, ...(bench ? { bench: String(bench) } : {}), ...(threads ? { threads } : {}) });
  await page.goto(`${url}verify.html?${query}`);
  await page.waitForFunction(() => window.mitpVerify?.done, { timeout: 0, polling: 200 });
  const outcome = await page.evaluate(() => window.mitpVerify);
  for (const c of outcome.checks) say(c.ok, `${url} ${c.what}${c.detail ? ` (${c.detail})` : ""}`);
  if (outcome.error) say(false, `${url} verify.html: ${outcome.error}`);
  say(outcome.checks.length > 0 && !outcome.error, `${url} verify.html ran ${outcome.checks.length} checks on ${backend}, cross-origin isolated: ${outcome.crossOriginIsolated}, ${outcome.adapter || `${outcome.threads} wasm thread(s)`}`);
  Object.assign(site, { results: outcome.checks, checks: outcome.checks.length, failed: outcome.failures, crossOriginIsolated: outcome.crossOriginIsolated, threads: outcome.threads, adapter: outcome.adapter, bench: outcome.bench });
  await page.close();
}

async function demoPage(browser, url, site) {
  const page = await sitePage(browser, url, site.outside);
  await page.setViewport({ width: 1100, height: 760 });
  await page.goto(`${url}index.html`);
  await page.waitForFunction(() => !document.getElementById("run").disabled || document.getElementById("status").className === "error", { timeout: 120000 });
  const contract = await (await fetch(`${url}bundle/bundle.json`)).json();
  const vectors = (await (await fetch(`${url}bundle/${contract.test_vectors}`)).json()).vectors;
  const vector = vectors.find((v) => v.name.startsWith("real")) || vectors[0];
  const variant = await page.$eval("#variant", (select) => select.value);
  const expected = decide(vector.logits[variant], contract).labels;
  await page.evaluate(async (image, text) => { // the test image as if picked in the file dialog
    const blob = await (await fetch(`bundle/${image}`)).blob();
    const transfer = new DataTransfer();
    transfer.items.add(new File([blob], image.split("/").pop(), { type: blob.type }));
    document.getElementById("image").files = transfer.files;
    document.getElementById("caption").value = text;
  }, vector.image, vector.text);
  await page.click("#run");
  await page.waitForFunction(() => document.getElementById("result").dataset.labels || document.getElementById("status").className === "error", { timeout: 120000 });
  const shown = await page.evaluate(() => JSON.parse(document.getElementById("result").dataset.labels || "null"));
  const status = await page.$eval("#status", (el) => el.textContent);
  say(JSON.stringify(shown) === JSON.stringify(expected), `${url} demo page on ${vector.image} "${vector.text}" (${variant}): shows ${JSON.stringify(shown)}, expected ${JSON.stringify(expected)} (${status})`);
  site.demo = { image: vector.image, text: vector.text, variant, shown, expected, timing: await page.$eval("#timing", (el) => el.textContent) };
  if (screenshot && site === report.sites[0]) await page.screenshot({ path: screenshot }); // the first site's
  await page.close();
}

const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage", ...(backend === "webgpu" ? ["--enable-unsafe-webgpu", "--enable-features=Vulkan"] : [])],
});
try {
  report.browser = await browser.version();
  console.log(`browser: ${report.browser} (${executablePath})`);
  for (const url of urls) {
    const site = { url, outside: [] };
    report.sites.push(site);
    await verify(browser, url, site);
    if (demo) await demoPage(browser, url, site);
    say(site.outside.length === 0, `${url} fetched nothing outside its origin${site.outside.length ? `: ${site.outside.slice(0, 3).join(", ")}` : ""}`);
  }
} finally {
  await browser.close();
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ ...report, failures }, null, 2));
console.log(failures ? `${failures} check(s) failed` : "all browser checks pass");
process.exit(failures ? 1 : 0);
