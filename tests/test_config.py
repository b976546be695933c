import copy
import json

import jsonschema
import pytest
import yaml

from mitp.config import ConfigError, RunConfig, check_layers_fit, load_config, parse_config, resolve_run, schema_yaml

from .conftest import PROJECT_CONFIG, ROOT

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


# ------------------------------------------------------------------------------ one definition, two checkers


SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
OVERLAYS = {
    "paper": ["config.yaml"],
    "demo": ["config.yaml", "workflow/profiles/demo/demo.yaml"],
    "ci demo": ["config.yaml", "workflow/profiles/demo/demo.yaml", ".test/config.yaml"],
    "slurm demo": ["config.yaml", "workflow/profiles/demo/demo.yaml", ".test/slurm.yaml"],
}


def merged(*paths: str) -> dict:
    """What Snakemake hands the workflow: each --configfile merged key by key over the last."""

    def merge(base: dict, update: dict) -> dict:
        out = dict(base)
        for key, value in update.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    raw: dict = {}
    for path in paths:
        raw = merge(raw, yaml.safe_load((ROOT / path).read_text()))
    return raw


def schema_errors(raw: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(yaml.safe_load(SCHEMA.read_text()))
    return [error.message for error in validator.iter_errors(raw)]


def test_the_snakemake_schema_is_the_one_generated_from_the_models():
    assert SCHEMA.read_text() == schema_yaml(), "regenerate it: python -m mitp.config > workflow/schemas/config.schema.yaml"


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_shipped_config_passes_both_checkers(name):
    raw = merged(*OVERLAYS[name])
    assert schema_errors(raw) == []
    assert parse_config(raw).workflow is not None


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda r: r.update(seed=-1), "seed: must be >= 0"),
        (lambda r: r["datasets"]["food101"].update(num_classes=0), "datasets.food101.num_classes: must be >= 1"),
        (lambda r: r["datasets"]["food101"].update(colour="red"), "datasets.food101: unknown key(s) colour"),
        (lambda r: r["train"].update(lr="2e-4"), "train.lr: expected a number, got '2e-4'"),
        (lambda r: r["train"].update(epochs="3"), "train.epochs: expected an integer, got '3'"),
        (lambda r: r["train"].update(epochs=True), "train.epochs: expected an integer, got True"),
        (lambda r: r["train"].update(epochs=2.5), "train.epochs: expected an integer, got 2.5"),
        (lambda r: r["settings"]["mitp"].update(layers="bestest"), "settings.mitp.layers: 'bestest' is not one of best, best-small, all"),
        (lambda r: r["settings"]["mitp"].update(layers=[0, 2]), "settings.mitp.layers[0]: must be >= 1, got 0"),
        (lambda r: r["hub"].update(map=None), "hub.map: None is not one of token, pairwise"),
        (lambda r: r["readings"].update(Pairwise={"hub": {"map": "pairwise"}}), "readings.Pairwise: a reading name is lower-case"),
        (lambda r: r["readings"].update(pairwise={"hub": {"map": "pear"}}), "readings.pairwise.hub.map: 'pear' is not one of token, pairwise"),
        (lambda r: r["workflow"].update(export_fp16="yes"), "workflow.export_fp16: expected true or false, got 'yes'"),
        (lambda r: r["workflow"]["resources"]["train"].update(gpus=1), "workflow.resources.train: unknown key(s) gpus"),
        (lambda r: r["workflow"].update(seeds=[]), "workflow.seeds: needs at least 1 item(s), got []"),
    ],
)
def test_both_checkers_refuse_the_same_values(mutate, key):
    """The code's one-line message names the key and value; the generated schema refuses the value too."""
    raw = copy.deepcopy(merged("config.yaml"))
    raw.setdefault("readings", {})
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert key in str(err.value)
    assert schema_errors(raw), f"the schema accepts what mitp refuses: {key}"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["workflow"].update(datasets=["food101", "imagenet"]), "workflow.datasets: 'imagenet' not under datasets"),
        (lambda r: r["workflow"].update(export=["mitp-huge"]), "workflow.export: 'mitp-huge' not under settings"),
        (lambda r: r["workflow"].update(readings=["diagonal"]), "workflow.readings: 'diagonal' not under readings; defined: token, pairwise"),
        (lambda r: r["datasets"]["food101"].update(task="single-label", num_classes=1), "datasets.food101.num_classes: a single-label data set needs at least 2"),
        (lambda r: r["settings"]["mitp-small"].update(reading="diagonal"), "settings.mitp-small.reading: 'diagonal' is not a reading"),
    ],
)
def test_cross_field_rules_are_the_codes_and_name_their_key(mutate, message):
    raw = copy.deepcopy(merged("config.yaml"))
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert message in str(err.value)


def test_numbers_stay_numbers_and_tuples_stay_hashable():
    project = load_config(PROJECT_CONFIG)
    run = resolve_run(project, "food101", "mitp", epochs=3, lr=1e-3)
    assert (run.train.epochs, run.epochs, run.lr, isinstance(run.train.fraction, float)) == (3, 3, 1e-3, True)
    assert hash(run.model.layers) == hash((4, 5, 6)) and isinstance(run.dataset.templates, tuple)
