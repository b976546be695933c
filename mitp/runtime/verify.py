"""Test vectors that let any implementation of the bundle check itself, and `mitp bundle verify`.

Export writes `test_vectors/vectors.json` with a few real test pairs and a few pairs that exercise the
image and caption rules (an EXIF-rotated JPEG, a PNG with transparency, a 16-bit greyscale PNG, a caption
with HTML entities and runs of whitespace). Each vector holds the image file, the caption, the expected
token ids and attention mask, the expected uint8 crop (and its sha256), the sha256 of the expected float32
pixels, and the expected logits of every model variant at batch 1.

`verify_bundle` checks a bundle the way a port would be checked: bundle.json against each model's
metadata, the tokenizer and the preprocessing against the expected ids and pixels, and each model on the
expected inputs against the expected logits. Every check says what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .bundle import (
    BACKBONE_KEY,
    CONTRACT_FILE,
    MAX_TOKENIZER_BYTES,
    MAX_VECTORS_BYTES,
    REPORT_FILE,
    VARIANT_FILES,
    VECTORS_DIR,
    VECTORS_FILE,
    BundleError,
    bundle_file,
    external_data,
    read_contract,
)
from .preprocess import clip_crop, load_image, normalize
from .tokenizer import ClipTokenizer, load_tokenizer_file

REAL_VECTORS = 3
# |logit - expected| allowed per variant: fp32 differs across CPUs and onnxruntime builds only in the last
# bits (scaled by CLIP's 100); fp16 and int8 runs on other hardware round differently.
TOLERANCE = {"fp32": 1e-3, "fp16": 0.5, "int8": 0.5}


@dataclass(frozen=True)
class VectorSource:
    name: str
    image: Path
    text: str


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def vector_sources(pairs: list[tuple[Path, str]], scratch: Path) -> list[VectorSource]:
    """The first real pairs, plus pairs made from the first image that exercise the decoding rules."""
    sources = [VectorSource(f"real-{i}", Path(image), text) for i, (image, text) in enumerate(pairs[:REAL_VECTORS])]
    scratch.mkdir(parents=True, exist_ok=True)
    first, text = pairs[0]
    rgb = np.asarray(load_image(first))  # (H, W, 3)
    height, width = rgb.shape[:2]
    ramp = np.linspace(0.4, 1.0, width, dtype=np.float32)[None, :, None]
    asymmetric = (rgb * ramp).astype(np.uint8)[:, : max(1, width * 2 // 3)]  # not square, not mirror-symmetric

    rotated = Image.fromarray(asymmetric)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phone cameras write
    rotated.save(scratch / "exif-rotated.jpg", exif=exif.tobytes(), quality=95)
    sources.append(VectorSource("exif-rotated", scratch / "exif-rotated.jpg", text))

    alpha = np.linspace(0, 255, width, dtype=np.float32).round().astype(np.uint8)[None, :, None].repeat(height, axis=0)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2)).save(scratch / "alpha.png")  # transparent on the left
    messy = "  " + text.replace(" ", " \n ") + "  &amp;#39; &lt;b&gt; "  # entities and whitespace runs: cleaned first
    sources.append(VectorSource("alpha-on-white", scratch / "alpha.png", messy))

    grey = rgb.astype(np.uint16).mean(axis=2).astype(np.uint16)
    low = (np.arange(height * width, dtype=np.uint16).reshape(height, width) * 37) % 256  # low bytes that rounding would use
    Image.fromarray(grey * 256 + low).save(scratch / "grey16.png")
    sources.append(VectorSource("grey-16-bit", scratch / "grey16.png", text))
    return sources


def write_test_vectors(
    bundle: Path, sources: list[VectorSource], tokenizer: ClipTokenizer, size: int, variants: list[str]
) -> list[dict[str, Any]]:
    """Copy the vectors' images into the bundle and write what every step must produce for them."""
    import onnxruntime as ort

    folder = Path(bundle) / VECTORS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    sessions = {v: ort.InferenceSession(str(Path(bundle) / VARIANT_FILES[v]), providers=["CPUExecutionProvider"]) for v in variants}
    vectors = []
    for i, source in enumerate(sources):
        image_file = f"{i}-{source.name}{source.image.suffix.lower()}"
        shutil.copyfile(source.image, folder / image_file)
        crop = clip_crop(load_image(folder / image_file), size)  # (S, S, 3) uint8
        (folder / f"{i}-{source.name}.crop.rgb").write_bytes(crop.tobytes())
        pixels = normalize(crop)[None]  # (1, 3, S, S)
        ids, mask, _ = tokenizer.encode([source.text])
        feeds = {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask}
        vectors.append({
            "name": source.name,
            "image": f"{VECTORS_DIR}/{image_file}",
            "text": source.text,
            "input_ids": ids[0].tolist(),
            "attention_mask": mask[0].tolist(),
            "crop": f"{VECTORS_DIR}/{i}-{source.name}.crop.rgb",
            "crop_shape": [size, size, 3],
            "crop_sha256": sha256(crop),
            "pixels_sha256": sha256(pixels.astype("<f4")),
            "logits": {v: np.asarray(s.run(["logits"], feeds)[0][0], dtype=np.float32).tolist() for v, s in sessions.items()},
        })
    description = {
        "about": "Expected values for each step; run each model at batch 1 on the expected inputs.",
        "crop": "uint8 H x W x 3 (RGB), the resized and centre-cropped image before normalisation",
        "pixels_sha256": "sha256 of the float32 little-endian NCHW pixels (batch of 1)",
        "tolerance": TOLERANCE,
        "vectors": vectors,
    }
    (Path(bundle) / VECTORS_FILE).write_text(json.dumps(description, indent=1) + "\n")
    return vectors


