"""`mitp bundle web` and `mitp bundle serve`, and the browser runtime (mitp/runtime/web) against Python.

The site builder and the server are tested everywhere, with stand-in npm packages. Where examples/web's
packages are installed (`cd examples/web && npm ci`), the browser tokenizer is compared with the Python one;
where Chromium is installed too, headless Chromium runs a bundle's test vectors and demo page, and decodes
images of every kind against Pillow. Skipped otherwise: the suite itself needs no network."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from mitp.cli import app
from mitp.runtime import site as site_module
from mitp.runtime.preprocess import clip_crop, load_image
from tests.loopback import Route

ROOT = Path(__file__).resolve().parents[1]
WEB_EXAMPLE = ROOT / "examples" / "web"
NODE_MODULES = WEB_EXAMPLE / "node_modules"
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome") if Path(p).exists()), None)
needs_packages = pytest.mark.skipif(
    shutil.which("node") is None or not NODE_MODULES.is_dir(), reason="examples/web packages not installed (cd examples/web && npm ci)"
)
needs_browser = pytest.mark.skipif(
    shutil.which("node") is None or not NODE_MODULES.is_dir() or CHROMIUM is None,
    reason="headless browser check needs Chromium (apt-get install chromium) and examples/web's packages (npm ci)",
)
runner = CliRunner()


def fake_node_modules(root: Path) -> Path:
    """Each pinned package at its pinned version, holding its listed files (a listed folder: a script and a
    source map that must not be copied)."""
    for name, pin in site_module.vendor_spec()["packages"].items():
        package = root / name
        package.mkdir(parents=True)
        (package / "package.json").write_text(json.dumps({"name": name, "version": pin["version"]}))
        for item in pin["files"] + pin.get("webgpu_files", []):
            names = [item + "index.js", item + "index.js.map"] if item.endswith("/") else [item]
            for relative in names:
                (package / relative).parent.mkdir(parents=True, exist_ok=True)
                (package / relative).write_text(f"// {name} {relative}\n")
    for target in site_module.vendor_spec()["imports"].values():  # the modules the pages import by name
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        (root / target).write_text("// imported by name\n")
    return root


@contextlib.contextmanager
def served(site: Path) -> Iterator[str]:
    """The site's address while `mitp bundle serve`'s server runs it on a free port."""
    server = site_module.site_server(site, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_vendor_pins_are_the_lockfiles(tmp_path):
    """One set of versions: the site's pins are examples/web's lockfile entries, and the import map's targets
    are files the site copies."""
    lock = json.loads((WEB_EXAMPLE / "package-lock.json").read_text())["packages"]
    spec = site_module.vendor_spec()
    for name, pin in spec["packages"].items():
        assert (lock[f"node_modules/{name}"]["version"], lock[f"node_modules/{name}"]["integrity"]) == (pin["version"], pin["integrity"]), name
    for target in spec["imports"].values():
        name = next(n for n in spec["packages"] if target.startswith(n + "/"))
        relative = target[len(name) + 1 :]
        pin = spec["packages"][name]
        assert any(relative == f or (f.endswith("/") and relative.startswith(f)) for f in pin["files"] + pin.get("webgpu_files", [])), target


def test_site_holds_pages_bundle_and_runtime(trained, tmp_path):
    modules = fake_node_modules(tmp_path / "node_modules")
    result = runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(tmp_path / "site"), "--vendor", str(modules)])
    assert result.exit_code == 0, result.output
    site = tmp_path / "site"
    contract = json.loads((trained / "bundle" / "bundle.json").read_text())
    vectors = json.loads((trained / "bundle" / "test_vectors" / "vectors.json").read_text())["vectors"]
    for name in ["bundle.json", "tokenizer.json", "test_vectors/vectors.json"] + [m["file"] for m in contract["models"].values()]:
        assert (site / "bundle" / name).read_bytes() == (trained / "bundle" / name).read_bytes(), name
    for vector in vectors:
        assert (site / "bundle" / vector["image"]).is_file() and (site / "bundle" / vector["crop"]).is_file()
    described = json.loads((site / "site.json").read_text())
    assert described["variants"] == list(contract["models"]) and described["default_variant"] == "fp32" and described["backends"] == ["wasm"]
    for page in ("index.html", "verify.html"):
        html = (site / page).read_text()
        mapping = json.loads(html.split('<script type="importmap">', 1)[1].split("</script>", 1)[0])["imports"]
        assert all((site / target).is_file() for target in mapping.values() if "webgpu" not in target), mapping
        assert "http://" not in html and "https://" not in html  # nothing from the internet
    assert sorted(p.name for p in (site / "mitp").iterdir()) == sorted(site_module.SCRIPTS)
    assert not list(site.rglob("*.map")) and not (site / "vendor/onnxruntime-web/dist/ort.webgpu.min.mjs").exists()
    assert "Cross-Origin-Embedder-Policy: require-corp" in (site / "_headers").read_text()
    card = yaml.safe_load((site / "README.md").read_text().split("---")[1])
    assert card["sdk"] == "static" and card["custom_headers"]["cross-origin-opener-policy"] == "same-origin"

    result = runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(site), "--vendor", str(modules), "--variant", "int8", "--webgpu"])
    assert result.exit_code == 0, result.output  # a site mitp wrote is replaced whole
    assert [p.name for p in (site / "bundle").glob("*.onnx")] == [contract["models"]["int8"]["file"]]
    assert json.loads((site / "site.json").read_text())["backends"] == ["wasm", "webgpu"]
    assert (site / "vendor/onnxruntime-web/dist/ort.webgpu.min.mjs").is_file()


def test_site_ships_external_weights_and_starts_large_models_on_int8(trained, tmp_path, monkeypatch):
    """Weights that `mitp export` writes apart (the backbone's file per variant) travel with the site and are
    named in site.json; above LARGE_MODEL bytes of fp32 weights the demo page starts on int8."""
    bundle = tmp_path / "bundle"
    shutil.copytree(trained / "bundle", bundle)
    monkeypatch.setattr(site_module, "LARGE_MODEL", (bundle / "model.onnx").stat().st_size + 1024)
    site_module.build_site(bundle, tmp_path / "site", node_modules=fake_node_modules(tmp_path / "nm"))
    described = json.loads((tmp_path / "site" / "site.json").read_text())
    backbone = {v: entry["file"] for v, entry in json.loads((bundle / "bundle.json").read_text())["backbone_weights"].items()}
    assert described["external_data"] == backbone and described["default_variant"] == "int8"
    for name in backbone.values():
        assert (tmp_path / "site" / "bundle" / name).read_bytes() == (bundle / name).read_bytes()


def test_site_refusals_are_one_line(trained, tmp_path):
    modules = fake_node_modules(tmp_path / "node_modules")
    bundle = trained / "bundle"

    def refused(*args: str) -> str:
        result = runner.invoke(app, ["bundle", "web", str(bundle), *args])
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output
        return " ".join(result.output.split())

    assert "no fp64 model" in refused("--out", str(tmp_path / "a"), "--vendor", str(modules), "--variant", "fp64")
    assert "bundle" in refused("--out", str(bundle / "site"), "--vendor", str(modules))  # never inside its input
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    refused("--out", str(tmp_path / "mine"), "--vendor", str(modules))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    (tmp_path / "afile").write_text("mine")
    assert "cannot write the site" in refused("--out", str(tmp_path / "afile" / "site"), "--vendor", str(modules))

    site = tmp_path / "site"  # a site mitp wrote, then the user's notes put in it: a rebuild keeps off
    assert runner.invoke(app, ["bundle", "web", str(bundle), "--out", str(site), "--vendor", str(modules)]).exit_code == 0
    (site / "NOTES.md").write_text("mine")
    assert "NOTES.md" in refused("--out", str(site), "--vendor", str(modules))
    assert (site / "NOTES.md").read_text() == "mine" and (site / "index.html").is_file()

    (modules / "fflate" / "esm" / "browser.js").write_text("")  # a damaged install
    assert "is empty" in refused("--out", str(tmp_path / "c"), "--vendor", str(modules))
    (modules / "fast-png" / "package.json").write_text(json.dumps({"version": "7.0.0"}))
    assert "npm ci" in refused("--out", str(tmp_path / "b"), "--vendor", str(modules))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: c.pop("models"),
        lambda c: c.update(models={}),
        lambda c: c.update(models=["fp32"]),
        lambda c: c["models"].update(fp32={}),
        lambda c: c["models"]["fp32"].update(file=7),
        lambda c: c["models"]["fp32"].update(file="../../../nowhere/model.onnx"),
        lambda c: c["models"]["fp32"].update(file="gone.onnx"),
        lambda c: c.pop("test_vectors"),
        lambda c: c.update(tokenizer={}),
    ],
    ids=["no-models", "empty-models", "models-list", "no-file", "file-number", "file-outside", "file-missing", "no-vectors", "no-tokenizer-file"],
)
def test_a_damaged_bundle_gets_one_line(trained, tmp_path, damage):
    bundle = tmp_path / "bundle"
    shutil.copytree(trained / "bundle", bundle)
    contract = json.loads((bundle / "bundle.json").read_text())
    damage(contract)
    (bundle / "bundle.json").write_text(json.dumps(contract))
    result = runner.invoke(app, ["bundle", "web", str(bundle), "--out", str(tmp_path / "site"), "--vendor", str(fake_node_modules(tmp_path / "nm"))])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3 and not (tmp_path / "site").exists()


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_vendor_packages_come_from_the_registry_once_and_checked(trained, tmp_path, loopback, monkeypatch):
    server = loopback()
    spec = json.loads(json.dumps(site_module.vendor_spec()))
    for name, pin in spec["packages"].items():
        files = {f"package/{item}index.js" if item.endswith("/") else f"package/{item}": f"// {name}\n".encode() for item in pin["files"]}
        files["package/../escape.js"] = b"never extracted"
        data = _tarball(files)
        pin["integrity"] = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        server.routes[urllib.request.urlparse(site_module.tarball_url(name, pin["version"], server.url(""))).path] = Route(body=data)
    monkeypatch.setattr(site_module, "vendor_spec", lambda: spec)
    monkeypatch.setenv("MITP_NPM_REGISTRY", server.url(""))
    result = runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "site/vendor/fflate/esm/browser.js").read_text() == "// fflate\n"
    assert not list(tmp_path.rglob("escape.js"))
    fetched = len(server.requests)
    assert fetched == len(spec["packages"])
    result = runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(tmp_path / "site")])
    assert result.exit_code == 0 and len(server.requests) == fetched  # from the cache
    monkeypatch.setenv("MITP_CACHE", str(tmp_path / "empty-cache"))
    heard: dict[str, int] = {}
    site_module.build_site(trained / "bundle", tmp_path / "site", progress=lambda name, done, total: heard.update({name: done}))
    sizes = {name: len(server.routes[urllib.request.urlparse(site_module.tarball_url(name, pin["version"], server.url(""))).path].body) for name, pin in spec["packages"].items()}
    assert heard == sizes  # each tarball's download reported to its last byte

    spec["packages"]["fflate"]["integrity"] = "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode()
    result = runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(tmp_path / "tampered")])
    assert result.exit_code != 0 and "integrity" in result.output and not (tmp_path / "tampered").exists()
    monkeypatch.setenv("MITP_NPM_REGISTRY", "http://127.0.0.1:9")  # nothing listens: offline
    result = runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(tmp_path / "offline")])
    assert result.exit_code != 0 and "--vendor" in " ".join(result.output.split()) and "Traceback" not in result.output


def test_serve_sends_isolation_headers_and_script_types(trained, tmp_path):
    runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(tmp_path / "site"), "--vendor", str(fake_node_modules(tmp_path / "nm"))])
    with served(tmp_path / "site") as url:
        for path, kind in [("mitp/mitp.mjs", "text/javascript"), ("vendor/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm", "application/wasm")]:
            with urllib.request.urlopen(url + path) as response:
                assert response.headers["Content-Type"].startswith(kind)
                assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
                assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        for hidden in (".mitp-output", "%2emitp-output"):  # the marker and build leftovers are not the site's
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(url + hidden)
    with pytest.raises(site_module.SiteError, match="not a site"):
        site_module.site_server(trained / "bundle", port=0)


# ------------------------------------------------------------------------------- with the npm packages


def _node(script: str, cwd: Path, timeout: int = 300) -> str:
    done = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _in_chromium(body: str, args: tuple[str, ...] = ()) -> str:
    """Run `body` (JavaScript with `page`, a fresh page of headless Chromium, in scope) with puppeteer-core; its
    console output."""
    launch = json.dumps({"executablePath": CHROMIUM, "headless": True, "args": ["--no-sandbox", *args]})
    script = f'import puppeteer from "puppeteer-core";\nconst browser = await puppeteer.launch({launch});\nconst page = await browser.newPage();\n'
    return _node(script + f"try {{\n{body}\n}} finally {{\n  await browser.close();\n}}\n", WEB_EXAMPLE)


def _clip_like_bpe(path: Path) -> None:
    """A small BPE tokenizer built like OpenAI CLIP's tokenizer.json (normalizer, split pattern, byte level,
    </w> suffix, start/end post-processor), trained here on a few lines."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    pattern = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|startoftext|>", "<|endoftext|>"], end_of_word_suffix="</w>", initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a photo of a red plate of food", "the movie's plot, told in 3 acts!", "naïve café über straße 日本語"] * 20, trainer)
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", 1), ("<|startoftext|>", 0), trim_offsets=False, add_prefix_space=False)
    tok.save(str(path))


