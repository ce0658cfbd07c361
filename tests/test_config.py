"""The config: official defaults, YAML + --set loading, one clear line per mistake."""

from __future__ import annotations

import pytest

from adaptseg.config import ConfigError, TrainConfig, build_config, load_config, parse_overrides

OFFICIAL = {
    "lambda_seg_aux": 0.1, "lambda_adv_aux": 0.0002, "lambda_adv_main": 0.001, "lr": 2.5e-4,
    "head_lr_mult": 10.0, "lr_d": 1e-4, "momentum": 0.9, "weight_decay": 5e-4,
    "poly_power": 0.9, "schedule_steps": 250000, "num_steps": 150000, "batch_size": 1,
    "iter_size": 1, "gan": "vanilla", "multi_level": True, "aspp_branches": 2,
    "bn_mode": "train", "align_corners": True, "input_size_source": (720, 1280),
    "input_size_target": (512, 1024), "preprocess": "caffe", "random_mirror": False,
    "random_scale": False, "eval_every": 5000, "optimizer": "sgd", "num_classes": 19,
    "ndf": 64, "backbone": "resnet101", "use_target": True,
}  # fmt: skip


def test_defaults_are_the_official_codes():
    fields = TrainConfig.model_fields
    for key, value in OFFICIAL.items():
        assert fields[key].default == value, key


def test_config_is_frozen(tiny_cfg):
    with pytest.raises(Exception, match="frozen"):
        tiny_cfg.lr = 1.0  # type: ignore[misc]


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("source: random\ntarget: random\nlr: 0.001\ninput_size_target: 256x512\n")
    cfg = load_config(path, ["lr=0.002", "multi_level=false", "num_steps=10", "eval_every=5"])
    assert cfg.lr == 0.002 and cfg.multi_level is False
    assert cfg.input_size_target == (256, 512)
    assert cfg.to_dict()["input_size_target"] == "256x512"
    assert build_config(cfg.to_dict()) == cfg


BASE = {"source": "random", "target": "random"}
ERRORS = [
    ({"lr": -1.0}, "key `lr`: expected a positive number, got -1.0"),
    ({"lr_d": 0}, "key `lr_d`: expected a positive number, got 0"),
    ({"lamda_adv_main": 0.1}, "unknown key `lamda_adv_main` (did you mean `lambda_adv_main`?)"),
    ({"lambda_adv_main": -0.1}, "key `lambda_adv_main`: expected a number >= 0, got -0.1"),
    ({"num_steps": 300000}, "key `num_steps`: expected num_steps <= schedule_steps (250000)"),
    ({"num_steps": 0}, "key `num_steps`: expected a positive number, got 0"),
    ({"num_steps": 2.5}, "key `num_steps`: input should be a valid integer, got 2.5"),
    ({"num_steps": 10, "eval_every": 20}, "key `eval_every`: expected eval_every <= num_steps"),
    ({"eval_every": 0}, "key `eval_every`: expected a positive number, got 0"),
    ({"multi_level": "yes"}, "key `multi_level`: input should be a valid boolean, got 'yes'"),
    ({"gan": "wgan"}, "key `gan`: expected one of 'vanilla' or 'ls', got 'wgan'"),
    ({"optimizer": "rmsprop"}, "key `optimizer`: expected one of 'sgd' or 'adam'"),
    ({"aspp_branches": 3}, "key `aspp_branches`: expected one of 2 or 4, got 3"),
    ({"input_size_source": "720"}, "key `input_size_source`: expected a size HxW"),
    ({"momentum": 1.0}, "key `momentum`: expected a number < 1, got 1.0"),
    ({"batch_size": -2}, "key `batch_size`: expected a positive number, got -2"),
    ({"min_init_match": 1.5}, "key `min_init_match`: expected a number <= 1, got 1.5"),
    ({"source": "gta5"}, "key `source_root`: expected a directory for source='gta5', got null"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "message"), ERRORS, ids=[str(e[0]) for e in ERRORS])
def test_every_config_error_is_one_line_naming_file_and_key(values, message):
    with pytest.raises(ConfigError) as info:
        build_config({**BASE, **values}, origin="run.yaml")
    text = str(info.value)
    assert text.startswith("run.yaml: ") and message in text
    assert "\n" not in text


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lr: 0.1\nmulti_level: [true\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d"):
        load_config(path)


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- lr\n")
    with pytest.raises(
        ConfigError, match="list.yaml: expected a mapping of config keys, got list"
    ):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read the file"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("pair", ["lr", "=3", "lr:0.1"])
def test_malformed_set(pair):
    with pytest.raises(ConfigError, match=r"--set .*: expected key=value"):
        parse_overrides([pair])


def test_set_values_are_typed():
    assert parse_overrides(["a=1", "b=0.5", "c=true", "d=x", "e=512x1024"]) == {
        "a": 1, "b": 0.5, "c": True, "d": "x", "e": "512x1024",
    }  # fmt: skip
