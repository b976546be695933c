"""`mitp release`: a folder laid out as a Hugging Face model repository, with a model card the Hub's own
parser reads, usable as a bundle, and its upload, against a loopback server standing in for the Hub."""

from __future__ import annotations

import base64
import json
import shutil

import pytest
from typer.testing import CliRunner

from mitp.cli import app

from .loopback import Route

runner = CliRunner()


@pytest.fixture
def evaluated_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(run)])
    assert result.exit_code == 0, result.output
    return run


def test_a_release_has_a_model_card_the_hub_reads_and_works_as_a_bundle(trained, evaluated_run, tmp_path):
    from huggingface_hub import ModelCard

    release = tmp_path / "release"
    result = runner.invoke(app, ["release", str(evaluated_run), "--bundle", str(trained / "bundle"), "--out", str(release)])
    assert result.exit_code == 0, result.output
    for name in ("README.md", "bundle.json", "model.onnx", "tokenizer.json", "mitp_prompts.safetensors", "mitp_config.json", "results.json"):
        assert (release / name).is_file(), name
    card = ModelCard.load(release / "README.md")
    assert (card.data.license, card.data.library_name, card.data.pipeline_tag, card.data.datasets) == ("mit", "mitp", None, ["food"])
    (evaluation,) = card.data.eval_results
    metrics = json.loads((evaluated_run / "metrics-test.json").read_text())["metrics"]
    assert evaluation.metric_value == pytest.approx(round(100 * metrics["accuracy"], 2))
    assert "95% interval" in evaluation.metric_name and evaluation.dataset_split == "test"
    results = json.loads((release / "results.json").read_text())
    low, high = results["test"]["metrics"]["accuracy"]["interval_95"]
    assert low <= evaluation.metric_value <= high
    assert results["environment"]["data"]["fingerprint"] and "prepared" not in results["environment"]["data"]
    for path in release.rglob("*"):  # nothing of this machine: no path of the run, the data or the home
        if path.is_file() and path.suffix in (".md", ".json"):
            text = path.read_text()
            assert str(tmp_path) not in text and str(trained) not in text, path
    assert runner.invoke(app, ["bundle", "verify", str(release)]).exit_code == 0
    image = next((release / "test_vectors").glob("*.jpg"))
    predicted = runner.invoke(app, ["predict", str(image), "red", "--model", str(release), "--json"])
    assert predicted.exit_code == 0, predicted.output


def test_a_bundle_from_another_run_is_refused(trained, evaluated_run, tmp_path):
    other = tmp_path / "other-bundle"
    shutil.copytree(trained / "bundle", other)
    contract = json.loads((other / "bundle.json").read_text())
    contract["source"]["checkpoint"]["model_sha256"] = "0" * 64
    (other / "bundle.json").write_text(json.dumps(contract))
    result = runner.invoke(app, ["release", str(evaluated_run), "--bundle", str(other), "--out", str(tmp_path / "release")])
    assert result.exit_code == 2 and "was not exported from" in " ".join(result.output.split())
    assert not (tmp_path / "release").exists()


def test_push_uploads_the_release_to_the_hub_api(trained, evaluated_run, tmp_path, loopback, monkeypatch):
    import huggingface_hub.constants

    release = tmp_path / "release"
    assert runner.invoke(app, ["release", str(evaluated_run), "--bundle", str(trained / "bundle"), "--out", str(release)]).exit_code == 0
    hub = loopback()

    def preupload(body: bytes) -> bytes:
        files = json.loads(body)["files"]
        return json.dumps({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}).encode()

    hub.routes["/api/repos/create"] = Route(json.dumps({"url": hub.url("/org/mitp-food")}).encode())
    hub.routes["/api/validate-yaml"] = Route(b'{"errors": [], "warnings": []}')
    hub.routes["/api/models/org/mitp-food/preupload/main"] = Route(reply=preupload)
    hub.routes["/api/models/org/mitp-food/commit/main"] = Route(json.dumps({"commitUrl": hub.url("/org/mitp-food/commit/abc"), "commitOid": "a" * 40}).encode())
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url("").rstrip("/"))
    monkeypatch.setenv("HF_TOKEN", "hf_loopback")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    result = runner.invoke(app, ["release", "push", str(release), "--repo", "org/mitp-food"])
    assert result.exit_code == 0, result.output
    assert "pushed" in result.output and "hf_loopback" not in result.output
    (commit,) = [body for path, body in hub.bodies if path.endswith("/commit/main")]
    entries = [json.loads(line) for line in commit.splitlines()]
    uploaded = {e["value"]["path"]: e["value"] for e in entries if e["key"] == "file"}
    assert {"README.md", "bundle.json", "model.onnx", "mitp_prompts.safetensors", "test_vectors/vectors.json"} <= set(uploaded)
    assert not any(path.startswith(".") or "/." in path for path in uploaded)  # mitp's marker stays behind
    assert base64.b64decode(uploaded["README.md"]["content"]) == (release / "README.md").read_bytes()
    tokens = {path: {k.lower(): v for k, v in headers.items()}.get("authorization") for path, headers in hub.requests}
    writes = ("/api/repos/create", "/api/models/org/mitp-food/preupload/main", "/api/models/org/mitp-food/commit/main")
    assert all(tokens[path] == "Bearer hf_loopback" for path in writes)  # the writes carry the token


