"""Many task bundles of one backbone in one `mitp serve`: memory, speed, and what a release without it weighs.

For the bundles given (exported from the same frozen CLIP), this starts `mitp serve` with the first bundle
alone, then with all of them, and reads the server's resident memory once every model is ready (and after
one request to each, which allocates onnxruntime's buffers). It then times one pair and a batch of 16 on the
first bundle in this process, with its own session (pre-packed weights, as served alone) and with a
session that takes the backbone from a shared cache (as served beside the others). Last, the bytes of a
bundle against its trained part alone (what `mitp release --without-backbone` ships).

    python benchmarks/shared_backbone.py vitl/food vitl/imdb vitl/snli --variant int8
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import free_port, machine, pairs_of  # noqa: E402


def resident_mb(pid: int) -> float:
    line = next(row for row in Path(f"/proc/{pid}/status").read_text().splitlines() if row.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def served_memory(bundles: list[Path], variant: str) -> float:
    """The server's resident MB with `bundles` ready and each called once."""
    import numpy as np
    import tritonclient.http as httpclient

    port = free_port()
    names = [f"m{i}" for i in range(len(bundles))]
    command = [sys.executable, "-m", "mitp.cli", "serve", *map(str, bundles), *[a for n in names for a in ("--name", n)], "--port", str(port), "--variant", variant, "--provider", "cpu"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=600, network_timeout=600)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"mitp serve exited {server.returncode}")
            try:
                if client.is_server_ready():
                    break
            except Exception:
                pass
            time.sleep(1)
        image, text = pairs_of(bundles[0])[0]
        for name in names:
            a = httpclient.InferInput("image", [1], "BYTES")
            a.set_data_from_numpy(np.array([image], dtype=object))
            b = httpclient.InferInput("text", [1], "BYTES")
            b.set_data_from_numpy(np.array([text.encode()], dtype=object))
            client.infer(name, [a, b])
        return resident_mb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)


def call_ms(bundle: Path, variant: str, shared: bool, rows: int, calls: int = 5) -> float:
    """Milliseconds per call of `rows` pairs, with the session's own weights or the shared cache's."""
    import numpy as np

    from mitp.runtime.predict import Predictor
    from mitp.runtime.weights import TensorCache

    predictor = Predictor(bundle, "cpu", variant, TensorCache() if shared else None)
    size = predictor.info.image_size
    pixels = np.random.default_rng(0).standard_normal((rows, 3, size, size)).astype(np.float32)
    ids, mask, _ = predictor.tokenizer.encode(["a photo of something"] * rows)
    predictor.logits(pixels, ids, mask)  # warm-up
    started = time.perf_counter()
    for _ in range(calls):
        predictor.logits(pixels, ids, mask)
    return 1000 * (time.perf_counter() - started) / calls


def sizes(bundle: Path) -> tuple[int, int]:
    contract = json.loads((bundle / "bundle.json").read_text())
    backbone = {entry["file"] for entry in contract.get("backbone_weights", {}).values()}
    files = [p for p in bundle.rglob("*") if p.is_file() and ".mitp-output" not in p.parts]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_size for p in files if p.name not in backbone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--variant", default="fp32")
    args = parser.parse_args()
    files = {json.loads((b / "bundle.json").read_text()).get("backbone_weights", {}).get(args.variant, {}).get("file") for b in args.bundles}
    print(f"machine: {machine()}")
    print(f"bundles: {', '.join(map(str, args.bundles))} ({args.variant}); backbone file(s): {', '.join(map(str, files))}")
    one, many = served_memory(args.bundles[:1], args.variant), served_memory(args.bundles, args.variant)
    print(f"mitp serve, resident memory: 1 bundle {one:,.0f} MB; {len(args.bundles)} bundles {many:,.0f} MB ({many / one:.2f}x)")
    for rows in (1, 16):
        alone, shared = call_ms(args.bundles[0], args.variant, False, rows), call_ms(args.bundles[0], args.variant, True, rows)
        print(f"batch {rows}: {alone:,.0f} ms a call with its own pre-packed weights, {shared:,.0f} ms with the shared backbone ({shared / alone:.2f}x)")
    whole, own = sizes(args.bundles[0])
    print(f"bytes: the bundle {whole / 1e6:,.1f} MB; its trained part alone (a release without the backbone) {own / 1e6:,.1f} MB")


if __name__ == "__main__":
    main()
