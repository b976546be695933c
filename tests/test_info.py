import json

from typer.testing import CliRunner

from mitp.cli import app

from .conftest import PROJECT_CONFIG

runner = CliRunner()


def info(*args):
    result = runner.invoke(app, ["info", "--config", str(PROJECT_CONFIG), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_parameter_budget_on_vit_l14_matches_the_paper():
    base = json.loads(info("--dataset", "food101", "--setting", "mitp", "--json"))
    small = json.loads(info("--dataset", "food101", "--setting", "mitp-small", "--json"))
    assert 1_800_000 <= base["trainable_params"] <= 2_200_000  # paper: 2.0M
    assert small["trainable_params"] == base["trainable_params"]  # one shared hub
    assert base["backbone_params"] == 427_616_513  # CLIP ViT-L/14
    # DESIGN 3.6: trainable = 793,344 + 7,172 x width on food101 (L = 3)
    assert base["trainable_params"] == 793_344 + 7_172 * 168


def test_info_table_lists_every_setting():
    output = info("--dataset", "snlive")
    for name in ("mitp", "mitp-small", "prompts-only", "p-clip", "linear-probe", "l6-8-10-cov-pearson"):
        assert name in output


def test_info_on_another_backbone_preset():
    row = json.loads(info("--dataset", "food101", "--setting", "mitp", "--backbone", "preset:vit-b-16", "--json"))
    assert row["backbone_params"] == 149_620_737  # CLIP ViT-B/16
    assert row["trainable_params"] < 1_998_240
