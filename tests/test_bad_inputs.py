"""Bad inputs a new user meets: each gets one clear message and a non-zero exit, and nothing is lost."""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from mitp.cli import app
from mitp.config import ConfigError, load_config, parse_config
from mitp.data.prepare import prepare_dataset
from mitp.data.twins import make_twin
from mitp.files.fetch import DownloadError, fetch
from mitp.train import runs as train_module

from .conftest import PROJECT_CONFIG, synthetic_config
from .loopback import Route

runner = CliRunner()
SMALL = {"train": 24, "val": 8, "test": 8}


def fails(args: list[str], message: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    return result.output


# ------------------------------------------------------------------------------ commands own their outputs


@pytest.fixture
def prepared_food(prepared_twin, tmp_path):
    return prepared_twin("demo-food101", into=tmp_path / "data", raw="raw/food", prepared="food").parent


def test_outputs_that_belong_to_someone_else_are_refused(prepared_food, tmp_path, monkeypatch):
    data = prepared_food
    raw = data / "raw" / "food"
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    fails(["data", "prepare", "demo-food101", "--raw", str(raw), "--out", str(data)], "would replace the input")
    fails(["data", "prepare", "demo-food101", "--raw", str(raw), "--out", str(raw)], "would replace the input")
    fails(["data", "prepare", "demo-food101", "--raw", str(raw), "--out", str(user)], "was not written by mitp")
    fails(["data", "download", "demo-food101", "--raw", str(user)], "was not written by mitp")
    fails(["export", "--checkpoint", str(data / "food"), "--out", str(data / "food")], "would replace the input")
    fails(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(data / "food")], "was written by mitp data prepare")
    fails(["report", "--runs", str(tmp_path), "--out", str(user)], "was not written by mitp")
    monkeypatch.chdir(data / "food")
    fails(["data", "prepare", "demo-food101", "--raw", str(raw), "--out", "."], "is the current folder")
    monkeypatch.chdir(tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (user / "notes.txt").read_text() == "my notes"
    # an earlier output of the same command may be replaced
    result = runner.invoke(app, ["data", "prepare", "demo-food101", "--raw", str(raw), "--out", str(data / "food")])
    assert result.exit_code == 0, result.output


def test_prepare_never_deletes_another_output_or_a_users_file_inside_its_folder(prepared_twin, tmp_path):
    prepared = prepared_twin(into=tmp_path, prepared="food")
    raw = tmp_path / "raw"
    (prepared / "myrun").mkdir()
    (prepared / "myrun" / ".mitp-output").write_text('{"kind": "run", "command": "mitp train"}')
    (prepared / "myrun" / "result.json").write_text("{}")
    fails(["data", "prepare", "demo-food101", "--raw", str(raw), "--out", str(prepared)], "myrun")
    assert (prepared / "myrun" / "result.json").is_file()
    shutil.rmtree(prepared / "myrun")
    (prepared / "notes.md").write_text("mine")
    fails(["data", "prepare", "demo-food101", "--raw", str(raw), "--out", str(prepared)], "holds notes.md, which mitp data prepare did not write")
    (prepared / "notes.md").unlink()
    assert runner.invoke(app, ["data", "prepare", "demo-food101", "--raw", str(raw), "--out", str(prepared)]).exit_code == 0


def test_out_through_a_symlink_replaces_the_folder_it_points_to_and_a_mount_point_is_refused(prepared_twin, tmp_path, monkeypatch):
    prepared = prepared_twin(into=tmp_path, prepared="food")
    link = tmp_path / "link"
    link.symlink_to(prepared)
    result = runner.invoke(app, ["data", "prepare", "demo-food101", "--raw", str(tmp_path / "raw"), "--out", str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and (link / "train.parquet").is_file() and (prepared / "train.parquet").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no hidden half-built folder left
    mount = tmp_path / "mnt"
    mount.mkdir()
    monkeypatch.setattr(Path, "is_mount", lambda self: self == mount)
    fails(["data", "prepare", "demo-food101", "--raw", str(tmp_path / "raw"), "--out", str(mount)], "is a mount point")


def test_export_refuses_a_run_folder_as_its_output(tmp_path, write_config):
    config = write_config(synthetic_config(epochs=1, sizes=SMALL))
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", "-c", str(config), "-d", "toy", "--out", str(run), "--no-progress"]).exit_code == 0
    other = tmp_path / "other-run"
    assert runner.invoke(app, ["train", "-c", str(config), "-d", "toy", "--out", str(other), "--no-progress"]).exit_code == 0
    fails(["export", "--checkpoint", str(run), "--out", str(other)], "was written by mitp train")
    assert (other / "best" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------ bad data, early and clear


def _rewrite(path: Path, change) -> None:
    table = pq.read_table(path).to_pydict()
    change(table)
    pq.write_table(pa.table(table), path)


@pytest.fixture
def food_config(prepared_food, tmp_path):
    def write(data_dir: Path = prepared_food / "food") -> Path:
        config = synthetic_config(epochs=1)
        config["datasets"] = {"food": {
            "task": "single-label", "data_dir": str(data_dir), "batch_size": 16, "prompt_length": 2,
            "best_layers": [2, 3], "small_layers": [3], "templates": ["a photo of {}."],
        }}
        path = tmp_path / "food.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: _rewrite(d / "train.parquet", lambda t: [t[k].clear() for k in t]), "the train split is empty"),
        (lambda d: _rewrite(d / "train.parquet", lambda t: t["text"].__setitem__(2, None)), "row(s) [2] have no text"),
        (lambda d: (d / "val.parquet").write_bytes((d / "val.parquet").read_bytes()[:200]), "cannot read"),
        (lambda d: (d / "classes.json").write_text('["a", "b"'), "classes.json is not valid JSON"),
        (lambda d: (d / "classes.json").write_text('{"a": 1}'), "expected a JSON list"),
        (lambda d: (d / pq.read_table(d / "val.parquet").to_pydict()["image"][0]).write_bytes(b"broken"), "cannot be used"),
    ],
    ids=["empty-train", "null-caption", "truncated-parquet", "malformed-classes", "classes-not-a-list", "bad-val-image"],
)
def test_bad_prepared_data_stops_before_any_training_step(prepared_food, food_config, tmp_path, monkeypatch, damage, message):
    damage(prepared_food / "food")
    monkeypatch.setattr(train_module, "load_backbone", lambda *a, **k: pytest.fail("the backbone loaded before the data were checked"))
    fails(["train", "-c", str(food_config()), "-d", "food", "--out", str(tmp_path / "run")], message)
    assert not (tmp_path / "run" / "history.json").exists()


def test_training_on_an_unprepared_data_set_says_prepare_first(food_config, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "load_backbone", lambda *a, **k: pytest.fail("the backbone loaded first"))
    fails(["train", "-c", str(food_config(tmp_path / "nowhere")), "-d", "food", "--out", str(tmp_path / "run")], "prepare the data set first")


# ------------------------------------------------------------------------------ config errors, before any work


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["datasets"]["food101"].update(lr="abc"), "datasets.food101.lr: expected a number, got 'abc'"),
        (lambda r: r["train"].update(grad_clip="big"), "train.grad_clip: expected a number, got 'big'"),
        (lambda r: r["datasets"]["food101"].update(best_layers=5), "datasets.food101.best_layers: expected a list, got 5"),
        (lambda r: r["grid"][0].update(similarities="cos"), "grid[0].similarities: expected a list, got 'cos'"),
        (lambda r: r["settings"]["mitp"].update(head="text"), "settings.mitp.head: 'text' is not one of fused, image"),
        (lambda r: r["datasets"]["synthetic"]["synthetic"].update(colours=3), "datasets.synthetic.synthetic: unknown key(s) colours"),
        (lambda r: r["datasets"]["synthetic"]["synthetic"].update(noise="high"), "datasets.synthetic.synthetic.noise: expected a number"),
    ],
)
def test_bad_config_values_name_their_key(mutate, message):
    raw = yaml.safe_load(PROJECT_CONFIG.read_text())
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert message in str(err.value)