def _captions() -> list[str]:
    rng = np.random.default_rng(0)
    pieces = ["hello", "world", "it's", "we'll", "I'D", "naïve", "café", "Ünïcödé", "日本語", "😀🎉", "&amp;", "&lt;b&gt;", "&amp;amp;", "&notit;",
              "  spaced\t\ttabs\n", "123456", "3.14", "e-mail", "don't", "x" * 40, "ǅ", "ß", "İstanbul", "ﬁ", "\u00a0nbsp", "\u2028", "mixedCASE",
              "foo_bar", "C++", "#hash", "https://a.b/c?d=e", "한국어", "Ελληνικά", "русский", "'s'S", "a" * 200, "red", "plate", "photo"]
    long = ["word " * 5000, "&nbsp; " * 400 + "late words " * 50, "x" * 20000 + " tail"]  # cut at 77 words; the last is refused
    return [" ".join(rng.choice(pieces, size=int(rng.integers(0, 120 if i % 7 == 0 else 25)))) for i in range(400)] + long


@needs_packages
def test_browser_tokenizer_matches_python(trained, tmp_path):
    """The browser's tokenization (tokenizers.js plus contract.mjs's cleaning and framing) gives the ids and
    mask of the Python runtime, for a word-level tokenizer (the presets) and a CLIP-structured BPE."""
    from mitp.runtime.tokenizer import MAX_CAPTION_CHARS, clean_head, load_tokenizer_file

    work = tmp_path / "web"
    shutil.copytree(ROOT / "mitp/runtime/web", work)
    (work / "node_modules").symlink_to(NODE_MODULES)  # bare imports resolve from the scripts' folder
    _clip_like_bpe(tmp_path / "bpe.json")
    captions = _captions()
    cases = []
    for path in (trained / "bundle" / "tokenizer.json", tmp_path / "bpe.json"):
        tok = load_tokenizer_file(path)
        ids, mask = tok([clean_head(c) for c in captions])
        refused = [len(clean_head(c)) > MAX_CAPTION_CHARS for c in captions]  # as predict refuses them
        ids_or_none = [None if r else row for r, row in zip(refused, ids.tolist(), strict=True)]
        cases.append({"file": str(path), "rules": tok.rules("tokenizer.json"), "ids": ids_or_none, "mask": mask.tolist()})
    (tmp_path / "cases.json").write_text(json.dumps({"captions": captions, "cases": cases}))
    out = _node(
        f"""
import {{ readFileSync }} from "node:fs";
import {{ loadTokenizer, tokenize }} from "./mitp.mjs";
const {{ captions, cases }} = JSON.parse(readFileSync({json.dumps(str(tmp_path / "cases.json"))}, "utf8"));
const wrong = [];
for (const c of cases) {{
  const bundle = {{ contract: {{ tokenizer: c.rules }}, tokenizer: loadTokenizer(JSON.parse(readFileSync(c.file, "utf8")), c.rules) }};
  captions.forEach((text, i) => {{
    let got;
    try {{ got = tokenize(bundle, text); }} catch (error) {{ got = null; }}
    const same = got === null ? c.ids[i] === null : JSON.stringify(got.ids) === JSON.stringify(c.ids[i]) && JSON.stringify(got.mask) === JSON.stringify(c.mask[i]);
    if (!same) wrong.push([c.file, text.slice(0, 80)]);
  }});
}}
console.log(JSON.stringify(wrong.slice(0, 5)));
""",
        work,
    )
    assert json.loads(out) == []
    assert any(sum(m) == 77 for m in cases[1]["mask"]) and any(row and 1 in row[1:-1] for row in cases[0]["ids"])  # truncation and unknown words ran
    assert cases[0]["ids"][-1] is None and cases[0]["ids"][-2] is not None  # a refusal, and a long caption cut


