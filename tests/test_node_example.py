"""The Node.js example (examples/node) against Python: the bundle's test vectors, and Pillow's resize.

Runs where Node.js and the example's packages are installed (CI installs them with `npm ci`); skipped
elsewhere, since the test suite itself needs no network."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mitp.runtime.preprocess import clip_crop, load_image

NODE_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_EXAMPLE / "node_modules").is_dir(),
    reason="Node.js example not installed (cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci)",
)


def test_node_port_crops_exactly_like_pillow(tmp_path):
    """Random images across down- and up-scaling, odd sizes and aspect ratios up to 60:1."""
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (3, 180), (180, 3), (31, 33), (224, 224), (225, 224), (640, 480), (480, 641), (1000, 17), (97, 513)]
    shapes += [tuple(rng.integers(1, 700, 2)) for _ in range(20)]
    cases = []
    for i, (height, width) in enumerate(shapes):
        if max(height, width) > 60 * min(height, width):
            continue
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        for size in (32, 224):
            cases.append({"path": str(path), "size": size, "sha": hashlib.sha256(clip_crop(load_image(path), size).tobytes()).hexdigest()})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = f"""
import {{ readFileSync }} from "node:fs";
import {{ createHash }} from "node:crypto";
import {{ clipCrop, decodeImage }} from "{NODE_EXAMPLE / 'mitp.mjs'}";
const cases = JSON.parse(readFileSync("{tmp_path / 'cases.json'}", "utf8"));
const decode = {{ max_pixels: 1e9, max_aspect_ratio: 64 }};
const out = [];
for (const c of cases) out.push(createHash("sha256").update(clipCrop(await decodeImage(c.path, decode), c.size)).digest("hex"));
console.log(JSON.stringify(out));
"""
    done = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, cwd=NODE_EXAMPLE, timeout=300)
    assert done.returncode == 0, done.stderr
    node = json.loads(done.stdout)
    mismatched = [(c["path"], c["size"]) for c, sha in zip(cases, node, strict=True) if sha != c["sha"]]
    assert not mismatched and len(cases) >= 50


def test_node_example_passes_a_bundles_test_vectors(trained):
    done = subprocess.run(["node", "verify.mjs", str(trained / "bundle")], capture_output=True, text=True, cwd=NODE_EXAMPLE, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all test vectors pass" in done.stdout and done.stdout.count("ok ") >= 6 * 3 + 3
