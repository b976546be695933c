import copy
import json

import pytest
import yaml

from mitp.config import ConfigError, RunConfig, check_layers_fit, load_config, parse_config, resolve_run

from .conftest import PROJECT_CONFIG

PAPER_DATASETS = ("food101", "mmimdb", "snlive")
REQUIRED_SETTINGS = ("mitp", "mitp-small", "prompts-only", "mlp-interaction", "p-clip", "linear-probe")


def raw_project() -> dict:
    return yaml.safe_load(PROJECT_CONFIG.read_text())


def test_project_config_has_the_paper_setup():
    project = load_config(PROJECT_CONFIG)
    for name in PAPER_DATASETS:
        for setting in REQUIRED_SETTINGS:
            run = resolve_run(project, name, setting)
            assert run.lr == pytest.approx(2e-4)
    food = resolve_run(project, "food101", "mitp")
    assert (food.dataset.batch_size, food.model.prompt_length, food.model.layers) == (10, 3, (4, 5, 6))
    imdb = resolve_run(project, "mmimdb", "mitp")
    assert (imdb.dataset.batch_size, imdb.model.prompt_length, imdb.model.layers, imdb.dataset.task) == (
        32, 2, (7, 8, 9), "multi-label")
    snli = resolve_run(project, "snlive", "mitp")
    assert (snli.dataset.batch_size, snli.model.prompt_length, snli.model.layers) == (64, 6, (7, 8, 9))
    assert len(resolve_run(project, "food101", "mitp-small").model.layers) == 1


def test_grid_covers_both_intervals_and_all_similarities():
    project = load_config(PROJECT_CONFIG)
    for similarity in ("cos", "mmd", "cov-pearson"):
        assert project.setting(f"l4-5-6-{similarity}").layers == (4, 5, 6)  # interval 1
        assert project.setting(f"l6-8-10-{similarity}").layers == (6, 8, 10)  # interval 2
    assert project.setting("l8-cos").layers == (8,)


@pytest.mark.parametrize(
    "mutate, key, allowed",
    [
        (lambda r: r["settings"]["mitp"].update(similarity="cosine"), "settings.mitp.similarity", "cos, mmd, cov-pearson"),
        (lambda r: r["datasets"]["food101"].update(prompt_length=0), "datasets.food101.prompt_length", ">= 1"),
        (lambda r: r["settings"]["mitp"].update(variant="maple"), "settings.mitp.variant", "mitp, prompts-only"),
        (lambda r: r["hub"].update(gate="tanh"), "hub.gate", "softmax, sigmoid"),
        (lambda r: r["datasets"]["food101"].update(task="regression"), "datasets.food101.task", "single-label"),
        (lambda r: r["train"].update(lr=-1.0), "train.lr", "> 0"),
        (lambda r: r["train"].update(fraction=1.5), "train.fraction", "(0, 1]"),
        (lambda r: r["datasets"]["food101"].update(best_layers=[6, 5]), "datasets.food101.best_layers", "increasing"),
        (lambda r: r["train"].update(epoch=3), "train", "epochs"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(mutate, key, allowed):
    raw = copy.deepcopy(raw_project())
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert key in str(err.value) and allowed in str(err.value)


def test_unknown_data_set_and_setting_are_rejected():
    project = load_config(PROJECT_CONFIG)
    with pytest.raises(ConfigError, match="unknown data set 'imagenet'; allowed: food101, mmimdb, snlive"):
        resolve_run(project, "imagenet", "mitp")
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        resolve_run(project, "food101", "nope")


def test_layer_beyond_the_tower_is_rejected():
    raw = raw_project()
    raw["settings"]["deep"] = {"variant": "mitp", "layers": [11, 12, 13]}
    run = resolve_run(parse_config(raw), "food101", "deep")
    with pytest.raises(ConfigError, match=r"layers: \[13\] beyond the backbone .* allowed layer numbers are 1..12"):
        check_layers_fit(run.model, text_layers=12, vision_layers=24)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_run_config_round_trips_through_json():
    run = resolve_run(load_config(PROJECT_CONFIG), "mmimdb", "l6-8-10-mmd")
    assert RunConfig.from_dict(json.loads(run.to_json())) == run
