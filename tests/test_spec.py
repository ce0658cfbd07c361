"""Study spec validation (no Ray): every mistake is one line naming file and key path."""

from __future__ import annotations

import pytest
import yaml

from study.plan import StudyPaths, describe_plan
from study.space import arm_space
from study.spec import SpecError, arm_config, load_spec

BASE = {
    "name": "t",
    "data": {"synthetic": {"root": "data/synthetic"}},
    "train": {"backbone": "small", "num_steps": 20, "eval_every": 10},
    "arms": {
        "source_only": {"use_target": False, "multi_level": False},
        "single_level": {"multi_level": False},
        "multi_level": {"multi_level": True},
    },
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
    from study.plan import spec_changes

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
    from study.plan import spec_changes

    assert spec_changes(*changed(changes))[1] == refused


def test_removing_an_arm_is_refused():
    from study.plan import spec_changes

    old = load_spec_dict()
    new = yaml.safe_load(yaml.safe_dump(old))
    del new["arms"]["multi_level"]
    assert "arms.multi_level" in spec_changes(old, new)[1]
