"""ONNX export, the bundle contract and `mitp predict`: agreement with PyTorch and bad inputs."""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from mitp.cli import app
from mitp.runtime.bundle import BUNDLE_FORMAT, BundleError
from mitp.runtime.predict import Predictor
from mitp.train.factory import load_trained

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _test_pairs(root: Path, count: int) -> tuple[list[Path], list[str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(root / "food" / "test.parquet").to_pydict()
    return [root / "food" / p for p in table["image"][:count]], table["text"][:count]


def test_bundle_holds_the_graph_tokenizer_metadata_and_a_verified_report(trained):
    bundle = trained / "bundle"
    weights = {v: entry["file"] for v, entry in json.loads((bundle / "bundle.json").read_text())["backbone_weights"].items()}
    assert set(weights) == {"fp32", "fp16", "int8"} and len(set(weights.values())) == 3  # each variant's backbone apart
    assert {p.name for p in bundle.iterdir()} == {
        ".mitp-output", "model.onnx", "model.fp16.onnx", "model.int8.onnx", "tokenizer.json", "export_report.json", "bundle.json", "test_vectors",
        *weights.values(),
    }
    report = json.loads((bundle / "export_report.json").read_text())
    assert report["fp32"]["max_abs_diff"] <= 1e-4
    assert set(report["fp32"]["max_abs_diff_by_batch"]) == {"1", "3"}
    assert report["verify_inputs"].startswith("food test split")
    assert report["fp16"]["top1_agreement"] >= 0.9
    # int8 on this barely trained 64-wide model is the hard case (11 of 12 agreed here); chance is 1/16.
    assert report["int8"]["top1_agreement"] >= 0.75 and report["int8"]["samples"] == 12
    model = onnx.load(str(bundle / "model.onnx"))
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["mitp_bundle_format"] == BUNDLE_FORMAT and meta["task"] == "single-label"
    assert meta["labels"] == json.loads((trained / "food" / "classes.json").read_text())
    assert meta["image"]["size"] == 32 and len(meta["image"]["normalize"]["mean"]) == 3
    assert meta["tokenizer"]["max_length"] == 77 and meta["decision"]["rule"] == "softmax-argmax"
    assert [i.name for i in model.graph.input] == ["pixel_values", "input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch is dynamic


def test_predict_matches_pytorch_probabilities(trained):
    model, run, backbone, _ = load_trained(trained / "run")
    images, texts = _test_pairs(trained, 5)
    predictor = Predictor(trained / "bundle", provider="cpu")
    onnx_probs = np.array([[p.scores[label] for label in predictor.info.labels] for p in predictor.predict(images, texts)])
    pixels = np.stack([predictor.preprocess(p) for p in images])
    ids, mask = backbone.tokenizer(texts)
    with torch.no_grad():
        logits = model(torch.from_numpy(pixels), torch.from_numpy(ids), torch.from_numpy(mask))
    torch_probs = torch.softmax(logits, dim=-1).numpy()
    assert np.abs(onnx_probs - torch_probs).max() <= 1e-4
    assert predictor.provider == "CPUExecutionProvider"


@pytest.mark.parametrize(("variant", "model_file"), [("fp32", "model.onnx"), ("int8", "model.int8.onnx")])
def test_cli_json_and_plain_onnxruntime_script_agree(trained, variant, model_file):
    images, texts = _test_pairs(trained, 1)
    result = runner.invoke(app, [
        "predict", str(images[0]), texts[0], "--model", str(trained / "bundle"), "--json", "--provider", "cpu", "-k", "100", "--variant", variant,
    ])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout)
    assert cli["provider"] == "CPUExecutionProvider" and len(cli["labels"]) == 1
    script = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "onnx_predict.py"), str(trained / "bundle"), str(images[0]), texts[0], model_file],
        capture_output=True, text=True, check=True, cwd=trained,
    )
    plain = json.loads(script.stdout)
    assert plain["labels"] == cli["labels"]
    assert max(abs(plain["scores"][k] - cli["scores"][k]) for k in cli["scores"]) <= 1e-5


