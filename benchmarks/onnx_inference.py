"""ONNX (onnxruntime) against PyTorch eager for MITP inference, measured in the same run on this machine.

For a backbone (the stand-in folder, or a preset with random weights such as preset:vit-l-14) it builds
MITP with the config's food101 setting (random trainable weights: speed does not depend on training),
exports the graph with mitp's exporter, checks the logits agree, then times
  - latency at batch 1 (median over --repeats calls, after a warm-up), and
  - throughput at --batch (samples/s, median over --repeats calls),
for PyTorch eager and onnxruntime, on CPU (fp32 and the int8 variant) and, where present, on CUDA (fp32 and
the fp16 variant). Top-1 agreement of a variant means little with random weights, whose class logits are
nearly tied; the export report of a trained bundle measures it.
Optionally it also times whole `mitp predict` processes on a bundle (--predict-bundle).

    python benchmarks/onnx_inference.py --config workflow/profiles/demo/demo.yaml --dataset demo-food101 --backbone models/standin
    python benchmarks/onnx_inference.py --backbone preset:vit-l-14 --repeats 3 --batch 32
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (also builds onnxruntime's kernels / cuDNN plans)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(config: str, backbone: str, dataset: str, setting: str):
    from mitp.config import load_config, resolve_run
    from mitp.model.backbone import load_backbone
    from mitp.train.factory import build_model

    run = resolve_run(load_config(config), dataset, setting)
    bb = load_backbone(backbone)
    model = build_model(run, bb, [f"class {i}" for i in range(run.dataset.num_classes)]).eval()
    return model, bb


def inputs(bb, batch: int):
    import numpy as np

    size = bb.clip.config.vision_config.image_size
    rng = np.random.default_rng(0)
    ids, mask = bb.tokenizer(["a photo of a red dish with a long caption that has many words in it"] * batch)
    return {"pixel_values": rng.normal(0, 1, (batch, 3, size, size)).astype(np.float32), "input_ids": ids, "attention_mask": mask}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--backbone", default="preset:vit-l-14")
    parser.add_argument("--dataset", default="food101")
    parser.add_argument("--setting", default="mitp")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch and onnxruntime intra-op threads; 0 = all cores")
    parser.add_argument("--predict-bundle", default=None, help="also time whole `mitp predict` processes on this bundle")
    parser.add_argument("--predict-image", default=None)
    parser.add_argument("--json", dest="json_out", default=None, help="write the results here too")
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch

    from mitp.ship.export import ExportGraph, write_fp16, write_int8, write_onnx

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    model, bb = build(args.config, args.backbone, args.dataset, args.setting)
    graph = ExportGraph(model).eval()
    one, many = inputs(bb, 1), inputs(bb, args.batch)
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {threads} threads, torch {torch.__version__}, onnxruntime {ort.__version__}",
        "config": args.config, "backbone": args.backbone, "dataset": args.dataset, "setting": args.setting, "batch": args.batch, "repeats": args.repeats,
    }
    cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
    if cuda:
        from mitp.runtime.predict import preload_cuda_libraries

        preload_cuda_libraries(ort)
    if torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name(0)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        start = time.perf_counter()
        write_onnx(graph, many, path)
        results["export_seconds"] = round(time.perf_counter() - start, 1)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        write_int8(path, Path(tmp) / "model.int8.onnx")
        sessions = {
            "cpu": ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]),
            "cpu-int8": ort.InferenceSession(str(Path(tmp) / "model.int8.onnx"), options, providers=["CPUExecutionProvider"]),
        }
        if cuda:
            sessions["cuda"] = ort.InferenceSession(str(path), options, providers=["CUDAExecutionProvider"])
            write_fp16(path, Path(tmp) / "model.fp16.onnx")
            sessions["cuda-fp16"] = ort.InferenceSession(str(Path(tmp) / "model.fp16.onnx"), options, providers=["CUDAExecutionProvider"])
            for name in ("cuda", "cuda-fp16"):  # onnxruntime falls back to CPU silently: never time that as CUDA
                if sessions[name].get_providers()[0] != "CUDAExecutionProvider":
                    raise SystemExit(f"onnxruntime could not start the CUDA provider for {name}: see README, GPU install")

        def torch_fn(batch, device):
            tensors = [torch.from_numpy(batch[k]).to(device) for k in ("pixel_values", "input_ids", "attention_mask")]

            def run():
                with torch.no_grad():
                    out = graph(*tensors)
                if device == "cuda":
                    torch.cuda.synchronize()
                return out

            return run

        with torch.no_grad():
            reference = graph(*(torch.from_numpy(many[k]) for k in ("pixel_values", "input_ids", "attention_mask"))).numpy()
        for name, session in sessions.items():
            got = session.run(["logits"], many)[0]
            agree = float((got.argmax(1) == reference.argmax(1)).mean())
            results[f"onnx_{name}_max_abs_diff"] = float(np.abs(got - reference).max())
            results[f"onnx_{name}_top1_agreement"] = agree
            results[f"onnx_{name}_latency_b1_ms"] = 1000 * timed(lambda s=session: s.run(["logits"], one), args.repeats)
            results[f"onnx_{name}_throughput"] = args.batch / timed(lambda s=session: s.run(["logits"], many), args.repeats)
        results["torch_cpu_latency_b1_ms"] = 1000 * timed(torch_fn(one, "cpu"), args.repeats)
        results["torch_cpu_throughput"] = args.batch / timed(torch_fn(many, "cpu"), args.repeats)
        if torch.cuda.is_available():
            graph.cuda()
            results["torch_cuda_latency_b1_ms"] = 1000 * timed(torch_fn(one, "cuda"), args.repeats)
            results["torch_cuda_throughput"] = args.batch / timed(torch_fn(many, "cuda"), args.repeats)
    for variant in ("cpu", "cpu-int8"):
        results[f"speedup_{variant}_latency_b1"] = results["torch_cpu_latency_b1_ms"] / results[f"onnx_{variant}_latency_b1_ms"]
        results[f"speedup_{variant}_throughput"] = results[f"onnx_{variant}_throughput"] / results["torch_cpu_throughput"]
    if "torch_cuda_latency_b1_ms" in results and "onnx_cuda_latency_b1_ms" in results:
        for variant in ("cuda", "cuda-fp16"):
            results[f"speedup_{variant}_latency_b1"] = results["torch_cuda_latency_b1_ms"] / results[f"onnx_{variant}_latency_b1_ms"]

    if args.predict_bundle:
        command = [str(Path(sys.executable).with_name("mitp")), "predict", args.predict_image, "a tasty red dish", "--model", args.predict_bundle, "--json"]
        walls = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
        results["mitp_predict_process_wall_s"] = statistics.median(walls)

    for key, value in results.items():
        print(f"{key:36s} {value:.4g}" if isinstance(value, float) else f"{key:36s} {value}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
