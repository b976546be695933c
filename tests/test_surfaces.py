"""The newest surfaces hold what the old ones hold: paths judged by one containment rule (links resolved),
the Hub's errors and cache layout, the model card's header, rebuilds that keep a user's files, and
damaged or hostile inputs said in one line."""

from __future__ import annotations

import csv
import json
import os
import shutil
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from mitp.cli import app
from mitp.files.paths import Within, inside

from .loopback import Route
from .test_importer import _images

runner = CliRunner()


def _said(result):
    return " ".join(result.output.split())


def _one_line_refusal(result, code=2):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def _pairs_folder(folder, count=30):
    return _images(folder, count)  # red and blue PNGs under pics/, with rows naming them


def _write_csv(path, rows, fields=("image", "text", "label"), bom=False):
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------------- containment


def test_containment_resolves_both_sides_and_trusts_only_the_hub_caches_own_blobs(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "pics").mkdir(parents=True)
    (root / "pics" / "a.png").write_bytes(b"x")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"s")
    (root / "pics" / "link.png").symlink_to(secret)
    monkeypatch.chdir(root)
    assert inside("pics/a.png", ".") and inside("./pics/a.png", root) and inside(root / "pics" / "a.png", ".")
    assert not inside("pics/link.png", ".") and not inside("pics/../../secret.png", ".")
    within = Within(".")
    assert within("pics/a.png") and not within("pics/link.png") and not within("../secret.png")
    repo = tmp_path / "hf" / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc").write_bytes(b"model")
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model.onnx").symlink_to("../../blobs/abc")
    (snapshot / "out.onnx").symlink_to(secret)
    assert inside(snapshot / "model.onnx", snapshot) and not inside(snapshot / "out.onnx", snapshot)


