"""The report's intervals, checked against hand-computed cases: t over seeds, the bootstrap over test pairs,
and the paired comparison; then the report shows them beside the paper's numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mitp.report.intervals import (
    Decisions,
    bootstrap_interval,
    paired_bootstrap,
    per_sample_decisions,
    seed_interval,
    t_critical,
)


def test_the_seed_interval_is_students_t():
    interval = seed_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: 2 ± 4.303 / sqrt(3)
    assert interval.mean == 2.0 and interval.kind == "seeds"
    assert (interval.low, interval.high) == pytest.approx((2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)))
    assert seed_interval([5.0]) is None and t_critical(40) == 1.96 and t_critical(11) == 2.228


def _single(predicted, labels):
    return Decisions("single-label", {"num_classes": 3, "predicted": predicted, "labels": labels})


def test_the_bootstrap_interval_holds_the_score_and_narrows_with_more_pairs():
    (sure,) = bootstrap_interval(_single([0] * 50, [0] * 50))
    assert (sure.mean, sure.low, sure.high) == (100.0, 100.0, 100.0)  # every resample scores 100
    half = [0, 1] * 50  # 50% right
    (small,) = bootstrap_interval(_single(half, [0] * 100))
    (large,) = bootstrap_interval(_single(half * 16, [0] * 1600))
    assert small.low < 50.0 < small.high and large.low < 50.0 < large.high
    assert (large.high - large.low) < (small.high - small.low) / 3  # ~1/sqrt(16) of the width


def test_multi_label_decisions_score_like_the_metrics():
    logits = np.array([[3.0, -3.0], [3.0, 3.0], [-3.0, -3.0]])
    labels = np.array([[1, 0], [1, 0], [0, 1]], dtype=float)
    decisions = Decisions("multi-label", per_sample_decisions("multi-label", logits, labels))
    # tp: class0 2, class1 0; fp: class1 1; fn: class1 1 -> micro 2*2/(4+1+1) = 0.667, macro (1 + 0) / 2
    assert decisions.score() == pytest.approx((100 * 4 / 6, 50.0))
    assert len(bootstrap_interval(decisions, resamples=50)) == 2


def test_the_paired_bootstrap_says_which_run_is_better_on_the_same_pairs():
    labels = [0] * 200
    better, worse = _single([0] * 180 + [1] * 20, labels), _single([0] * 120 + [1] * 80, labels)
    comparison = paired_bootstrap([better], [worse])
    assert comparison.difference == pytest.approx(30.0) and comparison.low > 0 and comparison.p_value == 0.0
    tie = paired_bootstrap([better], [better])
    assert (tie.difference, tie.low, tie.high, tie.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="same test pairs"):
        paired_bootstrap([better], [_single([0] * 10, [0] * 10)])


def test_the_report_gives_each_cell_its_interval_the_paper_beside_it_and_the_comparisons(tmp_path):
    from mitp.report.tables import write_report

    from .conftest import ROOT

    runs, out = tmp_path / "runs", tmp_path / "report"
    rng = np.random.default_rng(0)

    def run(name, seed, accuracy):
        folder = runs / "food101" / name / f"seed{seed}"
        folder.mkdir(parents=True)
        labels = rng.integers(0, 101, 1000)
        predicted = np.where(rng.random(1000) < accuracy, labels, (labels + 1) % 101)
        result = {"dataset": "food101", "setting": name, "variant": "mitp", "layers": [4, 5, 6], "similarity": "cos", "fraction": 1.0,
                  "seed": seed, "head": "fused", "backbone": "b", "metric": "accuracy", "best_epoch": 1, "best_val_metric": 0.5,
                  "epochs": 1, "train_seconds": 1.0, "peak_memory_gib": 1.0, "trainable_params": 1, "backbone_params": 1}
        (folder / "result.json").write_text(json.dumps(result))
        per_sample = {"num_classes": 101, "predicted": predicted.tolist(), "labels": labels.tolist()}
        correct = int((predicted == labels).sum())
        (folder / "metrics-test.json").write_text(json.dumps({"metrics": {"accuracy": correct / 1000, "correct": correct, "num_samples": 1000}, "per_sample": per_sample}))

    for seed, accuracy in enumerate((0.92, 0.93, 0.925)):
        run("mitp", seed, accuracy)
        run("prompts-only", seed, 0.80)
    run("linear-probe", 0, 0.85)  # one seed: a bootstrap interval
    write_report(runs, ROOT / "workflow" / "report" / "paper.yaml", out, ["food101"])
    table2 = {row["setting"]: row for row in _csv(out / "table2.csv")}
    assert table2["mitp"]["food101 (ours, 95% interval)"].endswith("(3 seeds)")
    assert table2["linear-probe"]["food101 (ours, 95% interval)"].endswith("(bootstrap, 1 seed)")
    import yaml

    scores = [json.loads((runs / "food101" / "mitp" / f"seed{s}" / "metrics-test.json").read_text())["metrics"]["accuracy"] * 100 for s in range(3)]
    interval = seed_interval(scores)
    paper = yaml.safe_load((ROOT / "workflow" / "report" / "paper.yaml").read_text())["table2"]["Model 1"]["food101"][0]
    assert table2["mitp"]["food101 paper inside"] == ("yes" if interval.low <= paper <= interval.high else "no")
    assert table2["mlp-interaction"]["food101 (ours, 95% interval)"] == "" and table2["mlp-interaction"]["food101 paper inside"] == ""
    comparisons = {row["mitp vs"]: row for row in _csv(out / "comparisons.csv")}
    assert comparisons["prompts-only"]["seeds"] == "3" and comparisons["prompts-only"]["mitp better"] == "yes"
    assert float(comparisons["prompts-only"]["95% low"]) > 0 and "linear-probe" in comparisons
    assert "Paired bootstrap" in (out / "comparisons.md").read_text()


def _csv(path):
    import csv

    return list(csv.DictReader(open(path)))
