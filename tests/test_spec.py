"""Study spec validation (no Ray): every mistake is one line naming file and key path."""

from __future__ import annotations

import pytest
import yaml

from study.errors import SpecError
from study.records.folder import StudyPaths
from study.spec.arms import arm_config, baseline_arms
from study.spec.loading import apply_overrides, load_spec
from study.spec.schema import Distribution
from study.spec.space import arm_space
from study.stages.dryrun import describe_plan

BASE = {
    "name": "t",
    "data": {"synthetic": {"root": "data/synthetic"}},
    "train": {"backbone": "small", "num_steps": 20, "eval_every": 10},
    "arms": {
        "source_only": {"use_target": False, "multi_level": False},
        "single_level": {"multi_level": False},
        "multi_level": {"multi_level": True},
    },
    "scheduler": {"kind": "asha", "grace_period": 10},
    "search": {
        "num_samples": 2,
        "space": {
            "lambda_adv_main": {
                "log_uniform": [1e-4, 1e-2],
                "arms": ["single_level", "multi_level"],
            },
            "lambda_adv_aux": {"log_uniform": [1e-5, 1e-3], "arms": ["multi_level"]},
            "lr": {"log_uniform": [1e-4, 1e-3]},
            "gan": {"categorical": ["vanilla", "ls"], "arms": ["multi_level"]},
        },
    },
}