# ------------------------------------------------------------------------------------------ in Chromium


@needs_browser
def test_browser_reproduces_the_test_vectors_and_the_demo_page(trained, tmp_path):
    """Every test vector of every variant (fp32, fp16, int8) in headless Chromium, no request outside the
    site, and the demo page's decision for a test image and caption."""
    result = runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(tmp_path / "site"), "--vendor", str(NODE_MODULES)])
    assert result.exit_code == 0, result.output
    with served(tmp_path / "site") as url:
        done = subprocess.run(["node", "check.mjs", url, "--demo", "--json", str(tmp_path / "check.json")], capture_output=True, text=True, cwd=WEB_EXAMPLE, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "check.json").read_text())["sites"][0]
    contract = json.loads((trained / "bundle" / "bundle.json").read_text())
    assert report["failed"] == 0 and report["outside"] == [] and report["crossOriginIsolated"] is True
    assert all(f"{m['file']} on wasm" in done.stdout for m in contract["models"].values())
    assert report["demo"]["shown"] == report["demo"]["expected"]


def _image_cases(folder: Path) -> list[str]:
    """Images of every kind the image rule names: JPEG subsampling, progressive, greyscale, each EXIF
    orientation; PNG RGB, RGBA, LA, palettes with and without transparency, colour keys, 16-bit, low bit
    depths, an eXIf orientation."""
    rng = np.random.default_rng(1)

    def pixels(h, w, c):
        base = np.linspace(0, 255, h * w * c).reshape(h, w, c)
        return np.clip(base + rng.integers(-40, 40, (h, w, c)), 0, 255).astype(np.uint8)

    names = []

    def save(name, image, **kwargs):
        image.save(folder / name, **kwargs)
        names.append(name)

    rgb = Image.fromarray(pixels(45, 67, 3))
    save("q75.jpg", rgb, quality=75)
    save("q95-444.jpg", rgb, quality=95, subsampling=0)
    save("progressive.jpg", Image.fromarray(pixels(80, 33, 3)), quality=85, progressive=True)
    save("grey.jpg", Image.fromarray(pixels(40, 50, 1)[..., 0]), quality=90)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        save(f"orientation-{orientation}.jpg", Image.fromarray(pixels(30, 52, 3)), quality=90, exif=exif)
    save("rgb.png", Image.fromarray(pixels(37, 41, 3)))
    save("rgba.png", Image.fromarray(pixels(37, 41, 4)))
    save("la.png", Image.fromarray(pixels(29, 60, 2), mode="LA"))
    palette = Image.fromarray(pixels(33, 31, 3)).quantize(16)
    save("palette.png", palette)
    save("palette-trns.png", palette, transparency=bytes(range(0, 256, 16)))
    save("grey-key.png", Image.fromarray(pixels(20, 30, 1)[..., 0]), transparency=int(pixels(20, 30, 1)[0, 0, 0]))
    keyed = pixels(20, 30, 3)
    save("rgb-key.png", Image.fromarray(keyed), transparency=tuple(int(v) for v in keyed[3, 4]))
    save("grey-16.png", Image.fromarray((np.linspace(0, 65535, 24 * 50).reshape(24, 50)).astype(np.uint16)))
    save("one-bit.png", Image.fromarray(pixels(40, 40, 1)[..., 0] > 128))
    save("four-bit-palette.png", Image.fromarray(pixels(16, 50, 3)).quantize(12), bits=4)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("png-exif-6.png", Image.fromarray(pixels(30, 52, 3)), exif=exif)
    return names


