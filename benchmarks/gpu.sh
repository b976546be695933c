#!/usr/bin/env bash
# Every figure still owed to a GPU (BENCHMARKS.md, "Still to measure on a GPU"), in one script that fits in
# about 12 minutes on one H100/H200, each step under its own time limit, writing one Markdown file:
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # default: benchmarks/out; prints the file at the end
#
# Needs the project installed with a CUDA torch and the gpu extra (python -m pip install -e ".[gpu,train,serve,dev]")
# and no network: the backbones are presets with random weights (the same FLOPs and memory as OpenAI's).
# Steps: bf16 training per setting on ViT-L/14 against the naive path (samples/s, MFU, training and
# evaluation peak memory apart); evaluation throughput; the data loader on this machine's CPUs against the
# step rate; onnxruntime CUDA fp32 and fp16 against PyTorch CUDA; one against two training processes on one
# GPU; a two-process accelerate run where there are two GPUs; serving a ViT-L/14 bundle with and without
# batching; the cost model from the measured rates.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/out}"
mkdir -p "$out"
report="$out/gpu-figures.md"
started=$SECONDS
section() { printf '\n## %s (started at %d s)\n\n' "$1" "$((SECONDS - started))" | tee -a "$report"; }
# step SECONDS CMD...: run one measurement under a time limit; its output goes to the report, a failure is noted
step() {
    local limit=$1
    shift
    echo "\$ $*" | tee -a "$report"
    if ! timeout "$limit" "$@" 2>"$out/last-stderr.txt" | tee -a "$report"; then
        printf '\n(failed or over %d s: %s)\n' "$limit" "$(tail -n 3 "$out/last-stderr.txt" | tr '\n' ' ')" | tee -a "$report"
    fi
}

{
    echo "# mitp GPU figures, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    python -c 'import torch, onnxruntime as ort; print("torch", torch.__version__, "cuda", torch.version.cuda, "| onnxruntime", ort.__version__, ort.get_available_providers())' 2>&1
    echo "$(nproc) CPUs; mitp $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo '```'
} | tee "$report"
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || { echo "no CUDA device: nothing to measure" | tee -a "$report"; exit 1; }
gpus=$(python -c 'import torch; print(torch.cuda.device_count())')

section "Training on ViT-L/14, bf16, every setting against the naive path (train_efficiency.py)"
step 240 python benchmarks/train_efficiency.py --backbone preset:vit-l-14 --steps 10 \
    --settings mitp,mitp-small,mlp-interaction,prompts-only,p-clip,linear-probe --json-out "$out/train.json"

section "The data loader on this machine's CPUs (loader.py; compare with the step rates above)"
step 60 python benchmarks/loader.py --images 200 --workers 0,4,8 --repeats 2

section "Inference: onnxruntime CUDA fp32/fp16 against PyTorch CUDA (onnx_inference.py)"
step 150 python benchmarks/onnx_inference.py --backbone preset:vit-l-14 --batch 1 --repeats 20

section "One against two training processes on one GPU (samples/s of MITP-base each)"
one() { python benchmarks/train_efficiency.py --backbone preset:vit-l-14 --steps 10 --settings mitp --_child mitp:mitp; }
step 60 one
( one > "$out/two-a.json" & one > "$out/two-b.json" & wait ) 2>>"$out/last-stderr.txt"
python - "$out" <<'PY' | tee -a "$report"
import json, sys
rows = [json.loads(open(f"{sys.argv[1]}/two-{x}.json").read().splitlines()[-1]) for x in "ab"]
print("two processes: " + " + ".join(f"{r['samples_per_s']:.1f}" for r in rows) + f" = {sum(r['samples_per_s'] for r in rows):.1f} samples/s")
PY

if [ "$gpus" -gt 1 ]; then
    section "A two-process accelerate run ($gpus GPUs)"
    step 120 accelerate launch --num_processes 2 -m mitp.cli train --config config.yaml --dataset synthetic \
        --setting mitp --backbone preset:vit-b-16 --max-steps 20 --epochs 1 --out "$out/ddp-run" --no-progress
fi

section "Serving a ViT-L/14 bundle (random weights) on the CUDA provider: 1, 8, 64 clients (serve.py)"
vitl="$out/vitl"
mkdir -p "$vitl"
cat > "$vitl/config.yaml" <<'YAML'
backbone: preset:vit-l-14
train: {num_workers: 0, eval_batch_size: 4}
datasets:
  synthetic: {task: single-label, source: synthetic, batch_size: 2, prompt_length: 3, best_layers: [4, 5, 6], small_layers: [6],
              templates: ["a photo of {}."], epochs: 1, lr: 3.0e-3, synthetic: {n_colours: 4, n_words: 4, sizes: {train: 4, val: 4, test: 4}}}
settings: {mitp: {variant: mitp, layers: best}}
YAML
step 120 mitp train -c "$vitl/config.yaml" -d synthetic -s mitp --out "$vitl/run" --no-progress
step 150 mitp export --checkpoint "$vitl/run" --out "$vitl/bundle" --fp16
step 120 python benchmarks/serve.py "$vitl/bundle" --variant fp16 --provider cuda --requests 512 --clients 1,8,64
step 120 python benchmarks/serve.py "$vitl/bundle" --variant fp16 --provider cuda --requests 256 --clients 64 --max-batch-size 1

section "The paper's cost from the measured step rates (cost_model.py --measured)"
step 60 python benchmarks/cost_model.py --measured "$out/train.json"

printf '\nTotal: %d s\n' "$((SECONDS - started))" | tee -a "$report"
echo "written: $report"
