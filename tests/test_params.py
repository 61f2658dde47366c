import pytest

from stages.core.params import ParamsError, choice, get, model_config, number


def test_shipped_params_are_valid_for_every_model(params):
    for name in params["models"]:
        cfg = model_config(params, name)
        assert cfg.name == name
        assert len(cfg.head.dense) == len(cfg.head.dropout)
    for name in params["backbones"]:
        assert name in params["models"], f"backbone {name} has no models.{name} section"


def test_default_head_is_the_densenet_recipe(params):
    head = model_config(params, "efficientnet_lite0").head
    assert head.dense == (1024, 512) and head.dropout == (0.8, 0.5) and head.batch_norm


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.lr", -1, "'models.small_cnn.train.lr' must be a number"),
        ("train.epochs", 1.5, "'models.small_cnn.train.epochs' must be an integer"),
        ("finetune.unfreeze", "some", "unfreeze' must be 'all' or an integer"),
        ("head.dropout", [0.5, 0.5], "need the same length"),
        ("head.dropout", [1.2], r"dropout' values must be in \[0, 1\)"),
    ],
)
def test_bad_model_values_name_the_key(params, key, value, message):
    section, field = key.split(".")
    params["models"]["small_cnn"][section][field] = value
    with pytest.raises(ParamsError, match=message):
        model_config(params, "small_cnn")


def test_missing_key_and_bad_choice_are_named(params):
    with pytest.raises(ParamsError, match="missing key 'data.nope'"):
        get(params, "data.nope")
    params["data"]["source"] = "ftp"
    with pytest.raises(ParamsError, match="'data.source' must be one of synthetic"):
        choice(params, "data.source", ("synthetic", "local", "isic"))
    with pytest.raises(ParamsError, match="'split.val'"):
        params["split"]["val"] = 0.9
        number(params, "split.val", 0.01, 0.5)