def write(tmp_path, spec, name="study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def with_(path: str, value):
    spec = yaml.safe_load(yaml.safe_dump(BASE, sort_keys=False))
    node = spec
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return spec


DELETE = object()
CASES = [
    (with_("train.lamda_adv_main", 0.1), "train.lamda_adv_main: unknown key (did you mean `lambda_adv_main`?)"),
    (with_("train.num_steps", -5), "arms.source_only (with train): key `num_steps`: expected a positive number, got -5"),
    (with_("train.eval_every", 50), "key `eval_every`: expected eval_every <= num_steps (20)"),
    (with_("search.space.lr", {"log_uniform": [1e-3, 1e-4]}), "search.space.lr.log_uniform: `low <= high` must hold"),
    (with_("search.space.lr", {"log_uniform": [0.0, 1e-4]}), "search.space.lr.log_uniform: `low > 0` must hold"),
    (with_("search.space.lr", {"normal": [0, 1]}), "search.space.lr.normal: unknown key"),
    (with_("search.space.lr", {"uniform": [0, 1], "int": [0, 1]}), "search.space.lr: expected exactly one of"),
    (with_("search.space.lr", {"uniform": [0, 1], "arms": ["multi_levle"]}), "search.space.lr.arms: unknown arm `multi_levle` (did you mean `multi_level`?)"),
    (with_("search.space.lr", {"uniform": ["a", 1]}), "search.space.lr.uniform: input should be a valid number"),
    (with_("search.space.multi_level", {"categorical": [True, False]}), "search.space.multi_level: arm `source_only` fixes it"),
    (with_("search.space.lamda", {"uniform": [0, 1]}), "search.space.lamda: not a train key"),
    (with_("arms", {}), "arms: expected at least one arm"),
    (with_("arms.single_level.lr_dd", 1.0), "arms.single_level.lr_dd: unknown key (did you mean `lr_d`?)"),
    (with_("search.num_samples", 0), "search.num_samples: expected a positive number, got 0"),
    (with_("scheduler", {"kind": "hyperband"}), "scheduler.kind: expected one of 'asha' or 'none'"),
    (with_("scheduler", {"grace_perod": 3}), "scheduler.grace_perod: unknown key (did you mean `grace_period`?)"),
    (with_("resources", {"gpus_per_trial": -1}), "resources.gpus_per_trial: expected a number >= 0 or one of 'auto', got -1"),
    (with_("confirm", {"seeds": [1, 1]}), "confirm.seeds: expected distinct seeds"),
    (with_("name", DELETE), "name: required key is missing"),
    (with_("name", "a b"), "name: expected 1 to 100 letters, digits"),
    (with_("data", {}), "data: expected either `synthetic` or both `source` and `target`"),
    (with_("data", {"source": {"kind": "gta5", "root": "${NOPE_ROOT_VAR}"}, "target": {"root": "x"}}), "environment variable not set: NOPE_ROOT_VAR (data.source.root)"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "message"), CASES, ids=[c[1][:40] for c in CASES])
def test_spec_errors(tmp_path, spec, message):
    path = write(tmp_path, spec)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [x\n")
    with pytest.raises(SpecError, match=r"bad.yaml: invalid YAML at line"):
        load_spec(path)


def test_env_expansion_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_GTA", "/data/gta")
    spec = with_("data", {"source": {"root": "${MY_GTA}"}, "target": {"root": "/data/cs"}})
    loaded = load_spec(write(tmp_path, spec), ["search.num_samples=5", "train.ndf=16"])
    assert loaded.data.source.root == "/data/gta" and loaded.search.num_samples == 5
    assert arm_config(loaded, "single_level").source_root == "/data/gta"
    assert arm_config(loaded, "single_level").ndf == 16


def test_arm_settings_win_and_the_plan_lists_every_arm(tmp_path):
    spec = load_spec(write(tmp_path, BASE))
    cfg = arm_config(spec, "source_only", {"lr": 5e-4}, seed=3)
    assert cfg.use_target is False and cfg.lr == 5e-4 and cfg.seed == 3
    text = describe_plan(spec, StudyPaths.for_spec(spec, tmp_path))
    assert (
        "arm multi_level: search 2 trials over [lambda_adv_main, lambda_adv_aux, lr, gan]" in text
    )
    assert "total: 15 trials" in text


class FakeTrial:
    """Records what a define-by-run space asks for (Optuna's Trial API, minus the sampler)."""

    def __init__(self):
        self.asked = {}

    def suggest_float(self, name, low, high, log=False):
        self.asked[name] = ("float", low, high, log)
        return low

    def suggest_int(self, name, low, high):
        self.asked[name] = ("int", low, high)
        return low

    def suggest_categorical(self, name, choices):
        self.asked[name] = ("categorical", tuple(choices))
        return choices[0]


@pytest.mark.parametrize(
    ("arm", "expected"),
    [("source_only", {"lr"}), ("single_level", {"lr", "lambda_adv_main"}),
     ("multi_level", {"lr", "lambda_adv_main", "lambda_adv_aux", "gan"})],
)  # fmt: skip
def test_define_by_run_space_gives_each_arm_exactly_its_parameters(tmp_path, arm, expected):
    import pickle

    spec = load_spec(write(tmp_path, BASE))
    space = pickle.loads(pickle.dumps(arm_space(spec, arm)))  # OptunaSearch pickles it
    trial = FakeTrial()
    constants = space(trial)
    assert set(trial.asked) == expected
    assert constants == {"arm": arm, "stage": "search"}
    assert trial.asked["lr"] == ("float", 1e-4, 1e-3, True)


def load_spec_dict() -> dict:
    return yaml.safe_load(yaml.safe_dump(BASE))


def changed(changes: dict) -> tuple[dict, dict]:
    """The saved spec, and a copy with ``changes`` (``"a/b/c": value``) applied."""
    old = load_spec_dict()
    old["confirm"] = {"top_k": 1, "seeds": [0, 1, 2]}
    new = yaml.safe_load(yaml.safe_dump(old))
    for dotted, value in changes.items():
        node = new
        *parents, leaf = dotted.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return old, new


@pytest.mark.parametrize(
    ("changes", "grown"),
    [({"search/num_samples": 4}, ["search.num_samples"]),
     ({"confirm/top_k": 2}, ["confirm.top_k"]),
     ({"confirm/seeds": [0, 1, 2, 3]}, ["confirm.seeds"]),
     ({"arms/feature_level": {"multi_level": False, "adapt_space": "feature"}},
      ["arms.feature_level"]),
     ({"arms/bare": {}}, ["arms.bare"]),
     ({"arms/new": {"multi_level": False},
       "search/space/lambda_adv_main/arms": ["single_level", "multi_level", "new"]},
      ["arms.new", "search.space.lambda_adv_main.arms"]),
     ({"ray/address": "auto"}, [])],
)  # fmt: skip
def test_changes_that_only_add_work_grow_the_study(changes, grown):
    from study.spec.growth import spec_changes

    assert spec_changes(*changed(changes)) == (grown, [])


@pytest.mark.parametrize(
    ("changes", "refused"),
    [({"search/num_samples": 1}, ["search.num_samples"]),
     ({"confirm/seeds": [0, 2]}, ["confirm.seeds"]),
     ({"confirm/seeds": [5, 0, 1, 2]}, ["confirm.seeds"]),
     ({"train/num_steps": 40}, ["train.num_steps"]),
     ({"arms/source_only/use_target": True}, ["arms.source_only.use_target"]),
     ({"search/space/lr/log_uniform": [1e-5, 1e-3]}, ["search.space.lr.log_uniform"]),
     ({"search/space/lambda_adv_main/arms": ["multi_level"]},
      ["search.space.lambda_adv_main.arms"])],
)  # fmt: skip
def test_changes_that_make_finished_trials_incomparable_are_named(changes, refused):
    from study.spec.growth import spec_changes

    assert spec_changes(*changed(changes))[1] == refused


def test_removing_an_arm_is_refused():
    from study.spec.growth import spec_changes

    old = load_spec_dict()
    new = yaml.safe_load(yaml.safe_dump(old))
    del new["arms"]["multi_level"]
    assert "arms.multi_level" in spec_changes(old, new)[1]


def test_every_path_in_a_spec_is_relative_to_the_spec_file(tmp_path, monkeypatch):
    folder = tmp_path / "studies"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    spec["data"] = {"source": {"root": "gta", "list": "lists/gta.txt"},
                    "target": {"root": "../cs", "list": "/abs/cs.txt"}}  # fmt: skip
    spec["train"].update(init_weights="w/init.pth", init_discriminator_main="~/d.pth")
    spec["arms"]["multi_level"]["init_discriminator_aux"] = "d/aux.pth"
    spec["storage"] = "runs"
    loaded = load_spec(write(folder, spec))
    assert loaded.data.source.root == str(folder / "gta")
    assert loaded.data.source.list_file == str(folder / "lists" / "gta.txt")
    assert loaded.data.target.root == str(tmp_path / "cs")  # normalised: no ".."
    assert loaded.data.target.list_file == "/abs/cs.txt"
    assert loaded.train["init_weights"] == str(folder / "w" / "init.pth")
    assert loaded.train["init_discriminator_main"] == str(tmp_path / "home" / "d.pth")
    assert loaded.arms["multi_level"]["init_discriminator_aux"] == str(folder / "d" / "aux.pth")
    assert loaded.storage == str(folder / "runs")


@pytest.mark.parametrize("storage", ["s3://bucket/studies", "gs://b/x"])
def test_a_storage_uri_is_left_as_written(tmp_path, storage):
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    spec["storage"] = storage
    assert load_spec(write(tmp_path, spec)).storage == storage


def test_the_synthetic_root_is_relative_to_the_spec_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s").mkdir()
    loaded = load_spec(write(tmp_path / "s", BASE))
    assert loaded.data.synthetic.root == str(tmp_path / "s" / "data" / "synthetic")


@pytest.mark.parametrize(("yaml_text", "optuna_type", "value"), [
    ("{uniform: [0.2, 0.6]}", "FloatDistribution", 0.4),
    ("{log_uniform: [1.0e-4, 1.0e-2]}", "FloatDistribution", 1e-3),
    ("{int: [3, 9]}", "IntDistribution", 3),
    ("{categorical: [ls, vanilla]}", "CategoricalDistribution", "ls"),
])  # fmt: skip
def test_a_distribution_maps_to_optuna_and_names_a_value_inside_it(yaml_text, optuna_type, value):
    dist = Distribution(**yaml.safe_load(yaml_text))
    optuna_dist = dist.to_optuna()
    assert type(optuna_dist).__name__ == optuna_type
    assert dist.representative() == pytest.approx(value)
    assert optuna_dist._contains(optuna_dist.to_internal_repr(dist.representative()))
    assert getattr(optuna_dist, "log", False) == ("log_uniform" in yaml_text)


def test_arm_configs_are_checked_with_a_sampled_value(tmp_path):
    # num_steps searched in [5, 8] cannot hold eval_every 10: the train section alone could.
    spec = with_("search.space", {"num_steps": {"int": [5, 8], "arms": ["source_only"]}})
    with pytest.raises(
        SpecError, match=r"arms.source_only \(with train\): .*eval_every <= num_steps \(5\)"
    ):
        load_spec(write(tmp_path, spec))


@pytest.mark.parametrize(("space", "arms", "how"), [
    ({"lr": {"uniform": [1e-4, 1e-3]}}, {}, "searched"),
    ({}, {"lr": 1e-3}, "fixed"),
    ({"lr": {"uniform": [1e-4, 1e-3], "arms": ["source_only", "single_level"]}},
     {"multi_level": {"multi_level": True, "lr": 1e-3}}, "searched or fixed"),
])  # fmt: skip
def test_a_train_key_every_arm_overrides_is_refused_saying_how(tmp_path, space, arms, how):
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    spec["train"]["lr"] = 5e-4
    spec["search"]["space"] = space
    for arm, values in spec["arms"].items():
        values.update(arms.get(arm, arms if "lr" in arms else {}))
    with pytest.raises(SpecError, match=rf"train.lr: every arm overrides it \({how} in each\)"):
        load_spec(write(tmp_path, spec))


def test_a_limited_parameter_fixed_by_an_arm_it_applies_to_is_refused(tmp_path):
    spec = with_(
        "search.space", {"gan": {"categorical": ["vanilla", "ls"], "arms": ["multi_level"]}}
    )
    spec["arms"]["multi_level"]["gan"] = "ls"
    with pytest.raises(SpecError, match="search.space.gan: arm `multi_level` fixes it"):
        load_spec(write(tmp_path, spec))
    spec["arms"]["multi_level"].pop("gan")
    spec["arms"]["single_level"]["gan"] = "ls"  # not an arm the parameter applies to: fine
    load_spec(write(tmp_path, spec))


def test_baseline_roles_follow_what_arms_do_including_searched_adversarial_weights(tmp_path):
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    spec["train"].update(lambda_adv_main=0.0, lambda_adv_aux=0.0)
    spec["arms"] = {
        "no_target": {"use_target": False, "multi_level": False},
        "main_searched": {"multi_level": False},
        "aux_searched": {"multi_level": True},
        "silent": {"multi_level": True},
        "silent_too": {"multi_level": False},
    }
    spec["search"]["space"] = {
        "lambda_adv_main": {"log_uniform": [1e-4, 1e-2], "arms": ["main_searched"]},
        "lambda_adv_aux": {"log_uniform": [1e-5, 1e-3], "arms": ["aux_searched"]},
    }
    roles = baseline_arms(load_spec(write(tmp_path, spec)))
    assert roles == {"source_only": "no_target", "bn_control": "silent"}


def test_a_synthetic_data_section_stands_for_its_two_folders(tmp_path):
    cfg = arm_config(load_spec(write(tmp_path, BASE)), "single_level")
    root = tmp_path / "data" / "synthetic"
    assert (cfg.source, cfg.source_root) == ("gta5", str(root / "gta5"))
    assert (cfg.target, cfg.target_root) == ("cityscapes", str(root / "cityscapes"))


def test_every_missing_environment_variable_is_named_with_where_it_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("NOT_SET_A", raising=False)
    monkeypatch.delenv("NOT_SET_B", raising=False)
    spec = with_("train.init_weights", "${NOT_SET_A}/w.pth")
    spec["search"]["space"]["gan"]["categorical"] = ["vanilla", "${NOT_SET_A}", "${NOT_SET_B}"]
    with pytest.raises(SpecError) as raised:
        load_spec(write(tmp_path, spec))
    assert (
        "NOT_SET_A (train.init_weights, search.space.gan.categorical[1]), "
        "NOT_SET_B (search.space.gan.categorical[2])"
    ) in str(raised.value)


def test_the_dump_is_plain_yaml_under_the_specs_own_key_names(tmp_path):
    spec = with_(
        "search.space",
        {
            "num_steps": {"int": [20, 40], "arms": ["single_level"]},
            "lr": {"uniform": [1e-4, 1e-3]},
        },
    )
    dumped = load_spec(write(tmp_path, spec)).dump()
    assert dumped["search"]["space"]["num_steps"]["int"] == [20, 40]
    assert "integer" not in dumped["search"]["space"]["num_steps"]
    assert yaml.safe_load(yaml.safe_dump(dumped)) == dumped  # plain types only


def test_a_path_given_with_set_is_relative_to_the_current_folder_and_the_rest_untouched(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    raw = {"train": {"init_weights": "a.pth", "lr": 1e-3}, "data": {"synthetic": {"root": "d"}}}
    out = apply_overrides(raw, ["train.init_weights=w/init.pth", "train.gan=ls"])
    assert out["train"]["init_weights"] == str(tmp_path / "w" / "init.pth")
    assert out["train"]["gan"] == "ls" and out["data"] == {"synthetic": {"root": "d"}}
    assert raw == {"train": {"init_weights": "a.pth", "lr": 1e-3},
                   "data": {"synthetic": {"root": "d"}}}  # fmt: skip
    assert apply_overrides(raw, ["data.synthetic.seed=3"])["data"]["synthetic"]["root"] == "d"


def test_a_path_key_holding_a_number_is_a_spec_error_not_a_crash(tmp_path):
    with pytest.raises(
        SpecError, match="key `init_weights`: input should be a valid string, got 5"
    ):
        load_spec(write(tmp_path, with_("train.init_weights", 5)))


def test_a_single_arm_that_fixes_a_train_key_is_told_so(tmp_path):
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    spec["arms"] = {"only": {"multi_level": False, "gan": "ls"}}
    spec["train"]["gan"] = "vanilla"
    spec["search"]["space"] = {"lr": {"log_uniform": [1e-4, 1e-3]}}
    with pytest.raises(SpecError, match=r"train.gan: every arm overrides it \(fixed in each\)"):
        load_spec(write(tmp_path, spec))


def test_a_grace_period_of_the_whole_run_is_accepted_one_step_more_is_not(tmp_path):
    spec = with_("scheduler", {"kind": "asha", "grace_period": 20})  # num_steps 20
    assert load_spec(write(tmp_path, spec), []).scheduler.grace_period == 20
    spec["scheduler"]["grace_period"] = 21
    with pytest.raises(SpecError, match="grace_period"):
        load_spec(write(tmp_path, spec), [])


def test_unset_and_empty_variables_are_one_error_naming_both(monkeypatch):
    from study.spec.loading import expand_env

    monkeypatch.delenv("ADAPTSEG_UNSET", raising=False)
    monkeypatch.setenv("ADAPTSEG_EMPTY", "")
    raw = {"data": {"root": "${ADAPTSEG_UNSET}/x"}, "train": {"init_weights": "${ADAPTSEG_EMPTY}"}}
    with pytest.raises(SpecError) as error:
        expand_env(raw, "", "s.yaml")
    assert str(error.value) == (
        "s.yaml: environment variable not set: ADAPTSEG_UNSET (data.root); environment variable "
        "empty: ADAPTSEG_EMPTY (train.init_weights) (export them, or set the keys with --set)"
    )


@pytest.mark.parametrize(
    "trackers, missing, refused",
    [
        ({"mlflow": {}}, "mlflow", "trackers.mlflow: the mlflow package is not installed"),
        ({"tensorboard": True}, "tensorboard", "trackers.tensorboard: the tensorboard package"),
        ({"tensorboard": True}, "mlflow", None),  # a package the spec does not ask for
        ({}, "mlflow", None),
    ],
)
def test_a_tracker_whose_package_is_missing_is_refused_naming_the_extra(
    tmp_path, monkeypatch, trackers, missing, refused
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a)
    )
    path = write(tmp_path, {**BASE, "trackers": trackers})
    if refused is None:
        assert load_spec(path).name == "t"
        return
    with pytest.raises(SpecError) as error:
        load_spec(path)
    extra = refused.split(".")[1].split(":")[0]
    assert str(error.value) == (
        f"{path}: {refused}{'' if refused.endswith('installed') else ' is not installed'}; "
        f'pip install -e ".[{extra}]"'
    )