def test_predict_and_verify_import_neither_torch_transformers_nor_training_libraries():
    code = (
        "import sys, mitp.cli, mitp.runtime.predict, mitp.runtime.verify; "
        "print(sorted(m for m in ('torch', 'transformers', 'yaml', 'onnx', 'pyarrow', 'safetensors') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bundle_json_is_the_contract_without_build_paths(trained):
    bundle = trained / "bundle"
    contract = json.loads((bundle / "bundle.json").read_text())
    for variant, file in (("fp32", "model.onnx"), ("fp16", "model.fp16.onnx"), ("int8", "model.int8.onnx")):
        model = onnx.load(str(bundle / file))
        meta = {p.key: json.loads(p.value) for p in model.metadata_props}
        assert model.ir_version == 9  # onnxruntime >= 1.17
        assert meta.pop("variant")["name"] == variant and contract["models"][variant]["file"] == file
        assert meta == {k: v for k, v in contract.items() if k not in ("test_vectors", "backbone_weights")}
    assert "int8" in contract["models"]["int8"]["weights"] and contract["requires"]["onnxruntime"] == ">=1.17"
    assert contract["image"]["resize"]["filter"].startswith("bicubic") and contract["image"]["decode"]["alpha"]["background"] == [255] * 3
    assert contract["tokenizer"]["padding"]["side"] == "right" and "pad id may equal the end id" in contract["tokenizer"]["attention_mask"]
    text = (bundle / "bundle.json").read_text() + (bundle / "export_report.json").read_text()
    assert str(trained) not in text and "/tmp" not in text and "data_dir" not in text


def test_bundle_verify_passes_and_names_what_a_swapped_file_changes(trained, tmp_path):
    result = runner.invoke(app, ["bundle", "verify", str(trained / "bundle")])
    assert result.exit_code == 0, result.output
    assert "bundle verified" in result.output and "model.int8.onnx logits" in result.stdout
    vectors = json.loads((trained / "bundle" / "test_vectors" / "vectors.json").read_text())["vectors"]
    assert [v["name"] for v in vectors] == ["real-0", "real-1", "real-2", "exif-rotated", "alpha-on-white", "grey-16-bit"]

    swapped = tmp_path / "swapped-model"
    shutil.copytree(trained / "bundle", swapped)
    shutil.copy(trained / "other-bundle" / "model.onnx", swapped / "model.onnx")
    result = runner.invoke(app, ["bundle", "verify", str(swapped), "--variant", "fp32"])
    assert result.exit_code == 1 and "FAILED model.onnx logits: vector 0 (real-0): logits differ by" in result.output

    swapped = tmp_path / "swapped-tokenizer"
    shutil.copytree(trained / "bundle", swapped)
    from mitp.runtime.tokenizer import build_word_tokenizer

    build_word_tokenizer(("a", "photo", "of", "red")).save(swapped / "tokenizer.json")
    result = runner.invoke(app, ["bundle", "verify", str(swapped)])
    assert result.exit_code == 1 and "FAILED tokenizer: vector 0 (real-0): ids differ at positions" in result.output


def test_predict_json_gives_every_label_unless_top_k(trained):
    (image,), (text,) = _test_pairs(trained, 1)
    every = json.loads(runner.invoke(app, ["predict", str(image), text, "--model", str(trained / "bundle"), "--json"]).stdout)
    assert len(every["scores"]) == 16
    top = json.loads(runner.invoke(app, ["predict", str(image), text, "--model", str(trained / "bundle"), "--json", "-k", "3"]).stdout)
    assert list(top["scores"]) == list(every["scores"])[:3]


def test_bad_inputs_fail_clearly(trained, tmp_path):
    bundle, (image,), (text,) = str(trained / "bundle"), *_test_pairs(trained, 1)
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("plain text")
    cases = [
        ([str(tmp_path / "missing.jpg"), text], "image not found"),
        ([str(not_image), text], "cannot decode image"),
        ([str(image), "   "], "caption is empty"),
        ([str(image), text, "--provider", "tpu"], "unknown provider"),
        ([str(image), text, "--variant", "bf16"], "unknown variant"),
        ([str(image)], "give an IMAGE and a TEXT"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["predict", *args, "--model", bundle])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    result = runner.invoke(app, ["predict", str(image), text, "--model", str(tmp_path)])
    assert result.exit_code == 2 and "is " + str(tmp_path) + " a bundle" in result.output.replace("\n", "")


def test_int8_variant_runs_quantized_matmuls_and_decides_like_fp32(trained, tmp_path):
    ops = {node.op_type for node in onnx.load(str(trained / "bundle" / "model.int8.onnx")).graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat"}, ops
    images, texts = _test_pairs(trained, 12)
    exact = Predictor(trained / "bundle", provider="cpu").predict(images, texts)
    quantized = Predictor(trained / "bundle", provider="cpu", variant="int8").predict(images, texts)
    agree = np.mean([a.labels == b.labels for a, b in zip(exact, quantized, strict=True)])
    assert agree >= 0.75  # see the export report test
    assert max(abs(a.scores[k] - b.scores[k]) for a, b in zip(exact, quantized, strict=True) for k in a.scores) > 0  # really another model
    shutil.copytree(trained / "bundle", tmp_path / "fp32-only", ignore=shutil.ignore_patterns("model.int8.onnx"))
    result = runner.invoke(app, ["predict", str(images[0]), texts[0], "--model", str(tmp_path / "fp32-only"), "--variant", "int8"])
    assert result.exit_code == 2 and "no int8 variant" in result.output and "--int8" in result.output


def test_long_captions_are_truncated_and_said_so(trained):
    (image,), _ = _test_pairs(trained, 1)
    result = runner.invoke(app, ["predict", str(image), "red " * 200, "--model", str(trained / "bundle"), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["truncated"] is True
    assert "truncated to 77 tokens" in result.stderr


def _rewrite_metadata(source: Path, target: Path, change) -> None:
    shutil.copytree(source, target)
    model = onnx.load(str(target / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    change(props)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target / "model.onnx"))


def test_bundles_without_metadata_or_from_another_format_are_refused(trained, tmp_path):
    _rewrite_metadata(trained / "bundle", tmp_path / "bare", lambda props: props.clear())
    with pytest.raises(BundleError, match="no mitp metadata"):
        Predictor(tmp_path / "bare", provider="cpu")
    _rewrite_metadata(trained / "bundle", tmp_path / "future", lambda props: props.update(mitp_bundle_format="99"))
    with pytest.raises(BundleError, match="bundle format 99"):
        Predictor(tmp_path / "future", provider="cpu")


def test_batch_mode_skips_bad_lines_and_predicts_the_rest(trained, tmp_path):
    images, texts = _test_pairs(trained, 3)
    lines = [json.dumps({"image": str(images[0]), "text": texts[0]}), "{not json", json.dumps({"image": str(images[1])}),
             json.dumps({"image": "nowhere.jpg", "text": "x"}), "", json.dumps({"image": str(images[2]), "text": texts[2]})]
    batch = tmp_path / "pairs.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    out = tmp_path / "predictions.jsonl"
    result = runner.invoke(app, ["predict", "--batch", str(batch), "--out", str(out), "--model", str(trained / "bundle")])
    assert result.exit_code == 1  # some lines failed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 6]
    assert all(len(r["labels"]) == 1 and r["provider"] == "CPUExecutionProvider" for r in records)
    assert "line 2" in result.output and "line 3" in result.output and "line 4" in result.output
    assert "predicted 2 of 5 lines" in result.output


def test_cuda_request_fails_where_it_cannot_run(trained, monkeypatch):
    """With the CPU onnxruntime, or the GPU build on a machine whose GPU it cannot use: `auto` falls back to
    CPU and says so where a GPU is present (and says nothing where there is none), `cuda` is an error."""
    import mitp.runtime.predict as predict

    auto = Predictor(trained / "bundle", provider="auto")
    if auto.provider == "CUDAExecutionProvider":
        pytest.skip("CUDA runs here; the GPU path is measured by the benchmark instead")
    assert auto.provider == "CPUExecutionProvider"
    monkeypatch.setattr(predict, "gpu_present", lambda: True)
    assert Predictor(trained / "bundle", provider="auto").note.startswith("running on CPU")
    monkeypatch.setattr(predict, "gpu_present", lambda: False)
    assert Predictor(trained / "bundle", provider="auto").note == ""
    (image,), (text,) = _test_pairs(trained, 1)
    result = runner.invoke(app, ["predict", str(image), text, "--model", str(trained / "bundle"), "--provider", "cuda"])
    assert result.exit_code == 2 and "cannot run here" in result.output


def test_predict_applies_the_same_image_rule_and_refuses_huge_images(trained, tmp_path):
    """Transparency on white, as at preparation and in training; a decompression bomb is refused alone,
    and in a batch it costs only its own line."""
    from PIL import Image

    (image,), (text,) = _test_pairs(trained, 1)
    rgb = np.asarray(Image.open(image).convert("RGB"))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    rgba[: rgb.shape[0] // 2, :, 3] = 0  # the top half transparent
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    white = rgb.copy()
    white[: rgb.shape[0] // 2] = 255
    Image.fromarray(white).save(tmp_path / "white.png")
    predictor = Predictor(trained / "bundle", provider="cpu")
    assert np.array_equal(predictor.preprocess(tmp_path / "alpha.png"), predictor.preprocess(tmp_path / "white.png"))

    Image.new("1", (10_000, 9_000)).save(tmp_path / "bomb.png")
    result = runner.invoke(app, ["predict", str(tmp_path / "bomb.png"), text, "--model", str(trained / "bundle")])
    assert result.exit_code == 2 and "too large to decode safely" in result.output
    batch = tmp_path / "pairs.jsonl"
    batch.write_text("\n".join(json.dumps({"image": str(p), "text": text}) for p in (image, tmp_path / "bomb.png", image)) + "\n")
    result = runner.invoke(app, ["predict", "--batch", str(batch), "--out", str(tmp_path / "out.jsonl"), "--model", str(trained / "bundle")])
    assert result.exit_code == 1 and "line 2" in result.output
    assert [json.loads(line)["line"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [1, 3]


@pytest.mark.parametrize(
    "reading, expected",
    [
        ({"hub": {"map": "pairwise", "scale": "learned"}}, {"exchange": "memory-hub", "map": "pairwise", "scale": "learned", "head": "fused"}),
        ({"head": "per-class"}, {"exchange": "memory-hub", "map": "token", "head": "per-class"}),
    ],
)
def test_each_reading_exports_with_parity_and_is_recorded(trained, tmp_path, reading, expected):
    """A reading trains, evaluates (with the frozen-gate ablation) and exports within the fp32 tolerance,
    and result.json, metrics and bundle.json say which reading it is."""
    import yaml

    config = yaml.safe_load((trained / "config.yaml").read_text())
    config["readings"] = {"r": reading}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    args = ["train", "-c", str(tmp_path / "config.yaml"), "-d", "food", "-s", "mitp-r", "--max-steps", "2", "--out", str(run), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "gates (layer.modality): 2.text z" in result.output  # per interaction layer, from the first one
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics-test.json").read_text())
    ablation = metrics["memory_ablation"]
    assert ablation["contribution"] == pytest.approx(ablation["live"] - ablation["frozen_gates"])
    assert ablation["live"] == metrics["metrics"]["accuracy"] and 0 <= ablation["predictions_unchanged"] <= 1
    result = runner.invoke(app, ["export", "--checkpoint", str(run), "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    assert json.loads((bundle / "export_report.json").read_text())["fp32"]["max_abs_diff"] <= 1e-4
    for recorded in (json.loads((run / "result.json").read_text())["reading"], metrics["reading"], json.loads((bundle / "bundle.json").read_text())["reading"]):
        assert expected.items() <= recorded.items()
    assert runner.invoke(app, ["bundle", "verify", str(bundle)]).exit_code == 0


def test_predict_without_model_takes_the_newest_bundle_under_results_and_says_so(trained, tmp_path, monkeypatch):
    import os
    import time

    image = _test_pairs(trained, 1)[0][0]
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["predict", str(image), "a caption"])
    assert result.exit_code == 2 and "none found under ./results/*/bundles" in result.output
    assert "results/demo/bundles/<data set>/mitp" in result.output and "Traceback" not in result.output
    older, newer = tmp_path / "results" / "demo" / "bundles" / "food" / "mitp", tmp_path / "results" / "ci" / "bundles" / "food" / "mitp"
    shutil.copytree(trained / "other-bundle", older)
    shutil.copytree(trained / "bundle", newer)
    past = time.time() - 3600
    os.utime(older / "model.onnx", (past, past))
    result = runner.invoke(app, ["predict", str(image), "a caption", "--json"])
    assert result.exit_code == 0, result.output
    assert f"using bundle {Path('results/ci/bundles/food/mitp')}, the newest of 2" in result.output
    assert "CUDA provider" not in result.output  # no GPU on this machine: running on the CPU is no news


def test_batch_out_never_replaces_an_input_a_file_of_the_bundle_or_a_folder(trained, tmp_path):
    (image,), (text,) = _test_pairs(trained, 1)
    shutil.copyfile(image, tmp_path / "photo.jpg")
    batch = tmp_path / "pairs.jsonl"
    batch.write_text(json.dumps({"image": str(tmp_path / "photo.jpg"), "text": text}) + "\n")
    protected = [batch, tmp_path / "photo.jpg", trained / "bundle" / "bundle.json", trained / "bundle" / "test_vectors" / "vectors.json"]
    before = [path.read_bytes() for path in protected]
    for out, message in (
        (batch, "would overwrite an input"),
        (tmp_path / "photo.jpg", "is not a file this command wrote"),  # an image the batch names
        (trained / "bundle" / "bundle.json", "is inside"),
        (trained / "bundle" / "test_vectors" / "vectors.json", "is inside"),
        (tmp_path, "is a folder"),
    ):
        result = runner.invoke(app, ["predict", "--batch", str(batch), "--out", str(out), "--model", str(trained / "bundle")])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert [path.read_bytes() for path in protected] == before
    out = tmp_path / "predictions.jsonl"
    for _ in range(2):  # its own earlier output is replaced
        result = runner.invoke(app, ["predict", "--batch", str(batch), "--out", str(out), "--model", str(trained / "bundle")])
        assert result.exit_code == 0 and len(out.read_text().splitlines()) == 1, result.output


def test_export_never_deletes_what_a_user_put_in_a_bundle_folder(trained, tmp_path):
    bundle = tmp_path / "bundle"
    assert runner.invoke(app, ["export", "--checkpoint", str(trained / "run"), "--out", str(bundle)]).exit_code == 0
    (bundle / "my-predictions.jsonl").write_text("{}\n")
    result = runner.invoke(app, ["export", "--checkpoint", str(trained / "run"), "--out", str(bundle)])
    assert result.exit_code == 2 and "my-predictions.jsonl" in result.output and "move it out" in " ".join(result.output.split())
    assert (bundle / "my-predictions.jsonl").read_text() == "{}\n"


def test_models_carry_no_path_of_the_exporting_machine(trained):
    """The exporter's per-node stack traces name files of this machine; a shared bundle must not."""
    import os
    import sys

    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        model = onnx.load(str(trained / "bundle" / name))
        assert not any(node.metadata_props for node in model.graph.node), name
        text = model.SerializeToString()
        for path in {sys.prefix, os.getcwd(), str(ROOT)}:
            assert path.encode() not in text, (name, path)


def test_every_result_records_what_it_was_measured_with(trained):
    """result.json and the metrics name the code (commit, modified), the libraries, the device, the precision,
    the determinism settings, the backbone's weights and the prepared data's fingerprint."""
    import hashlib

    result = runner.invoke(app, ["evaluate", "--checkpoint", str(trained / "run"), "--out", str(trained / "metrics-env.json")])
    assert result.exit_code == 0, result.output
    fingerprint = hashlib.sha256((trained / "food" / "prepare_report.json").read_bytes()).hexdigest()
    for path in (trained / "run" / "result.json", trained / "metrics-env.json"):
        env = json.loads(path.read_text())["environment"]
        assert env["mitp"]["version"] and env["python"] and env["libraries"]["torch"] and env["libraries"]["transformers"]
        assert env["device"]["type"] == "cpu" and env["precision"]["autocast"] == "no" and env["determinism"]["seed"] == 0
        assert env["backbone"] == {"name": "preset:tiny", "weights": "random, seed 0"}
        assert env["data"]["fingerprint"] == fingerprint
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True) if shutil.which("git") else None
        if head is not None and head.returncode == 0:  # a clone: the commit and whether the tree was modified
            assert env["mitp"]["commit"] == head.stdout.strip() and isinstance(env["mitp"]["modified"], bool)


def test_bundles_of_one_backbone_share_its_weights_file_and_one_without_it_is_completed_from_the_store(trained, tmp_path, monkeypatch):
    """Two tasks trained on the same frozen CLIP: byte-identical backbone files under one name, the task's
    own tensors inside each model; a copy without the file is refused in one line until the store has it."""
    from mitp.runtime.verify import verify_bundle
    from mitp.runtime.weights import TensorCache

    entries = [json.loads((trained / b / "bundle.json").read_text())["backbone_weights"]["fp32"] for b in ("bundle", "other-bundle")]
    places = [{(t["offset"], t["dtype"], tuple(t["shape"])) for t in entry["table"]} for entry in entries]
    assert entries[0]["file"] == entries[1]["file"] and places[0] == places[1]  # the exporter's `val_N` names may differ
    first, second = (trained / b / entries[0]["file"] for b in ("bundle", "other-bundle"))
    assert first.read_bytes() == second.read_bytes() and hashlib.sha256(first.read_bytes()).hexdigest() == entries[0]["sha256"]
    backbone_bytes = sum(t["length"] for t in entries[0]["table"])
    assert backbone_bytes > 10 * (trained / "bundle" / "model.onnx").stat().st_size / 11  # nearly all of the weights are the backbone's
    assert (trained / "bundle" / "model.onnx").read_bytes() != (trained / "other-bundle" / "model.onnx").read_bytes()

    images, texts = _test_pairs(trained, 3)
    pixels = np.stack([Predictor(trained / "bundle", "cpu").preprocess(p) for p in images])
    plain = {b: Predictor(trained / b, "cpu") for b in ("bundle", "other-bundle")}
    cache = TensorCache()
    shared = {b: Predictor(trained / b, "cpu", shared=cache) for b in ("bundle", "other-bundle")}
    assert cache.tensors == len(places[0])  # one copy for both bundles
    shared["bundle-own-cache"] = Predictor(trained / "bundle", "cpu", shared=TensorCache())  # the cache lives as long as its session
    gc.collect()
    for b in shared:
        ids, mask, _ = shared[b].tokenize(texts)
        reference = plain[b.removesuffix("-own-cache")].logits(pixels, ids, mask)
        assert np.abs(reference - shared[b].logits(pixels, ids, mask)).max() <= 1e-5

    alone = tmp_path / "alone"  # the trained part alone, as a release may carry it
    shutil.copytree(trained / "bundle", alone, ignore=shutil.ignore_patterns("backbone-*"))
    monkeypatch.setenv("MITP_BACKBONES", str(tmp_path / "store"))
    result = CliRunner().invoke(app, ["predict", str(images[0]), texts[0], "--model", str(alone), "--provider", "cpu"])
    assert result.exit_code != 0 and "carries its trained part alone" in result.output and "mitp bundle share" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (tmp_path / "store").mkdir()
    shutil.copy(second, tmp_path / "store" / second.name)  # any bundle's copy
    result = CliRunner().invoke(app, ["predict", str(images[0]), texts[0], "--model", str(alone), "--provider", "cpu", "--json"])
    expected = CliRunner().invoke(app, ["predict", str(images[0]), texts[0], "--model", str(trained / "bundle"), "--provider", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scores"] == pytest.approx(json.loads(expected.stdout)["scores"], abs=1e-5)
    checks = verify_bundle(alone, ["fp32"])
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