def test_yaml_floats_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(PROJECT_CONFIG.read_text().replace("lr: 2.0e-4", "lr: 2e-4"))
    assert "lr: 2e-4" in path.read_text()
    assert load_config(path).train.lr == pytest.approx(2e-4)


def test_command_line_overrides_and_backbones_are_checked(write_config, tmp_path, monkeypatch):
    config = str(write_config(synthetic_config(epochs=1, sizes=SMALL)))
    out = str(tmp_path / "run")
    fails(["train", "-c", config, "-d", "toy", "--out", out, "--lr", "-1"], "lr: must be > 0, got -1.0")
    fails(["train", "-c", config, "-d", "toy", "--out", out, "--fraction", "2"], "train.fraction: must be in (0, 1]")
    fails(["train", "-c", config, "-d", "toy", "--out", out, "--precision", "fp8"], "train.precision: 'fp8' is not one of")
    fails(["train", "-c", config, "-d", "toy", "--out", out, "--backbone", "preset:vit-h-14"], "unknown preset 'vit-h-14'")
    fails(["info", "-c", config, "-d", "toy", "--backbone", "preset:nope"], "unknown preset 'nope'")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    started = time.perf_counter()
    fails(["train", "-c", config, "-d", "toy", "--out", out, "--backbone", "someone/clip-that-is-not-cached"], "HF_HUB_OFFLINE=1")
    assert time.perf_counter() - started < 10
    assert not Path(out).exists()