@needs_browser
def test_browser_decodes_every_kind_of_image_like_pillow(trained, tmp_path):
    result = runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(tmp_path / "site"), "--vendor", str(NODE_MODULES)])
    assert result.exit_code == 0, result.output
    cases = tmp_path / "site" / "cases"
    cases.mkdir()
    names = _image_cases(cases)
    expected = {name: [hashlib.sha256(clip_crop(load_image(cases / name), size).tobytes()).hexdigest() for size in (7, 32)] for name in names}
    with served(tmp_path / "site") as url:
        out = _in_chromium(
            f"""
await page.goto({json.dumps(url + "verify.html")});
const got = await page.evaluate(async (names) => {{
  const m = await import("./mitp/mitp.mjs");
  const hex = async (b) => Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", b)), (x) => x.toString(16).padStart(2, "0")).join("");
  const out = {{}};
  for (const name of names) {{
    const image = await m.decodeImage(await (await fetch("cases/" + name)).blob(), {{ max_pixels: 1e8, max_aspect_ratio: 64 }}, name);
    out[name] = [await hex(m.clipCrop(image, 7)), await hex(m.clipCrop(image, 32))];
  }}
  return out;
}}, {json.dumps(names)});
console.log(JSON.stringify(got));
"""
        )
    got = json.loads(out)
    assert {name: got[name] for name in names if got[name] != expected[name]} == {}