def verify_bundle(bundle: Path, variants: list[str] | None = None, provider: str = "cpu", sessions: dict[str, Any] | None = None) -> list[Check]:
    """Every check of a bundle against its contract and test vectors; BundleError if it is not a bundle.
    `sessions`: a variant's session already open (a server's), checked instead of opening another."""
    bundle = Path(bundle)
    contract = read_contract(bundle)
    present = [v for v in contract.get("models", {}) if (bundle / VARIANT_FILES[v]).is_file()]
    chosen = variants or present
    checks = [Check("files", not set(contract.get("models", {})) - set(present), _missing_models(contract, present))]
    vectors = read_vectors(bundle, chosen)
    bundle_files(bundle, contract, chosen)  # every file it names a regular file inside it: no model read through a link out
    tokenizer_file = contract["tokenizer"].get("file") if isinstance(contract["tokenizer"], dict) else None
    tokenizer = load_tokenizer_file(bundle_file(bundle, tokenizer_file, "tokenizer file", MAX_TOKENIZER_BYTES))
    checks.append(_check_tokenizer(tokenizer, vectors["vectors"]))
    checks.append(_check_images(bundle, contract, vectors["vectors"]))
    for variant in chosen:
        from .predict import open_session
        from .weights import weights_of

        model = bundle_file(bundle, VARIANT_FILES[variant], "model")  # a link out of the bundle is refused
        if sessions and variant in sessions:
            session = sessions[variant]
        else:
            session, _, _ = open_session(model, provider, weights_of(bundle, contract, variant))
        checks.append(_check_metadata(session, contract, variant))
        checks.append(_check_model(session, bundle, contract, variant, vectors))
    return checks


def bundle_files(bundle: Path, contract: dict[str, Any], variants: list[str] | None = None) -> list[str]:
    """Every file the bundle names, for `variants` (default: all its models): the contract, the tokenizer,
    the models with their external data, the test vectors and the images and crops they name, and the export
    report; each checked to be a regular file inside the bundle. What a release or a site copies, and nothing else."""
    variants = list(contract.get("models", {})) if variants is None else variants
    tokenizer = contract["tokenizer"].get("file") if isinstance(contract["tokenizer"], dict) else None
    if not isinstance(tokenizer, str):
        raise BundleError(f"{Path(bundle) / CONTRACT_FILE}: tokenizer names no file, as `mitp export` writes it")
    names = [CONTRACT_FILE, tokenizer, VECTORS_FILE]
    for variant in variants:  # each entry's file checked by read_contract
        names += [name for name in (contract["models"][variant]["file"], external_data(bundle, contract, variant)) if name]
    vectors = read_vectors(bundle, [])
    names += [name for vector in vectors["vectors"] for name in (vector["image"], vector["crop"])]
    if (Path(bundle) / REPORT_FILE).is_file():
        names.append(REPORT_FILE)
    for name in names:
        bundle_file(bundle, name, "file")
    return list(dict.fromkeys(names))