def test_a_loss_that_is_not_finite_stops_training_with_a_message(write_config, tmp_path):
    config = str(write_config(synthetic_config(epochs=1, sizes=SMALL)))
    message = fails(["train", "-c", config, "-d", "toy", "--out", str(tmp_path / "run"), "--lr", "1e30", "--epochs", "2"], "the loss became nan")
    assert "lower the learning rate" in message and not (tmp_path / "run" / "result.json").exists()


# ------------------------------------------------------------------------------ predict inputs


def test_batch_lines_that_are_not_utf8_cost_only_their_line(trained, tmp_path):
    image = trained / "food" / pq.read_table(trained / "food" / "test.parquet").to_pydict()["image"][0]
    good = json.dumps({"image": str(image), "text": "red"}).encode()
    (tmp_path / "pairs.jsonl").write_bytes(b"\n".join([good, b'{"image": "x.jpg", "text": "caf\xe9"}', good]) + b"\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", "--batch", str(tmp_path / "pairs.jsonl"), "--out", str(out), "--model", str(trained / "bundle")])
    assert result.exit_code == 1 and "line 2: not valid UTF-8" in " ".join(result.output.split())
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [1, 3]


def test_each_kind_of_bad_batch_line_costs_only_its_line(trained, tmp_path):
    """A caption of 5 MB is read as its first 77 words (at once, truncated); a line over the size bound, JSON
    nested 200,000 deep, a 5,000-character path and a caption that is empty once cleaned each cost their line."""
    image = trained / "food" / pq.read_table(trained / "food" / "test.parquet").to_pydict()["image"][0]

    def line(text, path=str(image)):
        return json.dumps({"image": path, "text": text}).encode()

    lines = [
        line("red " * 1_250_000),  # 5 MB
        line("red"),
        b'{"image": "x.jpg", "text": "' + b"r" * (9 << 20) + b'"}',
        b"[" * 200_000,
        line("red", "a/" * 2_500),
        line("&nbsp; &amp;nbsp;"),
        line("red"),
    ]
    (tmp_path / "pairs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", "--batch", str(tmp_path / "pairs.jsonl"), "--out", str(out), "--model", str(trained / "bundle")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in said, result.output
    for number, reason in ((3, "the line has 9,437,214 bytes"), (4, "not a batch record: its JSON is nested too deeply"),
                           (5, "the image path has 5,000 characters"), (6, "the caption is empty once cleaned")):
        assert f"line {number}: {reason}" in said, (number, said)
    records = [json.loads(text) for text in out.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 7] and records[0]["truncated"] is True


def test_the_tokenizer_reads_only_a_captions_head_and_gets_the_same_ids(tiny):
    """Words past the 77th are cut before tokenization; the ids and the truncated flag are those of the
    whole caption, for captions built to stress cleaning (entities that vanish, that become spaces)."""
    import random

    from mitp.runtime.tokenizer import clean_caption

    tokenizer = tiny.tokenizer
    rng = random.Random(0)
    pieces = ["red", "&nbsp;", "&amp;nbsp;", "a&#32;b", "  ", "\t", "photo,", "x" * 30, "&lt;", "1234", "\u00a0", "\u001c", "!!"]
    for _ in range(500):
        text = "".join(rng.choice(pieces) + rng.choice([" ", "", "\n"]) for _ in range(rng.randint(0, 300)))
        whole = tokenizer.tokenizer.encode_batch([clean_caption(text)])[0]
        ids, _, truncated = tokenizer.encode([text])
        assert ids[0].tolist() == whole.ids and bool(truncated[0]) == bool(whole.overflowing), text[:120]


def test_a_caption_that_is_not_utf8_is_refused():
    from mitp.runtime.predict import InputError, check_caption

    with pytest.raises(InputError, match="not valid UTF-8"):
        check_caption(b"caf\xe9".decode("utf-8", errors="surrogateescape"))


# ------------------------------------------------------------------------------ downloads


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("texts/train_titles.csv", "a.jpg,title,label\n")
    return buffer.getvalue()


def test_a_page_instead_of_an_archive_is_rejected_before_its_final_name(loopback, tmp_path):
    server = loopback()
    server.routes["/page.zip"] = Route(b"<!DOCTYPE html><html>Please log in</html>", headers={"Content-Type": "text/html"})
    server.routes["/cut.zip"] = Route(_zip()[:-30])
    for name in ("page.zip", "cut.zip"):
        with pytest.raises(DownloadError, match="did not send the expected file"):
            fetch(server.url(f"/{name}"), tmp_path / name)
        assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.part").exists()
    server.routes["/good.zip"] = Route(_zip())
    assert fetch(server.url("/good.zip"), tmp_path / "good.zip").read_bytes() == _zip()


def test_credentials_never_follow_a_redirect_to_another_host(loopback, tmp_path):
    api, storage = loopback(), loopback()
    api.routes["/api/download"] = Route(status=302, headers={"Location": storage.url("/storage/file.zip")})
    storage.routes["/storage/file.zip"] = Route(_zip())
    fetch(api.url("/api/download"), tmp_path / "file.zip", headers={"Authorization": "Basic c2VjcmV0"})
    assert api.seen("Authorization") == [("/api/download", "Basic c2VjcmV0")]
    assert storage.seen("Authorization") == [("/storage/file.zip", None)]


def test_network_failures_say_what_happened(loopback, tmp_path):
    server = loopback()
    server.routes["/private.zip"] = Route(b"unauthorized", status=401)
    with pytest.raises(DownloadError, match="check the credentials"):
        fetch(server.url("/private.zip"), tmp_path / "private.zip")
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1"):
        fetch("http://127.0.0.1:9/file.zip", tmp_path / "file.zip")  # nothing listens on port 9


# ------------------------------------------------------------------------------ report


def test_a_damaged_run_is_shown_unreadable_and_the_report_still_written(tmp_path):
    runs = tmp_path / "runs"
    folder = runs / "demo-food101" / "mitp" / "seed0"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text('{"dataset": "demo-food101", "seed"')  # cut short
    result = runner.invoke(app, [
        "report", "--runs", str(runs), "--paper", str(PROJECT_CONFIG.parent / "workflow" / "report" / "paper.yaml"),
        "--out", str(tmp_path / "report"), "--datasets", "demo-food101",
    ])
    assert result.exit_code == 0, result.output
    assert "unreadable" in result.output
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["runs_unreadable"] == [str(folder)] and (tmp_path / "report" / "table1.md").is_file()


def test_a_key_written_twice_in_the_config_is_an_error_not_the_last_one_wins(tmp_path):
    text = PROJECT_CONFIG.read_text().replace("  lr: 2.0e-4\n", "  lr: 2.0e-4\n  lr: 9.0\n", 1)
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"key 'lr' appears twice in one mapping \(lines \d+ and \d+\)"):
        load_config(tmp_path / "config.yaml")