@pytest.mark.parametrize("spelling", ["pairs.csv", "./pairs.csv", "ABS"])
def test_import_from_the_folder_of_the_pairs_file_however_it_is_named(tmp_path, monkeypatch, spelling):
    folder = tmp_path / "mine"
    folder.mkdir()
    _write_csv(folder / "pairs.csv", _pairs_folder(folder))
    monkeypatch.chdir(folder)
    given = str(folder / "pairs.csv") if spelling == "ABS" else spelling
    result = runner.invoke(app, ["data", "import", given, "--name", "mine", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert sum(report["counts"].values()) == 30 and report["dropped_total"] == 0, report


def test_a_link_in_the_data_folder_to_an_image_outside_never_reaches_the_data(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = _pairs_folder(folder)
    outside = tmp_path / "private.png"
    Image.new("RGB", (40, 30), (1, 2, 3)).save(outside)
    (folder / "pics" / "0.png").unlink()
    (folder / "pics" / "0.png").symlink_to(outside)
    _write_csv(folder / "pairs.csv", rows)
    result = runner.invoke(app, ["data", "import", str(folder / "pairs.csv"), "--name", "mine", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    dropped = [json.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    assert [d["reason"] for d in dropped] == ["image path outside the data set"] and dropped[0]["detail"].endswith("0.png")


# ------------------------------------------------------------------------------------------ imports


def test_imports_read_what_users_write_and_say_what_they_cannot(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = _pairs_folder(folder, 40)
    splits = ["TRAIN", "Train", "training", "validation", "test"]
    for i, row in enumerate(rows):
        row["split"] = splits[i % 5] if i % 5 != 4 else "test"
        row["label"] = f"  {row['label']} " if i % 3 == 0 else row["label"]  # spaces around the name
    rows[39] = {**rows[1], "split": "test"}  # the same pair as a training one
    _write_csv(folder / "pairs.csv", rows, ("image", "text", "label", "split"), bom=True)
    result = runner.invoke(app, ["data", "import", str(folder / "pairs.csv"), "--name", "mine", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert report["num_classes"] == 2, report  # "  red " is red
    assert report["dropped"]["test"] == {"same image and text as a training pair": 1}, report
    assert any("TRAIN" in note for note in report["read_as"]) and any("numbers or with extra spaces" in n for n in report["read_as"])
    # integer labels (JSON lines) and a JSON list in a CSV labels cell
    with open(folder / "numbers.jsonl", "w") as f:
        for i, row in enumerate(rows[:30]):
            f.write(json.dumps({"image": row["image"], "text": row["text"], "label": i % 2}) + "\n")
    result = runner.invoke(app, ["data", "import", str(folder / "numbers.jsonl"), "--name", "numbers", "--out", str(tmp_path / "numbers")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "numbers" / "prepare_report.json").read_text())["num_classes"] == 2
    multi = [{"image": r["image"], "text": r["text"], "labels": json.dumps([r["label"].strip(), "thing"])} for r in rows[:30]]
    _write_csv(folder / "multi.csv", multi, ("image", "text", "labels"))
    result = runner.invoke(app, ["data", "import", str(folder / "multi.csv"), "--name", "multi", "--out", str(tmp_path / "multi")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "multi" / "prepare_report.json").read_text())["num_classes"] == 3


def test_imports_say_which_row_is_wrong_and_read_one_label_lists(tmp_path):
    """A bad JSON line is that row's drop with its line number, not the end of the import; a split of
    another name is recorded as given; a single-label import reads ["a"] as a and drops several labels
    with the reason, instead of making class names of the lists."""
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = _pairs_folder(folder, 40)
    with open(folder / "pairs.jsonl", "w") as f:
        for i, row in enumerate(rows):
            f.write("{broken\n" if i == 12 else json.dumps({**row, "split": "holdout" if i == 20 else ("train", "train", "val", "test")[i % 4]}) + "\n")
    result = runner.invoke(app, ["data", "import", str(folder / "pairs.jsonl"), "--name", "lines", "--out", str(tmp_path / "lines")])
    assert result.exit_code == 0, result.output
    dropped = [json.loads(line) for line in (tmp_path / "lines" / "dropped.jsonl").read_text().splitlines()]
    assert {(d["split"], d["id"]) for d in dropped} == {("train", "line 13"), ("holdout", "row 21")}, dropped
    assert "line 13 is not JSON" in next(d["detail"] for d in dropped if d["id"] == "line 13")
    listed = [{"image": row["image"], "text": row["text"], "labels": json.dumps([row["label"]] if i % 4 else [row["label"], "other"])} for i, row in enumerate(rows)]
    _write_csv(folder / "lists.csv", listed, ("image", "text", "labels"))
    result = runner.invoke(app, ["data", "import", str(folder / "lists.csv"), "--name", "lists", "--task", "single-label", "--out", str(tmp_path / "lists")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "lists" / "classes.json").read_text()) == sorted({row["label"] for row in rows})
    reasons = {json.loads(line)["detail"] for line in (tmp_path / "lists" / "dropped.jsonl").read_text().splitlines()}
    assert reasons == {"several labels in a single-label import (import it with --task multi-label)"}


@pytest.mark.parametrize(
    "make, said",
    [
        (lambda f: (f / "p.parquet").write_bytes(b""), "cannot read"),
        (lambda f: (f / "p.parquet").write_text("image,text,label\n"), "as parquet"),
        (lambda f: pq.write_table(pa.table({"image": pa.array([], pa.string()), "text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), f / "p.parquet"), "holds no pairs"),
    ],
)
def test_a_parquet_file_that_is_empty_or_not_parquet_is_one_line(tmp_path, make, said):
    make(tmp_path)
    result = runner.invoke(app, ["data", "import", str(tmp_path / "p.parquet"), "--name", "mine", "--out", str(tmp_path / "out")])
    _one_line_refusal(result)
    assert said in _said(result)


def test_a_too_long_name_is_one_line(tmp_path):
    (tmp_path / "p.csv").write_text("image,text,label\n")
    result = runner.invoke(app, ["data", "import", str(tmp_path / "p.csv"), "--name", "a" * 300])
    _one_line_refusal(result)
    assert "at most 64" in _said(result)


# ------------------------------------------------------------------------- the Hub: errors and cache


def _release(trained, tmp_path, *extra):
    release = tmp_path / "release"
    result = runner.invoke(app, ["release", str(trained / "bundle"), "--out", str(release), *extra])
    assert result.exit_code == 0, result.output
    return release


def test_push_in_offline_mode_is_one_line(trained, tmp_path, monkeypatch):
    import huggingface_hub.constants

    release = _release(trained, tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    result = runner.invoke(app, ["release", "push", str(release), "--repo", "org/mitp-food"])
    _one_line_refusal(result)
    assert "HF_HUB_OFFLINE=1 is set" in _said(result)


@pytest.mark.parametrize(
    "status, said",
    [(401, "refused the token"), (403, "write access"), (404, "no such repository"), (429, "rate-limiting"), (503, "try again later")],
)
def test_every_refusal_of_the_hub_on_push_is_one_line_without_the_token(trained, tmp_path, loopback, monkeypatch, status, said):
    import huggingface_hub.constants

    release = _release(trained, tmp_path)
    hub = loopback()
    headers = {"X-Error-Code": "RepoNotFound"} if status == 404 else {}
    hub.routes["/api/repos/create"] = Route(b'{"error": "no"}', status=status, headers=headers)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url("").rstrip("/"))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_loopback")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    result = runner.invoke(app, ["release", "push", str(release), "--repo", "org/mitp-food"])
    _one_line_refusal(result)
    assert said in _said(result) and "hf_secret_loopback" not in result.output, result.output


def test_a_hub_that_cannot_be_reached_is_one_line(trained, tmp_path, monkeypatch):
    import socket

    import huggingface_hub.constants

    release = _release(trained, tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", "hf_loopback")
    result = runner.invoke(app, ["release", "push", str(release), "--repo", "org/mitp-food"])
    _one_line_refusal(result)
    assert "cannot reach the Hub" in _said(result)


def _cache_snapshot(folder, hf_home, repo="org/mitp-food"):
    """`folder` laid out as the Hub's cache holds a downloaded repository: every file a link into blobs/."""
    base = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "a" * 40
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    for i, path in enumerate(sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))):
        blob = base / "blobs" / f"{i:040x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        link = base / "snapshots" / commit / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return base / "snapshots" / commit


def test_a_release_in_the_hub_cache_predicts_and_verifies(trained, tmp_path, monkeypatch):
    import huggingface_hub.constants

    release = _release(trained, tmp_path)
    hf_home = tmp_path / "hf"
    _cache_snapshot(release, hf_home)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.chdir(tmp_path)
    image = next((release / "test_vectors").glob("*.jpg"))
    result = runner.invoke(app, ["predict", str(image), "red", "--model", "org/mitp-food", "--json"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["bundle", "verify", str(next((hf_home / "hub").glob("models--*/snapshots/*")))]).exit_code == 0


# ---------------------------------------------------------------------------------- the model card


def test_the_card_names_its_library_and_base_model_and_promises_no_widget(trained, tmp_path):
    from huggingface_hub import ModelCard

    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    (run / "metrics-test.json").unlink(missing_ok=True)
    release = tmp_path / "release"
    result = runner.invoke(app, ["release", str(run), "--bundle", str(trained / "bundle"), "--out", str(release)])
    assert result.exit_code == 0, result.output
    assert "never evaluated" in _said(result) and "mitp evaluate" in _said(result)
    card = ModelCard.load(release / "README.md")
    assert card.data.library_name == "mitp" and card.data.pipeline_tag is None and not card.data.eval_results
    assert "text-image-classification" in card.data.tags and card.data.base_model is None  # preset:tiny is no Hub model


def test_the_card_escapes_markup_in_labels_and_names_a_hub_base_model(trained, tmp_path):
    from huggingface_hub import ModelCard

    from mitp.ship.release import model_card

    contract = json.loads((trained / "bundle" / "bundle.json").read_text())
    contract["labels"] = ["<img src=x onerror=alert(1)>", "**bold** [link](http://x)"]
    contract["dataset"] = "<script>x</script>"
    contract["source"]["backbone"] = "local folder 'clip'"
    contract["source"]["backbone_hub_id"] = "openai/clip-vit-large-patch14"
    text = model_card(contract, None)
    body = text.split("---", 2)[2]
    assert "<img" not in body and "<script>" not in body and "**bold**" not in body and "[link](" not in body
    (tmp_path / "README.md").write_text(text)
    assert ModelCard.load(tmp_path / "README.md").data.base_model == "openai/clip-vit-large-patch14"


def test_a_release_carries_no_path_of_the_building_machine(trained, tmp_path):
    from mitp.ship.release import _shareable, public_backbone

    assert public_backbone(str(tmp_path / "models" / "clip")) == "local folder 'clip'"
    assert public_backbone("openai/clip-vit-large-patch14") == "openai/clip-vit-large-patch14"
    shared = _shareable({"backbone": {"name": str(tmp_path / "clip")}, "data": {"prepared": "/x", "fingerprint": "f"}, "cwd": str(tmp_path)})
    assert str(tmp_path) not in json.dumps(shared) and shared["data"] == {"fingerprint": "f"}


# --------------------------------------------------------------------- links and rebuilds of outputs


def test_links_in_a_bundle_never_leave_as_their_targets(trained, tmp_path, loopback, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(trained / "bundle", bundle)
    secret = tmp_path / "secret.txt"
    secret.write_text("hf_do_not_leak")
    (bundle / "notes.txt").symlink_to(secret)  # named by nothing in the bundle
    release = tmp_path / "release"
    assert runner.invoke(app, ["release", str(bundle), "--out", str(release)]).exit_code == 0
    assert not (release / "notes.txt").exists()
    (release / "extra.txt").symlink_to(secret)  # a link put in the release afterwards is not uploaded
    (release / "README.md").unlink()
    (release / "README.md").symlink_to(secret)
    result = runner.invoke(app, ["release", "push", str(release), "--repo", "org/name"])
    _one_line_refusal(result)
    assert "README.md" in _said(result) and "nothing was uploaded" in _said(result)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "README.md").write_text("x")
    (plain / "bundle.json").write_text("{}")
    result = runner.invoke(app, ["release", "push", str(plain), "--repo", "org/name"])
    _one_line_refusal(result)
    assert "not a release folder written by `mitp release`" in _said(result)


def test_rebuilding_a_release_keeps_files_a_user_added_or_edited(trained, tmp_path):
    release = _release(trained, tmp_path)
    (release / "test_vectors" / "mine.txt").write_text("mine")
    result = runner.invoke(app, ["release", str(trained / "bundle"), "--out", str(release)])
    _one_line_refusal(result)
    assert "test_vectors/mine.txt" in _said(result) and (release / "test_vectors" / "mine.txt").is_file()
    (release / "test_vectors" / "mine.txt").unlink()
    (release / "README.md").write_text((release / "README.md").read_text() + "\nMy own words.\n")
    result = runner.invoke(app, ["release", str(trained / "bundle"), "--out", str(release)])
    _one_line_refusal(result)
    assert "README.md (edited)" in _said(result) and "My own words" in (release / "README.md").read_text()


# ---------------------------------------------------------------------- damaged or hostile bundles


def _deep(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "damage, said",
    [
        (lambda b: (b / "tokenizer.json").write_text("{not json"), "not a tokenizers file"),
        (lambda b: (b / "tokenizer.json").unlink(), "tokenizer"),
        (lambda b: (b / "bundle.json").write_text(_deep(100_000)), "not valid JSON"),
        (lambda b: _edit(b / "bundle.json", lambda c: c.update(labels="food")), "labels must be a list"),
        (lambda b: _edit(b / "bundle.json", lambda c: c.update(models={"fp64": {"file": "model.onnx"}})), "not among this mitp's variants"),
        (lambda b: _edit(b / "bundle.json", lambda c: c["tokenizer"].update(max_length="77")), "max_length"),
        (lambda b: _edit(b / "bundle.json", lambda c: c.update(dataset=["x"])), "dataset must be text"),
        (lambda b: (b / "test_vectors" / "vectors.json").write_text('{"vectors": ' + _deep(100_000) + "}"), "not readable JSON"),
        (lambda b: _edit(b / "test_vectors" / "vectors.json", lambda v: v["vectors"][0].update(input_ids="x")), "input_ids"),
        (lambda b: _edit(b / "test_vectors" / "vectors.json", lambda v: v["vectors"][0].update(logits={})), "logits"),
        (lambda b: _edit(b / "test_vectors" / "vectors.json", lambda v: v.update(vectors=[])), "holds no test vectors"),
        (lambda b: shutil.rmtree(b / "test_vectors"), "has no test vectors"),
        (lambda b: _link_out(b, "model.onnx"), "'model.onnx' leads out of the bundle"),
        (lambda b: _edit(b / "bundle.json", lambda c: c.update(mitp_bundle_format=str(c["mitp_bundle_format"]))), "is bundle format '"),
    ],
)
def test_a_damaged_bundle_is_one_line_and_never_verified(trained, tmp_path, damage, said):
    bundle = tmp_path / "bundle"
    shutil.copytree(trained / "bundle", bundle)
    damage(bundle)
    result = runner.invoke(app, ["bundle", "verify", str(bundle)])
    _one_line_refusal(result)
    assert said in _said(result), result.output
    assert "verified" not in result.output.replace("cannot be verified", "")


def _link_out(bundle, name):
    """`name` moved out of the bundle and linked back in."""
    outside = bundle.parent / f"outside-{name}"
    (bundle / name).rename(outside)
    (bundle / name).symlink_to(outside)


def _edit(path, change):
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def test_a_damaged_result_is_one_line_for_release(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    (run / "result.json").write_text("[1, 2")
    result = runner.invoke(app, ["release", str(run), "--bundle", str(trained / "bundle"), "--out", str(tmp_path / "release")])
    _one_line_refusal(result)
    assert "result.json" in _said(result) and "damaged" in _said(result)


# ------------------------------------------------------------------------------------ the site server


def test_serve_sends_only_regular_files_inside_the_site(tmp_path):
    import threading

    from mitp.runtime.site import site_server

    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "site.json").write_text("{}")
    (site / "index.html").write_text("<p>hi</p>")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (site / "leak.txt").symlink_to(secret)
    (site / "linked").symlink_to(tmp_path, target_is_directory=True)
    server = site_server(site, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert urllib.request.urlopen(base + "/index.html").read() == b"<p>hi</p>"
        for path in ("/leak.txt", "/linked/secret.txt", "/linked/", "/sub/", "/.mitp-output", "/index.html%00.txt"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path)
            assert refused.value.code == 404, path
    finally:
        server.shutdown()
        server.server_close()
    result = runner.invoke(app, ["bundle", "serve", str(site), "--host", ""])
    _one_line_refusal(result)
    assert "every interface" in _said(result)


# ------------------------------------------------------------------------------------ memory per image


def test_decodes_across_workers_stay_within_the_pixel_budget():
    import threading
    import time

    from mitp.data.cache import PixelBudget

    budget, peak, lock = PixelBudget(10), [0], threading.Lock()

    def decode(pixels):
        with budget.hold(pixels):
            with lock:
                peak[0] = max(peak[0], budget.used)
            time.sleep(0.02)

    threads = [threading.Thread(target=decode, args=(n,)) for n in (8, 8, 3, 30, 2)]  # 30: more than all, held alone
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] <= 10 and budget.used == 0 and not any(t.is_alive() for t in threads)


def test_the_cache_opens_each_image_once_and_holds_its_pixels_while_decoding(tmp_path, monkeypatch):
    """The pixel budget is sized from the header of the same open that decodes (no second open per image,
    which costs a round trip on a network file system), and a broken image still gets its own message."""
    import os

    import numpy as np
    from PIL import Image

    import mitp.data.cache as cache
    import mitp.runtime.preprocess as preprocess

    paths = []
    for n, (w, h) in enumerate([(40, 30), (64, 64), (33, 50)]):
        paths.append(tmp_path / f"{n}.png")
        Image.fromarray(np.full((h, w, 3), 40 * n, np.uint8)).save(paths[-1])
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths.append(tmp_path / "broken.jpg")
    opens, held = [], []
    real_open, real_hold = Image.open, cache.PixelBudget.hold
    monkeypatch.setattr(preprocess.Image, "open", lambda path, *a, **k: opens.append(os.path.basename(path)) or real_open(path, *a, **k))
    monkeypatch.setattr(cache.PixelBudget, "hold", lambda self, pixels: held.append(pixels) or real_hold(self, pixels))
    pixels = np.zeros((len(paths), 16, 16, 3), np.uint8)
    problems = cache.decode_all(paths, 16, workers=2, pixels=pixels)
    assert sorted(opens) == sorted(p.name for p in paths)  # once each
    assert sorted(held) == sorted([40 * 30, 64 * 64, 33 * 50])
    assert list(problems) == [paths[-1]] and "cannot decode image" in str(problems[paths[-1]])
    assert pixels[1].mean() == 40 and pixels[2].mean() == 80


def test_alpha_and_sixteen_bit_images_convert_by_bands_to_the_same_pixels(monkeypatch):
    import numpy as np

    import mitp.runtime.preprocess as preprocess

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (97, 61, 4), dtype=np.uint8)
    deep = rng.integers(0, 65536, (97, 61), dtype=np.uint16)
    whole = [np.asarray(preprocess.to_rgb(Image.fromarray(rgba, "RGBA"))), np.asarray(preprocess.to_rgb(Image.fromarray(deep)))]
    monkeypatch.setattr(preprocess, "BAND_BYTES", 1)  # one row a band
    banded = [np.asarray(preprocess.to_rgb(Image.fromarray(rgba, "RGBA"))), np.asarray(preprocess.to_rgb(Image.fromarray(deep)))]
    alpha = rgba[..., 3:].astype(np.int32)
    expected = ((rgba[..., :3].astype(np.int32) * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    assert (whole[0] == expected).all() and (banded[0] == expected).all()
    assert (whole[1] == banded[1]).all() and (banded[1][..., 0] == (deep >> 8)).all()
