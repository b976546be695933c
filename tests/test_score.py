"""`mitp score`: a collection scored shard by shard with a bundle, against `mitp predict` on the same pairs;
a bad row recorded with its reason, a rerun scoring only what is missing, another bundle's DIR refused."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mitp.cli import app

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

runner = CliRunner()


def _collection(trained, into, shards: int = 1):
    """The food twin's test pairs as `shards` parquet files under `into` (image paths relative to it), and a
    pair whose image is missing in the last."""
    table = pq.read_table(trained / "food" / "test.parquet").to_pydict()
    into.mkdir(parents=True)
    (into / "raw").symlink_to(trained / "raw")
    paths = [p.removeprefix("../") for p in table["image"]]  # ../raw/images/... from the prepared folder
    records = [{"id": f"pair-{i}", "image": p, "caption": t} for i, (p, t) in enumerate(zip(paths, table["text"], strict=True))]
    records.append({"id": "missing", "image": "no-such.jpg", "caption": "a red plate"})
    size = -(-len(records) // shards)
    for k in range(shards):
        pq.write_table(pa.Table.from_pylist(records[k * size : (k + 1) * size]), into / f"part-{k}.parquet")
    return records


def test_scores_equal_predict_and_a_bad_row_is_recorded_not_fatal(trained, tmp_path):
    records = _collection(trained, tmp_path / "in")
    result = runner.invoke(app, ["score", str(tmp_path / "in" / "part-0.parquet"), "--model", str(trained / "bundle"), "--out", str(tmp_path / "scores"), "--workers", "0", "--no-progress", "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    assert "1 could not be scored" in " ".join(result.output.split())
    scores = pq.read_table(tmp_path / "scores" / "shards" / "part-0.parquet").to_pylist()
    assert [s["id"] for s in scores] == [r["id"] for r in records]  # one output row per input row, in order
    missing = scores[-1]
    assert missing["label"] is None and "image not found" in missing["error"]
    for record, scored in list(zip(records, scores, strict=True))[:3]:
        predicted = runner.invoke(app, ["predict", str(tmp_path / "in" / record["image"]), record["caption"], "--model", str(trained / "bundle"), "--json", "--provider", "cpu"])
        expected = json.loads(predicted.stdout)
        assert scored["label"] == "|".join(expected["labels"]) and scored["error"] is None
        assert scored["score"] == pytest.approx(expected["scores"][scored["label"]], abs=1e-5)
    manifest = json.loads((tmp_path / "scores" / "manifest.json").read_text())
    assert manifest["rows_in"] == len(records) and manifest["rows_failed"] == 1 and manifest["complete"]
    assert manifest["bundle"]["variant"] == "fp32" and len(manifest["bundle"]["model_sha256"]) == 64


def test_a_rerun_scores_only_missing_shards_and_another_variant_is_refused(trained, tmp_path):
    records = _collection(trained, tmp_path / "in", shards=3)
    args = ["score", str(tmp_path / "in"), "--model", str(trained / "bundle"), "--out", str(tmp_path / "scores"), "--no-progress", "--provider", "cpu", "--batch-size", "4"]
    assert runner.invoke(app, [*args, "--workers", "1"]).exit_code == 0  # decoded in a worker process
    files = sorted((tmp_path / "scores" / "shards").glob("*.parquet"))
    assert [f.name for f in files] == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert sorted(f.name for f in (tmp_path / "scores" / "shards").glob("*.json")) == ["part-0.json", "part-1.json", "part-2.json"]
    kept = {f.name: f.stat().st_mtime_ns for f in files}
    files[1].unlink()  # as a kill before that shard was written leaves it
    result = runner.invoke(app, [*args, "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "scores" / "shards" / "part-1.parquet").is_file()
    assert {f.name: f.stat().st_mtime_ns for f in files if f.name != "part-1.parquet"} == {k: v for k, v in kept.items() if k != "part-1.parquet"}
    ids = [row["id"] for f in sorted((tmp_path / "scores" / "shards").glob("*.parquet")) for row in pq.read_table(f).to_pylist()]
    assert sorted(ids) == sorted(r["id"] for r in records) and len(ids) == len(set(ids))  # exactly once each
    alone = runner.invoke(app, [*args[:5], str(tmp_path / "one"), *args[6:], "--shard", "part-2"])  # one job's share
    assert alone.exit_code == 0 and "more shards to score" in alone.output, alone.output
    assert [f.name for f in (tmp_path / "one" / "shards").glob("*.parquet")] == ["part-2.parquet"]
    assert "no shard named part-9" in " ".join(runner.invoke(app, [*args, "--shard", "part-9"]).output.split())
    refused = runner.invoke(app, [*args, "--variant", "int8"])
    assert refused.exit_code != 0 and "never mixed" in " ".join(refused.output.split())
    assert refused.exception is None or isinstance(refused.exception, SystemExit)


def test_a_run_killed_mid_shard_resumes_to_exactly_one_row_per_input_row(trained, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    base = _collection(trained, tmp_path / "in", shards=1)
    (tmp_path / "in" / "part-0.parquet").unlink()
    records = [{**r, "id": f"{r['id']}-{k}"} for k in range(40) for r in base]  # 40 copies: long enough to be killed inside
    for s in range(3):
        pq.write_table(pa.Table.from_pylist(records[s::3]), tmp_path / "in" / f"part-{s}.parquet")
    args = ["score", str(tmp_path / "in"), "--model", str(trained / "bundle"), "--out", str(tmp_path / "scores"), "--no-progress", "--provider", "cpu", "--batch-size", "1", "--workers", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    process = subprocess.Popen([sys.executable, "-m", "mitp.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    first = tmp_path / "scores" / "shards" / "part-0.parquet"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert first.is_file() and not (tmp_path / "scores" / "shards" / "part-2.parquet").exists()  # killed inside the run
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ids = [row["id"] for f in sorted((tmp_path / "scores" / "shards").glob("*.parquet")) for row in pq.read_table(f).to_pylist()]
    assert len(ids) == len(records) and sorted(ids) == sorted(r["id"] for r in records)
    assert not [p.name for p in (tmp_path / "scores").rglob(".*") if p.name != ".mitp-output"]  # no partial file left
    manifest = json.loads((tmp_path / "scores" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows_in"] == len(records) and manifest["rows_failed"] == 40


def test_the_workflow_scatters_the_shards_over_jobs_and_gathers_one_manifest(trained, tmp_path):
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    records = _collection(trained, tmp_path / "in", shards=3)
    block = {"score": {"input": str(tmp_path / "in"), "model": str(trained / "bundle"), "out": str(tmp_path / "scores"), "gpus": 0, "batch_size": 4}}
    (tmp_path / "score.yaml").write_text(json.dumps(block))  # JSON is YAML
    command = ["snakemake", "-s", str(root / "Snakefile"), "--configfile", str(root / "config.yaml"), str(tmp_path / "score.yaml"), "--cores", "2", "--", "score"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    planned = subprocess.run([*command[:-2], "-n", "--quiet", "rules", "--", "score"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert {tuple(line.split()) for line in planned.stdout.splitlines() if line.startswith("score")} == {("score", "1"), ("score_shard", "3")}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "scores" / "manifest.json").read_text())
    assert manifest["complete"] and sorted(manifest["shards"]) == ["part-0", "part-1", "part-2"]
    assert manifest["rows_in"] == len(records) and manifest["rows_failed"] == 1
