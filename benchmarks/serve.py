"""`mitp serve` under load, against the same requests sent to one onnxruntime session in-process.

Starts `mitp serve BUNDLE` on a loopback port, then for each client count drives it from a separate load
process (tritonclient over HTTP, each client sending its next request when the last one returns, one
image-caption pair per request) for a fixed number of requests, and prints pairs/s, p50 and p99 latency and
the server's mean batch. The references, in this process on the same pairs: one session called one request
at a time (decode, tokenize, run), and the same session at the server's batch size on pre-decoded inputs
(what the server can reach at best). The load process shares the machine with the server: on a 2-core
machine both compete for the cores.

    python benchmarks/serve.py results/demo/bundles/demo-food101/mitp --requests 400
    python benchmarks/serve.py vitl/bundle --variant int8 --requests 96 --clients 1,8,64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path


def pairs_of(bundle: Path) -> list[tuple[bytes, str]]:
    """The bundle's own test vectors: (image file bytes, caption)."""
    vectors = json.loads((bundle / "test_vectors" / "vectors.json").read_text())["vectors"]
    return [((bundle / v["image"]).read_bytes(), v["text"]) for v in vectors]  # image: a path inside the bundle


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def in_process(bundle: Path, variant: str, provider: str, pairs: list[tuple[bytes, str]], requests: int, batch: int) -> dict[str, float]:
    import numpy as np

    from mitp.runtime.predict import Predictor
    from mitp.runtime.preprocess import load_image_bytes, preprocess_image

    predictor = Predictor(bundle, provider, variant)
    info = predictor.info

    def decode(pair: tuple[bytes, str]):
        pixels = preprocess_image(load_image_bytes(pair[0]), info.image_size, *info.mean_std)[None]
        ids, mask, _ = predictor.tokenize([pair[1]])
        return pixels, ids, mask

    predictor.logits(*decode(pairs[0]))  # warm-up
    latencies = []
    started = time.perf_counter()
    for i in range(requests):
        t = time.perf_counter()
        predictor.logits(*decode(pairs[i % len(pairs)]))
        latencies.append(time.perf_counter() - t)
    one_at_a_time = requests / (time.perf_counter() - started)
    decoded = [decode(pairs[i % len(pairs)]) for i in range(batch)]
    pixels, ids, mask = (np.concatenate([d[k] for d in decoded]) for k in range(3))
    predictor.logits(pixels, ids, mask)  # warm-up at this shape
    calls = max(2, requests // batch)
    started = time.perf_counter()
    for _ in range(calls):
        predictor.logits(pixels, ids, mask)
    batched = calls * batch / (time.perf_counter() - started)
    return {"one_at_a_time": one_at_a_time, "p50": statistics.median(latencies), "p99": percentile(latencies, 99), "batched": batched}


def load(url: str, model: str, clients: int, requests: int, pairs_file: str) -> None:
    """The load process: `clients` closed-loop clients share `requests`; prints its figures as JSON."""
    import gevent
    import numpy as np
    import tritonclient.http as httpclient

    pairs = [(bytes.fromhex(p["image"]), p["text"]) for p in json.loads(Path(pairs_file).read_text())]
    client = httpclient.InferenceServerClient(url, concurrency=clients, connection_timeout=600, network_timeout=600)

    def inputs(i: int) -> list:
        image, text = pairs[i % len(pairs)]
        a = httpclient.InferInput("image", [1], "BYTES")
        a.set_data_from_numpy(np.array([image], dtype=object))
        b = httpclient.InferInput("text", [1], "BYTES")
        b.set_data_from_numpy(np.array([text.encode()], dtype=object))
        return [a, b]

    client.infer(model, inputs(0))  # warm-up
    latencies: list[float] = []
    failures = 0

    def one_client(index: int) -> None:
        nonlocal failures
        for i in range(index, requests, clients):
            t = time.perf_counter()
            try:
                client.infer(model, inputs(i))
            except Exception:
                failures += 1
                continue
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    gevent.joinall([gevent.spawn(one_client, c) for c in range(clients)])
    seconds = time.perf_counter() - started
    print(json.dumps({"pairs_per_s": len(latencies) / seconds, "p50": statistics.median(latencies), "p99": percentile(latencies, 99), "failures": failures}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch_means(url: str, model: str) -> tuple[float, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://{url}/metrics", timeout=30).read().decode()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("mitp_batch_rows_") and f'model="{model}"' in line}
    return values.get(f'mitp_batch_rows_sum{{model="{model}"}}', 0.0), values.get(f'mitp_batch_rows_count{{model="{model}"}}', 0.0)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    import onnxruntime

    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, nargs="?")
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--provider", default="cpu", help="cpu | cuda, for the server and the in-process references alike")
    parser.add_argument("--requests", type=int, default=400, help="requests (one pair each) per client count")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    parser.add_argument("--load", nargs=5, metavar=("URL", "MODEL", "CLIENTS", "REQUESTS", "PAIRS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        url, model, clients, requests, pairs_file = args.load
        load(url, model, int(clients), int(requests), pairs_file)
        return
    if args.bundle is None:
        parser.error("give a bundle")
    bundle = args.bundle.resolve()
    pairs = pairs_of(bundle)
    print(f"machine: {machine()}")
    print(f"bundle: {bundle} ({args.variant}, {args.provider}), {len(pairs)} pairs (its test vectors) cycled; {args.requests} requests of one pair per client count")
    reference = in_process(bundle, args.variant, args.provider, pairs, args.requests, args.max_batch_size)
    print(f"in-process, one request at a time: {reference['one_at_a_time']:.1f} pairs/s, p50 {1000 * reference['p50']:.1f} ms, p99 {1000 * reference['p99']:.1f} ms")
    print(f"in-process, batch {args.max_batch_size} pre-decoded: {reference['batched']:.1f} pairs/s")

    pairs_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-bench-{os.getpid()}.json"
    pairs_file.write_text(json.dumps([{"image": image.hex(), "text": text} for image, text in pairs]))
    port = free_port()
    url = f"127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mitp.cli", "serve", str(bundle), "--name", "bench", "--port", str(port), "--variant", args.variant, "--provider", args.provider,
         "--max-batch-size", str(args.max_batch_size), "--max-delay-ms", str(args.max_delay_ms), "--max-queue", "4096"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        import urllib.request

        deadline = time.monotonic() + 600
        while True:
            try:
                if urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=5).status == 200:
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("mitp serve did not get ready") from None
                time.sleep(0.5)
        print(f"server: mitp serve --max-batch-size {args.max_batch_size} --max-delay-ms {args.max_delay_ms:g}, load from a separate process")
        print("| clients | pairs/s | vs batched in-process | p50 (ms) | p99 (ms) | p99 / p50 | mean batch | failures |")
        print("|---|---|---|---|---|---|---|---|")
        for clients in [int(c) for c in args.clients.split(",")]:
            before = batch_means(url, "bench")
            out = subprocess.run([sys.executable, __file__, "--load", url, "bench", str(clients), str(args.requests), str(pairs_file)], capture_output=True, text=True, check=True)
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            after = batch_means(url, "bench")
            calls = after[1] - before[1]
            mean_batch = (after[0] - before[0]) / calls if calls else float("nan")
            print(
                f"| {clients} | {figures['pairs_per_s']:.1f} | {figures['pairs_per_s'] / reference['batched']:.0%} | {1000 * figures['p50']:.1f} | "
                f"{1000 * figures['p99']:.1f} | {figures['p99'] / figures['p50']:.2f} | {mean_batch:.1f} | {figures['failures']} |"
            )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        pairs_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
