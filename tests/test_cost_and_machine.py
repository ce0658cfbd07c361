"""The cost estimate's arithmetic, and the machine provenance records."""

from __future__ import annotations

import pandas as pd
import pytest

from adaptseg.devices import CPU_ISAS
from reports.cost import compute_hours
from study.stages.provenance import provenance


def test_compute_hours_scale_each_arms_measured_seconds_per_step_to_its_plan():
    trials = pd.DataFrame({
        "arm": ["a", "a", "b"], "compute_seconds": [100.0, 300.0, 720.0],
        "step_reached": [100, 300, 200],
    })  # fmt: skip
    arms = pd.DataFrame({"arm": ["a", "b"], "num_steps": [400, 200],
                         "planned_search": [4, 2], "planned_confirm": [3, 3]})  # fmt: skip
    spent, estimate = compute_hours(trials, arms)
    assert spent == pytest.approx(1120 / 3600)
    # a: 1 s/step x 400 steps x 7 trials; b: 3.6 s/step x 200 steps x 5 trials
    assert estimate == pytest.approx((1.0 * 400 * 7 + 3.6 * 200 * 5) / 3600)


def test_no_estimate_until_every_arm_has_trained_or_without_the_arms_table():
    trials = pd.DataFrame({"arm": ["a"], "compute_seconds": [10.0], "step_reached": [5]})
    arms = pd.DataFrame({"arm": ["a", "b"], "num_steps": [10, 10], "planned_search": [1, 1],
                         "planned_confirm": [1, 1]})  # fmt: skip
    assert compute_hours(trials, arms) == (pytest.approx(10 / 3600), None)
    assert compute_hours(trials, None)[1] is None


def test_provenance_names_the_cpu_kind_and_the_gpus():
    machine = provenance()["machine"]
    assert machine["cpu_kind"] in CPU_ISAS and machine["cpu"]
    assert isinstance(machine["gpus"], list) and machine["cpu_count"] >= 1
