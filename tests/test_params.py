import pytest

from stages.core.params import (
    ParamsError,
    choice,
    finetune_config,
    fit_config,
    get,
    load_params,
    logistic_config,
    model_config,
    number,
    stage_params,
    train_solver,
)
from tests.conftest import REPO


def _all_of(params, name):
    return (model_config(params, name), fit_config(params, f"models.{name}.train"),
            finetune_config(params, name))


def test_shipped_params_are_valid_for_every_model(params):
    for name in params["models"]:
        cfg, _, _ = _all_of(params, name)
        assert cfg.name == name
        assert len(cfg.head.dense) == len(cfg.head.dropout)
        if train_solver(params, name) == "logistic":
            assert logistic_config(params, name, "0").class_weight in (None, "balanced")
    for name in params["backbones"]:
        assert name in params["models"], f"backbone {name} has no models.{name} section"


def test_logistic_settings_are_checked(params):
    name = next(n for n in params["models"] if train_solver(params, n) == "logistic")
    train = params["models"][name]["train"]
    train["fit_on"] = "train+val"
    assert logistic_config(params, name, "3").with_validation
    # A holdout model is calibrated on its validation images: they must stay unseen.
    with pytest.raises(ParamsError, match="fit_on: train\\+val' needs cross-validation"):
        logistic_config(params, name, "holdout")
    train["fit_on"], train["class_weight"] = "train", "inverse"
    with pytest.raises(ParamsError, match=f"'models.{name}.train.class_weight' must be one of"):
        logistic_config(params, name, "0")
    params["models"][name]["head"]["views"] = 3
    with pytest.raises(ParamsError, match=f"'models.{name}.head.views' must be one of"):
        model_config(params, name)


def test_default_head_is_the_densenet_recipe(params):
    head = model_config(params, "efficientnet_lite0").head
    assert head.dense == (1024, 512) and head.dropout == (0.8, 0.5) and head.batch_norm


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.lr", -1, "'models.small_cnn.train.lr' must be a number"),
        ("train.epochs", 1.5, "'models.small_cnn.train.epochs' must be an integer"),
        ("finetune.unfreeze", "some", "unfreeze' must be 'all' or an integer"),
        ("finetune.online_augment", "mixup", "'models.small_cnn.finetune.online_augment' must "
                                             "be one of none, dihedral"),
        ("finetune.cache_trunk", "yes", "'models.small_cnn.finetune.cache_trunk' must be true "
                                        "or false"),
        ("head.dropout", [0.5, 0.5], "need the same length"),
        ("head.dropout", [1.2], r"dropout' values must be in \[0, 1\)"),
    ],
)
def test_bad_model_values_name_the_key(params, key, value, message):
    section, field = key.split(".")
    params["models"]["small_cnn"][section][field] = value
    with pytest.raises(ParamsError, match=message):
        _all_of(params, "small_cnn")


@pytest.mark.parametrize("setting, message", [
    ({"unfreeze": "all"}, "needs 'unfreeze' a positive number \\(got 'all'\\)"),
    ({"unfreeze": 0}, "needs 'unfreeze' a positive number \\(got 0\\)"),
    ({"online_augment": "dihedral"}, "'online_augment: none' \\(got 'dihedral'"),
])
def test_a_cached_trunk_needs_layers_to_train_and_no_online_flips(params, setting, message):
    params["models"]["small_cnn"]["finetune"].update({"cache_trunk": True, "unfreeze": 4,
                                                      **setting})
    with pytest.raises(ParamsError, match=message):
        finetune_config(params, "small_cnn")


def test_missing_key_and_bad_choice_are_named(params):
    with pytest.raises(ParamsError, match="missing key 'data.nope'"):
        get(params, "data.nope")
    params["data"]["source"] = "ftp"
    with pytest.raises(ParamsError, match="'data.source' must be one of synthetic"):
        choice(params, "data.source", ("synthetic", "local", "isic"))
    with pytest.raises(ParamsError, match="'split.val'"):
        params["split"]["val"] = 0.9
        number(params, "split.val", 0.01, 0.5)


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # `dvc exp run -S models.x.finetune.lr=5e-5` writes `lr: 5e-05`, which plain PyYAML (YAML
    # 1.1) would hand over as the string '5e-05'.
    path = tmp_path / "params.yaml"
    path.write_text("lr: 5e-05\nbig: 1E+3\nquoted: '5e-05'\nplain: 3\n")
    assert load_params(path) == {"lr": 5e-05, "big": 1000.0, "quoted": "5e-05", "plain": 3}


def test_a_stage_sees_exactly_the_params_dvc_yaml_declares_for_it(tmp_path):
    params = stage_params("finetune", {"backbone": "small_cnn"}, params_file=REPO / "params.yaml")
    assert set(params) == {"seed", "compute", "folds", "models"}
    assert set(params["models"]) == {"small_cnn"}
    assert set(params["models"]["small_cnn"]) == {"weights", "finetune"}
    finetune_config(params, "small_cnn")  # all it needs is there
    with pytest.raises(ParamsError, match="missing key 'models.small_cnn.head.dense'"):
        model_config(params, "small_cnn")  # train's params: undeclared for finetune
    with pytest.raises(ParamsError, match="no stage 'nope'"):
        stage_params("nope", params_file=REPO / "params.yaml")


def test_a_declared_key_missing_from_params_yaml_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\ntask: binary\nsplit: {}\nfolds: [holdout]\ndata: {}\n")
    with pytest.raises(ParamsError, match="missing key 'data.max_rejected_fraction'"):
        stage_params("split", params_file=path)


def test_logistic_only_settings_with_solver_adam_are_an_error_not_ignored():
    params = load_params(REPO / "params.yaml")
    train = params["models"]["lite0_ms_frozen"]["train"]
    train["solver"] = "adam"  # its fit_on: train+val is the logistic head's
    with pytest.raises(ParamsError, match=r"fit_on.*applied by solver logistic only"):
        train_solver(params, "lite0_ms_frozen")
    # class_weight applies to gradient training too (train_loop.balanced_weights)
    train.update(fit_on="train", class_weight="balanced")
    assert train_solver(params, "lite0_ms_frozen") == "adam"
    assert fit_config(params, "models.lite0_ms_frozen.train").class_weight == "balanced"
    params["models"]["lite0_ms_frozen"]["finetune"]["class_weight"] = "balanced"
    assert finetune_config(params, "lite0_ms_frozen").class_weight == "balanced"
    params["models"]["lite0_ms_frozen"]["finetune"]["class_weight"] = "inverse"
    with pytest.raises(ParamsError, match="finetune.class_weight' must be one of"):
        finetune_config(params, "lite0_ms_frozen")
