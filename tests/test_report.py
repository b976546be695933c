"""`mitp report`: tables beside the paper, missing runs shown as missing, plots written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from mitp.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "workflow" / "report" / "paper.yaml"


def _run(runs: Path, dataset: str, run: str, setting: str, score: dict | None, fraction: float = 1.0, seed: int = 0, head: str = "fused", layers: list[int] | None = None) -> None:
    folder = runs / dataset / run / f"seed{seed}"
    folder.mkdir(parents=True)
    metric = "f1_micro" if score and "f1_micro" in score else "accuracy"
    result = {
        "dataset": dataset, "setting": setting, "variant": "mitp", "layers": layers or [2, 3], "similarity": "cos", "fraction": fraction,
        "seed": seed, "head": head, "backbone": "preset:tiny", "metric": metric, "best_epoch": 1, "best_val_metric": 0.5, "epochs": 2,
        "train_seconds": 12.5, "peak_memory_gib": 1.25, "peak_memory_kind": "cpu max RSS", "trainable_params": 1234,
        "backbone_params": 99999, "device": "cpu", "processes": 1,
    }
    (folder / "result.json").write_text(json.dumps(result))
    (folder / "history.json").write_text(json.dumps([{"epoch": 1, "val": {metric: 0.4}}, {"epoch": 2, "val": {metric: 0.5}}]))
    if score is not None:
        (folder / "metrics-test.json").write_text(json.dumps({"metrics": score}))


def test_a_runs_meaning_comes_from_its_record_not_its_folder_name(tmp_path):
    from mitp.report.records import read_record
    from mitp.report.tables import head_pairs

    runs = tmp_path / "runs"
    _run(runs, "demo-food101", "l2-3-cos", "l2-3-cos", {"accuracy": 0.75})
    _run(runs, "demo-food101", "l4-5-mmd", "l4-5-mmd", {"accuracy": 0.75})  # named like a grid point, trained at 2-3 cos
    _run(runs, "demo-food101", "mitp-frac10", "mitp", {"accuracy": 0.7}, fraction=0.1)
    _run(runs, "demo-food101", "mitp", "mitp", {"accuracy": 0.9})
    _run(runs, "demo-food101", "read-by-image", "read-by-image", {"accuracy": 0.6}, head="image")  # same model, image head
    _run(runs, "demo-food101", "mitp-image", "mitp-image", {"accuracy": 0.6}, head="image", layers=[4])  # another model
    records = {r.run: r for r in (read_record(folder) for folder in sorted(runs.glob("*/*/seed0")))}

    assert records["l2-3-cos"].grid_point == ((2, 3), "cos")
    assert records["l4-5-mmd"].grid_point is None and records["mitp"].grid_point is None
    assert (records["mitp-frac10"].setting, records["mitp-frac10"].fraction, records["mitp-frac10"].full_data) == ("mitp", 0.1, False)
    assert records["mitp"].score == (90.0,) and records["mitp"].task == "single-label"
    assert head_pairs(list(records.values())) == {("l4-5-mmd", "read-by-image"): {"demo-food101"}, ("mitp", "read-by-image"): {"demo-food101"}}


def test_report_puts_ours_beside_the_paper_and_marks_missing_runs(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "report"
    _run(runs, "demo-food101", "mitp", "mitp", {"accuracy": 0.9}, seed=0)
    _run(runs, "demo-food101", "mitp", "mitp", {"accuracy": 0.8}, seed=1)  # two seeds: mean 85.00
    _run(runs, "demo-food101", "mitp-frac10", "mitp", {"accuracy": 0.7}, fraction=0.1)
    _run(runs, "demo-food101", "l2-3-cos", "l2-3-cos", {"accuracy": 0.75})
    _run(runs, "demo-mmimdb", "mitp", "mitp", {"f1_micro": 0.6, "f1_macro": 0.5})
    _run(runs, "demo-snlive", "prompts-only", "prompts-only", None)  # trained, not evaluated
    _run(runs, "demo-food101", "mitp-image", "mitp-image", {"accuracy": 0.6}, head="image")

    result = CliRunner().invoke(app, [
        "report", "--runs", str(runs), "--paper", str(PAPER), "--out", str(out), "--datasets", "demo-food101,demo-mmimdb,demo-snlive",
    ])
    assert result.exit_code == 0, result.output

    # the CSV files hold numbers (empty where nothing was run), the Markdown the formatted cells
    table1 = {row["method"]: row for row in csv.DictReader(open(out / "table1.csv"))}
    assert float(table1["MITP-base"]["demo-food101 (ours)"]) == 85.0
    assert float(table1["MITP-base"]["food101 (paper)"]) == 93.95
    assert (float(table1["MITP-base"]["demo-mmimdb (ours)"]), float(table1["MITP-base"]["demo-mmimdb (ours) F1-macro"])) == (60.0, 50.0)
    assert table1["MITP-base"]["demo-snlive (ours)"] == ""  # never a zero
    assert table1["MITP-small"]["demo-food101 (ours)"] == ""
    assert (float(table1["PMF"]["mmimdb (paper)"]), float(table1["PMF"]["mmimdb (paper) F1-macro"])) == (64.5, 58.8)
    assert table1["PMF"]["demo-food101 (ours)"] == ""
    markdown = (out / "table1.md").read_text()
    # two seeds (90, 80): 85 ± t(1) 12.706 x sd 7.071 / sqrt(2) = 85 ± 63.53; one MM-IMDB seed without
    # per-sample decisions: no interval
    assert ("| MITP-base | 85.00 | 93.95 | 21.47 to 148.53 (2 seeds) | yes | 60.00 / 50.00 | 65.90 / 56.30 | missing | - "
            "| missing | 73.45 | missing | - | missing | 76.17 |") in markdown
    assert "| PMF | - | 91.51 |" in markdown  # a peer method: no run of ours
    table2 = {row["model"]: row for row in csv.DictReader(open(out / "table2.csv"))}
    assert table2["Model 3"]["demo-snlive (ours)"] == ""
    assert float(table2["Baseline"]["food101 (paper)"]) == 88.8
    table3 = {row["training data (%)"]: row for row in csv.DictReader(open(out / "table3.csv"))}
    assert float(table3["10"]["ours acc (%)"]) == 70.0 and float(table3["10"]["ours degradation (%)"]) == 15.0
    assert table3["1"]["ours acc (%)"] == "" and float(table3["1"]["paper acc (%)"]) == 87.59
    heads = {row["setting"]: row for row in csv.DictReader(open(out / "heads.csv"))}
    assert list(heads) == ["mitp"]  # only settings that ran with both heads
    assert (float(heads["mitp"]["demo-food101 fused"]), float(heads["mitp"]["demo-food101 image"])) == (85.0, 60.0)
    assert heads["mitp"]["demo-snlive image"] == ""
    notes = (out / "table1.md").read_text()
    assert "Head of our runs: fused" in notes and "90% of the paper's training pairs" in notes
    runs_rows = list(csv.DictReader(open(out / "runs.csv")))
    assert {r["head"] for r in runs_rows} == {"fused", "image"}
    assert len(runs_rows) == 7 and {r["train time (s)"] for r in runs_rows} == {"12.5"}
    assert {r["trainable params"] for r in runs_rows} == {"1234"}  # "1,234" in the Markdown, a number here
    for png in ("fig3.png", "fig4.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["runs_evaluated"] == 6


def _with_gates(runs: Path, dataset: str, run: str, seed: int, score: float, contribution: float, spread: float, reading: dict) -> None:
    _run(runs, dataset, run, run, {"accuracy": score}, seed=seed)
    folder = runs / dataset / run / f"seed{seed}"
    result = json.loads((folder / "result.json").read_text())
    gates = {"2.text": {"z_mean": 0.5, "z_spread": spread, "r_mean": 0.5, "r_spread": spread, "zero_self_maps": 0.1, "zero_cross_maps": 0.3}}
    result.update(reading=reading, gates=gates, low_spread_gates=["2.text.z", "2.text.r"] if spread < 0.02 else [])
    (folder / "result.json").write_text(json.dumps(result))
    ablation = {"metric": "accuracy", "live": score, "frozen_gates": score - contribution, "contribution": contribution, "predictions_unchanged": 0.9}
    (folder / "metrics-test.json").write_text(json.dumps({"metrics": {"accuracy": score}, "memory_ablation": ablation}))


def test_the_readings_table_gives_spread_over_seeds_the_memory_contribution_and_the_gates(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "report"
    token = {"exchange": "memory-hub", "map": "token", "gate": "softmax", "scale": "fixed", "similarity": "cos", "head": "fused"}
    pairwise = {**token, "map": "pairwise"}
    _with_gates(runs, "demo-cue", "mitp", 0, 0.80, 0.00, 0.005, token)
    _with_gates(runs, "demo-cue", "mitp", 1, 0.70, 0.02, 0.007, token)
    _with_gates(runs, "demo-cue", "mitp-pairwise", 0, 0.90, 0.10, 0.2, pairwise)
    _run(runs, "demo-cue", "mlp-interaction", "mlp-interaction", {"accuracy": 0.85})
    result = CliRunner().invoke(app, ["report", "--runs", str(runs), "--paper", str(PAPER), "--out", str(out), "--datasets", "demo-cue"])
    assert result.exit_code == 0, result.output
    rows = {row["run"]: row for row in csv.DictReader(open(out / "readings.csv"))}
    assert set(rows) == {"mitp", "mitp-pairwise", "mlp-interaction"}
    token_row = rows["mitp"]
    assert float(token_row["score"]) == 75.0 and abs(float(token_row["score sd"]) - 7.0711) < 1e-3  # numbers, not text
    assert abs(float(token_row["memory contribution"]) - 1.0) < 1e-9 and token_row["near-constant gates"] == "2"
    assert abs(float(token_row["gate spread (min)"]) - 0.005) < 1e-9 and abs(float(token_row["all-zero maps (%)"]) - 20.0) < 1e-9
    assert rows["mitp-pairwise"]["reading"] == "memory hub: pairwise map, softmax gate, fixed scale, cos; fused head"
    assert rows["mlp-interaction"]["memory contribution"] == "" and rows["mlp-interaction"]["seeds"] == "1"
    markdown = (out / "readings.md").read_text()
    assert "| demo-cue | mitp | memory hub: token map" in markdown and "75.00 ± 7.07 | +1.00 ± 1.41" in markdown
    table2 = {row["model"]: row for row in csv.DictReader(open(out / "table2.csv"))}
    assert (float(table2["Model 1"]["demo-cue memory contribution"]), float(table2["Model 1"]["demo-cue memory contribution sd"])) == (1.0, 1.41)
    assert "cue (paper)" not in table2["Model 1"]  # no paper column for a data set the paper does not have


def test_table1_average_is_the_papers_formula():
    from mitp.report.tables import table1_average

    assert abs(table1_average({"food101": (93.95,), "mmimdb": (65.9, 56.3), "snlive": (73.45,)}) - 76.1667) < 1e-4
    assert table1_average({"food101": (93.95,), "mmimdb": None, "snlive": (73.45,)}) is None


def test_table1_has_the_avg_column_when_all_three_data_sets_are_reported(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "report"
    _run(runs, "demo-food101", "mitp", "mitp", {"accuracy": 0.9})
    _run(runs, "demo-mmimdb", "mitp", "mitp", {"f1_micro": 0.6, "f1_macro": 0.4})
    _run(runs, "demo-snlive", "mitp", "mitp", {"accuracy": 0.6})
    args = ["report", "--runs", str(runs), "--paper", str(PAPER), "--out", str(out), "--datasets", "demo-food101,demo-mmimdb,demo-snlive"]
    assert CliRunner().invoke(app, args).exit_code == 0
    table1 = {row["method"]: row for row in csv.DictReader(open(out / "table1.csv"))}
    assert float(table1["MITP-base"]["Avg. (ours)"]) == 66.67  # (90 + (60 + 40) / 2 + 60) / 3, two decimals
    assert float(table1["MITP-base"]["Avg. (paper)"]) == 76.17
    assert table1["MITP-small"]["Avg. (ours)"] == "" and table1["HUSE"]["Avg. (paper)"] == ""


def test_fig4_panels_follow_the_papers_layer_spacing():
    from mitp.report.figures import fig4_panel

    assert fig4_panel((11,)) == fig4_panel((2,)) == "one layer (MITP-small)"
    assert fig4_panel((2, 3, 4)) == fig4_panel((4, 5, 6)) == "interval 1"
    assert fig4_panel((2, 4, 6)) == "interval 2" and fig4_panel((1, 5)) == "layers 1-5"


def test_a_report_with_no_runs_is_complete(tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", "--runs", str(tmp_path / "none"), "--paper", str(PAPER), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("table1.md", "table2.md", "table3.md", "readings.md", "readings.csv", "fig3.png", "fig4.png", "curves.png", "summary.json"):
        assert (out / name).is_file(), name