@needs_browser
def test_demo_page_says_what_is_wrong_with_bad_input(trained, tmp_path):
    """An empty caption, a file that is not an image and an image too large for the rule each get one message
    on the page, and the page still classifies the next good pair."""
    result = runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(tmp_path / "site"), "--vendor", str(NODE_MODULES)])
    assert result.exit_code == 0, result.output
    bad = tmp_path / "site" / "bad"
    bad.mkdir()
    (bad / "notes.jpg").write_text("not an image")
    Image.new("RGB", (65 * 20, 20)).save(bad / "wide.png")  # an aspect ratio above 64:1
    # Headers that promise 20,000 x 20,000 pixels: refused from the header, before the browser decodes
    junk = bytes(64)
    (bad / "huge.gif").write_bytes(b"GIF89a" + (20000).to_bytes(2, "little") * 2 + junk)
    bmp = bytearray(b"BM" + bytes(12) + (40).to_bytes(4, "little") + (20000).to_bytes(4, "little") + (20000).to_bytes(4, "little")) + junk
    (bad / "huge.bmp").write_bytes(bytes(bmp))
    vp8x = b"VP8X" + (10).to_bytes(4, "little") + bytes(4) + (19999).to_bytes(3, "little") * 2
    (bad / "huge.webp").write_bytes(b"RIFF" + (4 + len(vp8x) + len(junk)).to_bytes(4, "little") + b"WEBP" + vp8x + junk)
    vector = json.loads((trained / "bundle" / "test_vectors" / "vectors.json").read_text())["vectors"][0]
    with served(tmp_path / "site") as url:
        out = _in_chromium(
            f"""
await page.goto({json.dumps((tmp_path / "site" / "index.html").as_uri())});  // opened from the disk first
const fromDisk = await page.$eval("#status", (el) => [el.className, el.textContent]);
await page.goto({json.dumps(url + "index.html")});
await page.waitForFunction(() => !document.getElementById("run").disabled, {{ timeout: 60000 }});
const outcomes = [fromDisk];
const pairs = [["bundle/{vector['image']}", "a red plate"], ["bundle/{vector['image']}", "&nbsp; \\t"], ["bad/notes.jpg", "a red plate"], ["bad/wide.png", "a red plate"],
  ["bad/huge.gif", "a red plate"], ["bad/huge.bmp", "a red plate"], ["bad/huge.webp", "a red plate"], ["bundle/{vector['image']}", "a red plate"]];
for (const [path, caption] of pairs) {{
  await page.evaluate(async (path, caption) => {{
    const blob = await (await fetch(path)).blob(), transfer = new DataTransfer();
    transfer.items.add(new File([blob], path.split("/").pop(), {{ type: blob.type }}));
    document.getElementById("image").files = transfer.files;
    document.getElementById("caption").value = caption;
    document.getElementById("status").textContent = "";
    delete document.getElementById("result").dataset.labels;
  }}, path, caption);
  await page.click("#run");
  await page.waitForFunction(() => document.getElementById("status").className === "error" || document.getElementById("result").dataset.labels, {{ timeout: 60000 }});
  outcomes.push(await page.evaluate(() => [document.getElementById("status").className, document.getElementById("status").textContent, document.getElementById("result").hidden]));
}}
console.log(JSON.stringify(outcomes));
"""
        )
    from_disk, first, empty, not_image, wide, gif, bmp, webp, good = json.loads(out)
    assert from_disk[0] == "error" and "mitp bundle serve" in from_disk[1]
    done = ["", f"Done: {Path(vector['image']).name}", False]
    assert first == done and good == done
    assert empty[0] == "error" and "caption is empty" in empty[1]
    assert not_image[0] == "error" and "cannot decode notes.jpg as an image" in not_image[1]
    assert wide[0] == "error" and "aspect ratio above 64:1" in wide[1]
    for header in (gif, bmp, webp):
        assert header[0] == "error" and "20000 x 20000 pixels" in header[1], header
    assert all(outcome[2] for outcome in (empty, not_image, wide, gif, bmp, webp))  # no earlier decision left on screen


