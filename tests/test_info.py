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