def read_vectors(bundle: Path, variants: list[str]) -> dict[str, Any]:
    """test_vectors/vectors.json, every field the checks read present and typed, with at least one vector
    and an expectation for each of `variants`: a bundle without test vectors is never reported verified."""
    where = Path(bundle) / VECTORS_FILE
    if not os.path.lexists(where):
        raise BundleError(f"{bundle} has no test vectors ({VECTORS_FILE}), so it cannot be verified: export it again with `mitp export`")
    try:
        vectors = json.loads(bundle_file(bundle, VECTORS_FILE, "test vectors", MAX_VECTORS_BYTES).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise BundleError(f"{where} is not readable JSON ({type(err).__name__}: {str(err)[:120]})") from err
    if not isinstance(vectors, dict) or not isinstance(vectors.get("vectors"), list) or not isinstance(vectors.get("tolerance"), dict):
        raise BundleError(f"{where} lacks its vectors and tolerances")
    if not vectors["vectors"]:
        raise BundleError(f"{where} holds no test vectors, so the bundle cannot be verified: export it again")
    for variant in variants:
        if not _number(vectors["tolerance"].get(variant)):
            raise BundleError(f"{where}: no tolerance for the {variant} model")
    for i, vector in enumerate(vectors["vectors"]):
        problem = _vector_problem(vector, variants)
        if problem:
            raise BundleError(f"{where}: vector {i} {problem}")
    return vectors


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole_numbers(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _vector_problem(vector: Any, variants: list[str]) -> str | None:
    """What is wrong with one test vector's fields, or None."""
    if not isinstance(vector, dict):
        return "is not an object"
    for key in ("name", "image", "text", "crop", "crop_sha256", "pixels_sha256"):
        if not isinstance(vector.get(key), str):
            return f"has no text field {key!r}"
    if not _whole_numbers(vector.get("input_ids")) or not _whole_numbers(vector.get("attention_mask")):
        return "needs input_ids and attention_mask as lists of whole numbers"
    if len(vector["input_ids"]) != len(vector["attention_mask"]):
        return "has input_ids and attention_mask of different lengths"
    logits = vector.get("logits")
    for variant in variants:
        values = logits.get(variant) if isinstance(logits, dict) else None
        if not isinstance(values, list) or not values or not all(_number(v) for v in values):
            return f"has no {variant} logits (a list of numbers)"
    return None


def read_crop(bundle: Path, vector: dict[str, Any], index: int, size: int) -> np.ndarray:
    """A vector's expected crop (size, size, 3) uint8, its file inside the bundle and of exactly that many bytes."""
    if vector.get("crop_shape") != [size, size, 3]:
        raise BundleError(f"{bundle}: vector {index}'s crop_shape {vector.get('crop_shape')!r} is not [{size}, {size}, 3] (the image rule's size)")
    path = bundle_file(bundle, vector.get("crop"), f"vector {index}'s crop", size * size * 3)
    data = path.read_bytes()
    if len(data) != size * size * 3:
        raise BundleError(f"{bundle}: vector {index}'s crop has {len(data):,} bytes, not {size * size * 3:,}")
    return np.frombuffer(data, dtype=np.uint8).reshape(size, size, 3)


def _missing_models(contract: dict[str, Any], present: list[str]) -> str:
    missing = [VARIANT_FILES[v] for v in contract.get("models", {}) if v not in present]
    return f"missing: {', '.join(missing)}" if missing else f"{', '.join(VARIANT_FILES[v] for v in present)} present"


def _check_tokenizer(tokenizer: ClipTokenizer, vectors: list[dict]) -> Check:
    for i, vector in enumerate(vectors):
        ids, mask, _ = tokenizer.encode([vector["text"]])
        for name, got, expected in (("ids", ids[0], vector["input_ids"]), ("attention mask", mask[0], vector["attention_mask"])):
            if len(expected) != len(got):
                return Check("tokenizer", False, f"vector {i} ({vector['name']}): {len(expected)} expected {name}, the tokenizer gives {len(got)}")
            if got.tolist() != expected:
                where = [j for j, (a, b) in enumerate(zip(got.tolist(), expected, strict=True)) if a != b][:8]
                return Check("tokenizer", False, f"vector {i} ({vector['name']}): {name} differ at positions {where}: got {got[where].tolist()}, expected {[expected[j] for j in where]}")
    return Check("tokenizer", True, f"ids and attention masks of {len(vectors)} captions as expected")


def _check_images(bundle: Path, contract: dict[str, Any], vectors: list[dict]) -> Check:
    size = contract["image"]["size"]
    mean, std = contract["image"]["normalize"]["mean"], contract["image"]["normalize"]["std"]
    for i, vector in enumerate(vectors):
        crop = clip_crop(load_image(bundle_file(bundle, vector["image"], f"vector {i}'s image")), size)
        if sha256(crop) != vector["crop_sha256"]:
            expected = read_crop(bundle, vector, i, size)
            diff = np.abs(crop.astype(int) - expected.astype(int)) if crop.shape == expected.shape else None
            detail = f"max |diff| {diff.max()} levels on {int((diff > 0).sum())} of {diff.size} values" if diff is not None else f"shape {crop.shape} instead of {expected.shape}"
            return Check("image preprocessing", False, f"vector {i} ({vector['name']}, {vector['image']}): the crop differs from the expected ({detail})")
        if sha256(normalize(crop, mean, std)[None].astype("<f4")) != vector["pixels_sha256"]:
            return Check("image preprocessing", False, f"vector {i} ({vector['name']}): the crop matches but the normalised pixels differ")
    return Check("image preprocessing", True, f"crops and pixels of {len(vectors)} images as expected")


def _check_metadata(session, contract: dict[str, Any], variant: str) -> Check:
    props = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    differing = sorted(k for k, v in contract.items() if k not in ("test_vectors", BACKBONE_KEY) and props.get(k) != v)
    if props.get("variant", {}).get("name") != variant:
        differing.append("variant")
    name = VARIANT_FILES[variant]
    if differing:
        return Check(f"{name} metadata", False, f"differs from {CONTRACT_FILE} on {', '.join(differing)}")
    return Check(f"{name} metadata", True, f"agrees with {CONTRACT_FILE}")


def _check_model(session, bundle: Path, contract: dict[str, Any], variant: str, vectors: dict[str, Any]) -> Check:
    name = VARIANT_FILES[variant]
    mean, std = contract["image"]["normalize"]["mean"], contract["image"]["normalize"]["std"]
    tolerance = vectors["tolerance"][variant]
    worst = 0.0
    for i, vector in enumerate(vectors["vectors"]):
        crop = read_crop(bundle, vector, i, contract["image"]["size"])
        feeds = {
            "pixel_values": normalize(crop, mean, std)[None],
            "input_ids": np.array([vector["input_ids"]], dtype=np.int64),
            "attention_mask": np.array([vector["attention_mask"]], dtype=np.int64),
        }
        logits = np.asarray(session.run(["logits"], feeds)[0][0], dtype=np.float32)
        expected = np.asarray(vector["logits"][variant], dtype=np.float32)
        if logits.shape != expected.shape:
            return Check(f"{name} logits", False, f"{logits.size} logits per input, but the vectors expect {expected.size} (labels: {len(contract['labels'])})")
        diff = float(np.abs(logits - expected).max())
        worst = max(worst, diff)
        if not diff <= tolerance:
            return Check(f"{name} logits", False, f"vector {i} ({vector['name']}): logits differ by {diff:.3g} (tolerance {tolerance:g})")
    return Check(f"{name} logits", True, f"max |diff| {worst:.2g} over {len(vectors['vectors'])} vectors (tolerance {tolerance:g})")


def verified_once(bundle: Path, variant: str, cache: Path | None = None) -> bool:
    """Verify `bundle`'s `variant` against its test vectors before its first use on this machine; later uses
    find a stamp (keyed by the contract, and the size, time, inode and place of the model file and of its backbone
    file, wherever that was found) in mitp's cache and skip it. Returns
    whether it verified now. BundleError names the checks that fail: a bundle that does not reproduce its
    own test vectors here is never used."""
    bundle = Path(bundle)
    from .weights import weights_of

    weights = weights_of(bundle, read_contract(bundle), variant)
    files = [bundle / VARIANT_FILES[variant], *([weights.file.resolve()] if weights else [])]
    identity = " ".join(f"{f} {f.stat().st_size} {f.stat().st_mtime_ns} {f.stat().st_ino}" for f in files)
    key = hashlib.sha256((bundle / CONTRACT_FILE).read_bytes() + f"{identity} {variant}".encode()).hexdigest()
    stamp = (cache or user_cache()) / "verified" / key
    if stamp.is_file():
        return False
    failed = [check for check in verify_bundle(bundle, [variant]) if not check.ok]
    if failed:
        raise BundleError(f"{bundle} does not reproduce its own test vectors on this machine: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(f"{bundle.resolve()}\n")
    except OSError:
        pass  # a read-only home: verified again next time
    return True


def user_cache() -> Path:
    return Path(os.environ.get("MITP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mitp")

