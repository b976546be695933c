import json

import pytest
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
    # docs/decisions.md §6: trainable = 793,344 + 7,172 x width on food101 (L = 3)
    assert base["trainable_params"] == 793_344 + 7_172 * 168


@pytest.mark.slow
def test_info_table_lists_every_setting():
    output = info("--dataset", "snlive")
    for name in ("mitp", "mitp-small", "prompts-only", "p-clip", "linear-probe", "l6-8-10-cov-pearson"):
        assert name in output


def test_info_on_another_backbone_preset():
    row = json.loads(info("--dataset", "food101", "--setting", "mitp", "--backbone", "preset:vit-b-16", "--json"))
    assert row["backbone_params"] == 149_620_737  # CLIP ViT-B/16
    assert row["trainable_params"] < 1_998_240


def test_effective_counts_and_pclip_depth_on_vit_l14(tmp_path):
    """Under the fused head every trainable parameter of MITP-small receives a gradient; under the image
    head the hub's text side (560,976 parameters on ViT-L/14) has nowhere to go. P-CLIP prompts every
    block of each tower: 12 text + 24 vision blocks x L = 3 prompts."""
    fused = json.loads(info("--dataset", "food101", "--setting", "mitp-small", "--json"))
    assert fused["head"] == "fused" and fused["effective_trainable_params"] == fused["trainable_params"]
    image_config = tmp_path / "image.yaml"
    image_config.write_text(PROJECT_CONFIG.read_text().replace("\nhead: fused\n", "\nhead: image\n"))
    result = runner.invoke(app, ["info", "--config", str(image_config), "--dataset", "food101", "--setting", "mitp-small", "--json"])
    image = json.loads(result.output)
    assert image["head"] == "image" and image["trainable_params"] - image["effective_trainable_params"] == 560_976
    pclip = json.loads(info("--dataset", "food101", "--setting", "p-clip", "--json"))
    assert (len(pclip["text_layers"]), len(pclip["vision_layers"])) == (12, 24)
    assert pclip["trainable_params"] == pclip["effective_trainable_params"] == 3 * (12 * 768 + 24 * 1024)


def test_outside_a_clone_the_packaged_config_is_used_and_init_writes_an_editable_copy(tmp_path, monkeypatch):
    from mitp.resources import CONFIG, DEMO_CONFIG, PAPER, resource

    # In a clone the packaged files are links to the clone's own (the wheel holds copies: CI's wheel step checks those)
    for name, original in ((CONFIG, "config.yaml"), (PAPER, "workflow/report/paper.yaml"), (DEMO_CONFIG, "workflow/profiles/demo/demo.yaml")):
        assert resource(name).is_symlink() and resource(name).resolve() == (PROJECT_CONFIG.parent / original).resolve(), name
    monkeypatch.chdir(tmp_path)  # no config.yaml here
    result = runner.invoke(app, ["info", "--dataset", "food101", "--setting", "mitp", "--json"])
    assert result.exit_code == 0, result.output
    assert "using the packaged config" in result.output and "mitp init" in result.output
    result = runner.invoke(app, ["init", "--demo"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "config.yaml").read_text() == resource(DEMO_CONFIG).read_text()
    result = runner.invoke(app, ["info", "--dataset", "demo-cue", "--setting", "mitp-pairwise", "--json"])
    assert result.exit_code == 2 and "packaged" not in result.output  # ./config.yaml now, whose backbone is made by the demo
    assert "'models/standin' is not a folder here" in result.output and "mitp pretrain-standin" in result.output
    result = runner.invoke(app, ["info", "--dataset", "demo-cue", "--setting", "mitp-pairwise", "--backbone", "preset:tiny", "--json"])
    assert result.exit_code == 0, result.output
    before = (tmp_path / "config.yaml").read_text()
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 2 and "exists and is left as it is" in result.output
    assert (tmp_path / "config.yaml").read_text() == before
