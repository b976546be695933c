"""A bundle in headless Chromium (onnxruntime-web, wasm) against onnxruntime and PyTorch eager, one run.

For each bundle it builds the site (`mitp bundle web --vendor examples/web/node_modules`), serves it
cross-origin isolated, and has examples/web/check.mjs run verify.html?bench=N: every test vector is checked
first, then N timed model calls at batch 1 on the first vector per variant (median, after a warm-up). On the
same inputs (the first vector, preprocessed by the Python runtime) it times onnxruntime's CPU provider with
the browser's thread count and with all cores, and PyTorch eager when the bundle's run folder is given.
Model calls only: decoding, resizing and tokenizing are the page's `ms.image` / `ms.caption`, apart.

    python benchmarks/browser.py results/demo/bundles/demo-food101/mitp --run results/demo/runs/demo-food101/l2-3-4-cos/seed0
    python benchmarks/browser.py BUNDLE [BUNDLE ...] [--run RUN ...] --repeats 20 --json out.json

Needs Node.js, examples/web's packages (npm ci) and Chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path

from onnx_inference import timed  # the median of repeated calls after a warm-up, as the other inference figures

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "examples" / "web"


def browser_times(bundle: Path, repeats: int, scratch: Path, threads: int) -> dict:
    from mitp.runtime.site import build_site, site_server

    site = scratch / bundle.parent.name
    build_site(bundle, site, node_modules=WEB / "node_modules")
    server = site_server(site, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    report = scratch / "check.json"
    try:
        done = subprocess.run(
            ["node", "check.mjs", f"http://127.0.0.1:{server.server_address[1]}/", "--bench", str(repeats), "--threads", str(threads), "--json", str(report)],
            cwd=WEB, capture_output=True, text=True, timeout=3600,
        )
    finally:
        server.shutdown()
        server.server_close()
    if done.returncode != 0:
        raise SystemExit(f"the browser check failed on {bundle}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    result = json.loads(report.read_text())
    return {"browser": result["browser"], **result["sites"][0]}


def first_vector_inputs(bundle: Path) -> dict:
    import numpy as np

    from mitp.runtime.preprocess import clip_crop, load_image, normalize
    from mitp.runtime.tokenizer import load_tokenizer_file

    contract = json.loads((bundle / "bundle.json").read_text())
    vector = json.loads((bundle / contract["test_vectors"]).read_text())["vectors"][0]
    image = contract["image"]
    pixels = normalize(clip_crop(load_image(bundle / vector["image"]), image["size"]), tuple(image["normalize"]["mean"]), tuple(image["normalize"]["std"]))
    ids, mask = load_tokenizer_file(bundle / contract["tokenizer"]["file"])([vector["text"]])
    return {"pixel_values": np.ascontiguousarray(pixels.reshape(1, *pixels.shape[-3:]), dtype=np.float32), "input_ids": ids, "attention_mask": mask}


def onnxruntime_times(bundle: Path, inputs: dict, variants: list[str], threads: list[int], repeats: int) -> dict:
    import onnxruntime as ort

    contract = json.loads((bundle / "bundle.json").read_text())
    out = {}
    for variant in variants:
        for count in threads:
            options = ort.SessionOptions()
            options.intra_op_num_threads = count
            session = ort.InferenceSession(str(bundle / contract["models"][variant]["file"]), options, providers=["CPUExecutionProvider"])
            out[f"{variant}/{count}"] = 1000 * timed(lambda s=session: s.run(None, inputs), repeats)
    return out


def torch_time(run: Path, inputs: dict, repeats: int) -> tuple[float, int]:
    import torch

    from mitp.ship.export import ExportGraph
    from mitp.train.factory import load_trained

    graph = ExportGraph(load_trained(run)[0]).eval()
    feeds = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.inference_mode():
        return 1000 * timed(lambda: graph(**feeds), repeats), torch.get_num_threads()


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--run", action="append", type=Path, default=[], help="the run folder of each bundle, in order (PyTorch eager)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the browser's wasm threads (default: all cores; the page's own default is half)")
    parser.add_argument("--json", dest="json_out", type=Path, default=None)
    args = parser.parse_args()

    import onnxruntime

    rows, results = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for i, bundle in enumerate(args.bundles):
            browser = browser_times(bundle, args.repeats, Path(scratch), args.threads)
            inputs = first_vector_inputs(bundle)
            threads = sorted({browser["threads"] or 1, os.cpu_count() or 1})
            variants = [b["variant"] for b in browser["bench"]]
            native = onnxruntime_times(bundle, inputs, variants, threads, args.repeats)
            eager = torch_time(args.run[i], inputs, args.repeats) if i < len(args.run) else None
            results.append({"bundle": str(bundle), "browser": browser, "onnxruntime_ms": native, "torch_ms": eager})
            for b in browser["bench"]:
                variant, count = b["variant"], b["threads"]
                ours = " / ".join(f"{native[variant + '/' + str(t)]:.2f} ms ({t})" for t in threads)
                torch_cell = f"{eager[0]:.2f} ms ({eager[1]})" if eager and variant == "fp32" else "-"
                rows.append(f"| {bundle.parent.name} | {variant} | {b['median_ms']:.2f} ms ({count}) | {ours} | {torch_cell} |")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; {results[0]['browser']['browser']}; onnxruntime {onnxruntime.__version__} (Python);"
          f" batch 1, median of {args.repeats} model calls after a warm-up; threads in brackets")
    print("| bundle | variant | browser, onnxruntime-web wasm | onnxruntime CPU | PyTorch eager (fp32) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    for result in results:  # how close the browser's logits came to the test vectors' (Python's)
        for check in result["browser"]["results"]:
            if "logits" in check["what"]:
                print(f"{Path(result['bundle']).parent.name}: {check['what']}: {check['detail']} ({'ok' if check['ok'] else 'FAILED'})")
    if args.json_out:
        args.json_out.write_text(json.dumps({"machine": cpu_name(), "cores": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
