"""`mitp data import`: a data set of your own from a CSV, JSON lines or parquet file, with the checks and
report of the upstream ones, trainable by naming it in the config."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from typer.testing import CliRunner

from mitp.cli import app

runner = CliRunner()
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def _images(folder, count=40):
    rows = []
    for i in range(count):
        colour = ("red", "blue")[i % 2]
        path = folder / "pics" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), COLOURS[colour]).save(path)
        rows.append({"image": f"pics/{i}.png", "text": f"a {colour} thing number {i}", "label": colour})
    return rows


def _said(result):
    return " ".join(result.output.split())


def test_a_csv_without_splits_is_prepared_carved_and_trainable(tmp_path, write_config):
    rows = _images(tmp_path / "mine")
    rows[3]["text"] = ""  # dropped: empty text
    rows[5]["image"] = "../../elsewhere.png"  # dropped: outside the pairs file's folder
    lines = ["image,text,label", *(f"{r['image']},{r['text']},{r['label']}" for r in rows)]
    (tmp_path / "mine" / "pairs.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "data" / "mine"
    result = runner.invoke(app, ["data", "import", str(tmp_path / "mine" / "pairs.csv"), "--name", "mine", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "prepared mine" in _said(result) and f"datasets: {{mine: {{task: single-label, data_dir: {out}}}}}" in _said(result)
    report = json.loads((out / "prepare_report.json").read_text())
    assert json.loads((out / "classes.json").read_text()) == ["blue", "red"]
    assert sum(report["counts"].values()) == 38 and min(report["counts"].values()) >= 2
    assert report["dropped"]["train"] == {"image path outside the data set": 1, "missing text": 1}
    assert "splits_carved" in report and set(report["splits"]) == {"train", "val", "test"}
    config = {
        "backbone": "preset:tiny",
        "train": {"num_workers": 0, "epochs": 1},
        "datasets": {"mine": {"task": "single-label", "data_dir": str(out), "best_layers": [2, 3], "small_layers": [3], "batch_size": 8}},
        "settings": {"mitp": {"variant": "mitp"}},
    }
    trained = runner.invoke(app, ["train", "-c", str(write_config(config)), "-d", "mine", "--out", str(tmp_path / "run"), "--no-progress"])
    assert trained.exit_code == 0, trained.output
    assert json.loads((tmp_path / "run" / "result.json").read_text())["dataset"] == "mine"


def test_json_lines_with_labels_and_splits_and_parquet_alike(tmp_path):
    rows = _images(tmp_path / "mine")
    for i, row in enumerate(rows):
        row["labels"] = [row.pop("label"), "thing"] if i % 3 else [row["text"].split()[1]]
        row["split"] = ("train", "train", "val", "test")[i % 4]
    (tmp_path / "mine" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mine" / "pairs.parquet")
    for name in ("pairs.jsonl", "pairs.parquet"):
        out = tmp_path / "data" / name.replace(".", "-")
        result = runner.invoke(app, ["data", "import", str(tmp_path / "mine" / name), "--name", "tags", "--out", str(out)])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "prepare_report.json").read_text())
        assert report["task"] == "multi-label" and report["counts"] == {"train": 20, "val": 10, "test": 10}
        assert json.loads((out / "classes.json").read_text()) == ["blue", "red", "thing"]
        assert pq.read_table(out / "train.parquet").column("labels").to_pylist()[1] == ["blue", "thing"]


def test_bad_pairs_files_get_one_clear_line(tmp_path):
    folder = tmp_path / "mine"
    rows = _images(folder, 8)
    (folder / "pairs.txt").write_text("x")
    (folder / "mixed.jsonl").write_text("".join(json.dumps({**r, **({"split": "train"} if i else {})}) + "\n" for i, r in enumerate(rows)))
    (folder / "nolabel.csv").write_text("image,text\npics/0.png,red\n")
    (folder / "broken.jsonl").write_text('{"image": "pics/0.png"\n')
    for args, message in (
        (["pairs.txt", "--name", "mine"], "a pairs file is .csv, .jsonl or .parquet"),
        (["mixed.jsonl", "--name", "mine"], "some rows name a split and others do not"),
        (["nolabel.csv", "--name", "mine"], "each row needs image, text and label"),
        (["broken.jsonl", "--name", "mine"], "cannot read"),
        (["absent.csv", "--name", "mine"], "pairs file not found"),
        (["nolabel.csv", "--name", "Mine Set"], "a data set name is lower-case words"),
    ):
        result = runner.invoke(app, ["data", "import", str(folder / args[0]), *args[1:], "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and message in _said(result) and "Traceback" not in result.output, (args, result.output)
    assert not (tmp_path / "out").exists()