@pytest.mark.parametrize("template", ["a photo of {}, {a} food.", "a {} with a } brace", "two slots {} and {}"])
def test_templates_that_cannot_be_filled_are_refused_when_the_config_is_read(template):
    raw = yaml.safe_load(PROJECT_CONFIG.read_text())
    raw["datasets"]["food101"]["templates"] = [template]
    with pytest.raises(ConfigError, match=r"datasets.food101.templates\[0\]: .* is not a valid template"):
        parse_config(raw)


def test_a_bundle_with_an_unknown_or_mismatched_decision_rule_is_refused():
    from mitp.runtime.bundle import BundleError, _info

    base = {
        "mitp_bundle_format": 2, "mitp_version": "0.1.0", "labels": ["a", "b"], "task": "single-label",
        "image": {"size": 32, "normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}},
        "tokenizer": {"max_length": 77}, "dataset": "d", "setting": "s", "decision": {"rule": "softmax-argmax"},
    }
    assert _info(base, "b").decision == {"rule": "softmax-argmax"}
    for decision, task in (({"rule": "top-3"}, "single-label"), ({"rule": "softmax-argmax"}, "multi-label"),
                           ({"rule": "sigmoid-threshold", "threshold": 7}, "multi-label"), ("softmax", "single-label")):
        with pytest.raises(BundleError, match="decision"):
            _info({**base, "decision": decision, "task": task}, "b")


def test_a_twin_of_another_seed_is_generated_anew_not_reported_ready(tmp_path):
    raw = tmp_path / "raw"
    assert runner.invoke(app, ["data", "download", "demo-snlive", "--raw", str(raw)]).exit_code == 0
    first = (raw / "snli_ve_test.jsonl").read_text()
    assert runner.invoke(app, ["data", "download", "demo-snlive", "--raw", str(raw), "--seed", "7"]).exit_code == 0
    assert (raw / "snli_ve_test.jsonl").read_text() != first and "seed 7" in (raw / ".complete").read_text()


# ------------------------------------------------------------------------------ paths that leave their folder


def test_an_image_path_that_leaves_the_data_set_is_dropped_not_prepared(tmp_path):
    raw = tmp_path / "raw"
    make_twin("demo-food101", raw, sizes=SMALL)
    Image.new("RGB", (40, 40), "red").save(tmp_path / "secret.png")
    absolute = tmp_path / "secret.png"
    with open(raw / "texts" / "train_titles.csv", "a") as f:
        f.write("../../../../secret.png,red served,red_stripes\n")
        f.write(f"{absolute},red served,red_stripes\n")
    report = prepare_dataset("demo-food101", raw, tmp_path / "food")
    dropped = [reasons.get("image path outside the data set", 0) for reasons in report["dropped"].values()]
    assert sum(dropped) == 2
    for split in ("train", "val", "test"):
        assert not any("secret" in path for path in pq.read_table(tmp_path / "food" / f"{split}.parquet").column("image").to_pylist())


@pytest.fixture
def bundle_copy(trained, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(trained / "bundle", copy)
    return copy


def _edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda b: _edit_json(b / "bundle.json", lambda c: c["tokenizer"].update(file="../../../../etc/passwd")), "is not a relative path inside the bundle"),
        (lambda b: _edit_json(b / "test_vectors" / "vectors.json", lambda v: v["vectors"][0].update(crop="/dev/zero")), "is not a relative path inside the bundle"),
        (lambda b: _edit_json(b / "test_vectors" / "vectors.json", lambda v: v["vectors"][0].update(crop_shape=[60000, 60000, 3])), "is not [32, 32, 3]"),
        (lambda b: _edit_json(b / "bundle.json", lambda c: c["image"].update(size=60000)), "image size 60000 is not a whole number of pixels in 1..1024"),
        (lambda b: (b / "tokenizer.json").unlink() or (b / "tokenizer.json").symlink_to("/etc/hostname"), "leads out of the bundle"),
        (lambda b: _edit_json(b / "test_vectors" / "vectors.json", lambda v: v["vectors"][0].update(image="test_vectors")), "is not a file in the bundle"),
    ],
)
def test_a_bundle_naming_files_outside_itself_or_huge_sizes_is_refused_before_reading(bundle_copy, tamper, message):
    tamper(bundle_copy)
    fails(["bundle", "verify", str(bundle_copy), "--variant", "fp32"], message)


def test_predict_refuses_a_bundle_whose_files_link_out_of_it(bundle_copy, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.copyfile(bundle_copy / "tokenizer.json", outside)
    (bundle_copy / "tokenizer.json").unlink()
    (bundle_copy / "tokenizer.json").symlink_to(outside)
    image = next((bundle_copy / "test_vectors").glob("*.jpg"))
    fails(["predict", str(image), "red", "--model", str(bundle_copy)], "leads out of the bundle")