def test_push_refuses_what_is_not_a_release(tmp_path):
    result = runner.invoke(app, ["release", "push", str(tmp_path), "--repo", "org/name"])
    assert result.exit_code == 2 and "is not a release folder" in " ".join(result.output.split())
    (tmp_path / "README.md").write_text("x")
    (tmp_path / "bundle.json").write_text("{}")
    result = runner.invoke(app, ["release", "push", str(tmp_path), "--repo", "just-a-name"])
    assert result.exit_code == 2 and "is not ORG/NAME" in result.output


def test_predict_verifies_a_bundle_before_its_first_use_and_refuses_one_that_fails(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("MITP_CACHE", str(tmp_path / "cache"))
    image = next((trained / "bundle" / "test_vectors").glob("*.jpg"))
    first = runner.invoke(app, ["predict", str(image), "red", "--model", str(trained / "bundle")])
    assert first.exit_code == 0 and "against its test vectors (first use here)" in " ".join(first.output.split()), first.output
    again = runner.invoke(app, ["predict", str(image), "red", "--model", str(trained / "bundle")])
    assert again.exit_code == 0 and "first use" not in again.output
    broken = tmp_path / "broken"
    shutil.copytree(trained / "bundle", broken)
    vectors = json.loads((broken / "test_vectors" / "vectors.json").read_text())
    vectors["vectors"][0]["logits"]["fp32"] = [v + 1.0 for v in vectors["vectors"][0]["logits"]["fp32"]]
    (broken / "test_vectors" / "vectors.json").write_text(json.dumps(vectors))
    refused = runner.invoke(app, ["predict", str(image), "red", "--model", str(broken)])
    assert refused.exit_code == 2 and "does not reproduce its own test vectors" in " ".join(refused.output.split())


def test_a_hub_repository_that_cannot_be_read_offline_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["predict", "x.jpg", "red", "--model", "someone/mitp-release"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "HF_HUB_OFFLINE=1 is set" in said and "not in this machine's Hub cache" in said and "Traceback" not in result.output


def test_a_release_without_the_backbone_is_completed_from_the_store_that_another_bundle_filled(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("MITP_BACKBONES", str(tmp_path / "store"))
    monkeypatch.setenv("MITP_CACHE", str(tmp_path / "cache"))
    release = tmp_path / "release"
    result = runner.invoke(app, ["release", str(trained / "bundle"), "--out", str(release), "--without-backbone"])
    assert result.exit_code == 0, result.output
    contract = json.loads((release / "bundle.json").read_text())
    files = {entry["file"] for entry in contract["backbone_weights"].values()}
    assert files and not any((release / name).exists() for name in files)
    assert sum(p.stat().st_size for p in release.rglob("*") if p.is_file()) < sum(p.stat().st_size for p in (trained / "bundle").rglob("*") if p.is_file()) / 2
    card = (release / "README.md").read_text()
    assert "carries the trained part alone" in card and all(name in card for name in files) and "mitp bundle share" in card

    image = next((release / "test_vectors").glob("*.jpg"))
    refused = runner.invoke(app, ["predict", str(image), "red", "--model", str(release)])
    assert refused.exit_code != 0 and "neither in it nor in the backbone store" in " ".join(refused.output.split())
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    shared = runner.invoke(app, ["bundle", "share", str(trained / "other-bundle")])  # another task, the same backbone
    assert shared.exit_code == 0 and "added" in shared.output, shared.output
    assert "already there" in runner.invoke(app, ["bundle", "share", str(trained / "other-bundle")]).output
    assert runner.invoke(app, ["bundle", "verify", str(release), "--variant", "fp32"]).exit_code == 0
    completed = runner.invoke(app, ["predict", str(image), "red", "--model", str(release), "--json"])
    whole = runner.invoke(app, ["predict", str(image), "red", "--model", str(trained / "bundle"), "--json"])
    assert completed.exit_code == 0, completed.output
    assert json.loads(completed.stdout)["scores"] == pytest.approx(json.loads(whole.stdout)["scores"], abs=1e-5)

    stored = tmp_path / "store" / contract["backbone_weights"]["fp32"]["file"]
    stored.write_bytes(b"\xff" * stored.stat().st_size)  # damaged in place: same name, same size
    damaged = runner.invoke(app, ["predict", str(image), "red", "--model", str(release), "--json"])
    assert damaged.exit_code != 0 and "does not reproduce its own test vectors" in " ".join(damaged.output.split())  # verified again
    repaired = runner.invoke(app, ["bundle", "share", str(trained / "other-bundle")])
    assert repaired.exit_code == 0 and "added" in repaired.output  # the damaged copy replaced
    assert runner.invoke(app, ["predict", str(image), "red", "--model", str(release)]).exit_code == 0
    monkeypatch.setenv("MITP_BACKBONES", str(tmp_path / "store" / "backbone-0000000000000000.onnx.data"))
    (tmp_path / "store" / "backbone-0000000000000000.onnx.data").write_bytes(b"")  # a store that is a file
    unwritable = runner.invoke(app, ["bundle", "share", str(trained / "other-bundle")])
    assert unwritable.exit_code != 0 and "cannot write the backbone store" in " ".join(unwritable.output.split())
    assert unwritable.exception is None or isinstance(unwritable.exception, SystemExit)
