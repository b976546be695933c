"""Use an mitp bundle with onnxruntime, numpy, Pillow and tokenizers alone (no mitp, no PyTorch),
following the rules written in its bundle.json.

    python examples/onnx_predict.py BUNDLE IMAGE "caption" [model.int8.onnx]
"""

import html
import json
import re
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps
from tokenizers import Tokenizer

bundle, image_path, caption = sys.argv[1:4]
contract = json.load(open(f"{bundle}/bundle.json"))
model_file = sys.argv[4] if len(sys.argv) > 4 else contract["models"]["fp32"]["file"]
# CUDA where onnxruntime-gpu can start it (falling back to CPU by itself), else CPU.
providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
if "CUDAExecutionProvider" in providers:
    ort.preload_dlls()  # the CUDA / cuDNN libraries that pip installed (onnxruntime-gpu[cuda,cudnn])
session = ort.InferenceSession(f"{bundle}/{model_file}", providers=providers)

# Image (contract["image"]): EXIF orientation, 16-bit -> high byte, alpha on white, then CLIP's resize and crop.
rules, image = contract["image"], ImageOps.exif_transpose(Image.open(image_path))
if image.mode in ("I;16", "I;16B", "I;16L", "I"):
    image = Image.fromarray((np.asarray(image).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)).convert("RGB")
elif image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
    rgba = np.asarray(image.convert("RGBA"), dtype=np.int32)
    image = Image.fromarray(((rgba[..., :3] * rgba[..., 3:] + 255 * (255 - rgba[..., 3:]) + 127) // 255).astype(np.uint8))
image = image.convert("RGB")
size, (w, h) = rules["size"], image.size
image = image.resize((size, int(size * h / w)) if w <= h else (int(size * w / h), size), Image.Resampling.BICUBIC)
left, top = (image.width - size) // 2, (image.height - size) // 2
crop = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / np.float32(255)
mean, std = (np.asarray(rules["normalize"][k], dtype=np.float32) for k in ("mean", "std"))
pixels = ((crop - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)

# Text (contract["tokenizer"]): clean as CLIP does, then the bundle's tokenizer, padded and truncated.
text = re.sub(r"\s+", " ", html.unescape(html.unescape(caption))).strip()
tok, t = Tokenizer.from_file(f"{bundle}/{contract['tokenizer']['file']}"), contract["tokenizer"]
tok.enable_truncation(t["max_length"])
tok.enable_padding(length=t["max_length"], pad_id=t["pad_token_id"])
encoding = tok.encode(text)
ids, mask = np.array([encoding.ids], dtype=np.int64), np.array([encoding.attention_mask], dtype=np.int64)

logits = session.run(["logits"], {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask})[0][0]
labels = contract["labels"]  # labels[i] is the class of logits[i]
if contract["decision"]["rule"] == "sigmoid-threshold":  # multi-label: a sigmoid per label
    probs = 1 / (1 + np.exp(-logits))
    predicted = [label for label, p in zip(labels, probs, strict=True) if p >= contract["decision"]["threshold"]]
else:  # single-label: softmax, argmax
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    predicted = [labels[int(probs.argmax())]]
print(json.dumps({"labels": predicted, "scores": dict(zip(labels, probs.tolist(), strict=True))}))
