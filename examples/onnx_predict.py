"""Use an mitp bundle with onnxruntime, numpy, Pillow and tokenizers alone (no mitp, no PyTorch).

    python examples/onnx_predict.py BUNDLE IMAGE "caption" [model.int8.onnx]
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image
from tokenizers import Tokenizer

bundle, image_path, caption = sys.argv[1:4]
model_file = sys.argv[4] if len(sys.argv) > 4 else "model.onnx"  # or a variant: model.fp16.onnx, model.int8.onnx
# CUDA where onnxruntime-gpu can start it (falling back to CPU by itself), else CPU.
providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
if "CUDAExecutionProvider" in providers:
    ort.preload_dlls()  # the CUDA / cuDNN libraries that pip installed (onnxruntime-gpu[cuda,cudnn])
session = ort.InferenceSession(f"{bundle}/{model_file}", providers=providers)
meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}

# Image: shorter side to `size` (bicubic), centre crop, scale to [0, 1], normalise; NCHW float32.
size, image = meta["image"]["size"], Image.open(image_path).convert("RGB")
w, h = image.size
image = image.resize((size, int(size * h / w)) if w <= h else (int(size * w / h), size), Image.Resampling.BICUBIC)
left, top = (image.width - size) // 2, (image.height - size) // 2
pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
pixels = ((pixels - meta["image"]["mean"]) / meta["image"]["std"]).transpose(2, 0, 1)[None].astype(np.float32)

# Text: the bundle's tokenizer, padded and truncated to max_length.
tok = Tokenizer.from_file(f"{bundle}/tokenizer.json")
length, pad = meta["tokenizer"]["max_length"], meta["tokenizer"]["pad_token_id"]
tok.enable_truncation(length)
tok.enable_padding(length=length, pad_id=pad)
encoding = tok.encode(caption)
ids = np.array([encoding.ids], dtype=np.int64)
mask = np.array([encoding.attention_mask], dtype=np.int64)

logits = session.run(["logits"], {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask})[0][0]
if meta["decision"]["rule"] == "sigmoid-threshold":  # multi-label: a sigmoid per label
    probs = 1 / (1 + np.exp(-logits))
    predicted = [label for label, p in zip(meta["labels"], probs, strict=True) if p >= meta["decision"]["threshold"]]
else:  # single-label: softmax, argmax
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    predicted = [meta["labels"][int(probs.argmax())]]
print(json.dumps({"labels": predicted, "scores": dict(zip(meta["labels"], probs.tolist(), strict=True))}))