@needs_browser
def test_webgpu_build_reproduces_the_test_vectors_where_the_browser_has_an_adapter(trained, tmp_path):
    """`--webgpu` sites on the WebGPU backend (a software adapter, SwiftShader, in a headless browser without
    a GPU); skipped where the browser offers no adapter at all."""
    result = runner.invoke(app, ["bundle", "web", str(trained / "bundle"), "--out", str(tmp_path / "site"), "--vendor", str(NODE_MODULES), "--webgpu", "--variant", "fp32"])
    assert result.exit_code == 0, result.output
    with served(tmp_path / "site") as url:
        probe = _in_chromium(
            f"""
await page.goto({json.dumps(url + "index.html")});
console.log(JSON.stringify(await page.evaluate(async () => Boolean(navigator.gpu && (await navigator.gpu.requestAdapter())))));
""",
            args=("--enable-unsafe-webgpu", "--enable-features=Vulkan"),
        )
        if not json.loads(probe):
            pytest.skip("this browser offers no WebGPU adapter")
        done = subprocess.run(["node", "check.mjs", url, "--backend", "webgpu", "--json", str(tmp_path / "check.json")], capture_output=True, text=True, cwd=WEB_EXAMPLE, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "model.onnx on webgpu: logits within" in done.stdout and "WebGPU adapter" in done.stdout
