"""SYNTHIA -> Cityscapes, the paper's second benchmark: the spec, its 16- and 13-class protocol
in the report, and the whole study on a synthetic SYNTHIA-layout source."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from study_helpers import ray_env, study_command

from adaptseg.data.labels import CITYSCAPES_CLASSES
from adaptseg.data.synthetic import generate

SYNTHIA_SPEC = Path(__file__).parents[1] / "search_spaces" / "synthia.yaml"
ARMS = {"source_only", "bn_control", "single_level", "multi_level", "feature_level"}


@pytest.fixture(scope="module")
def synthia_bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthia-bench")
    generate(root, seed=0, size=(64, 128), counts=(24, 24, 16), synthia=True)
    return root


def test_without_synthia_root_the_dry_run_names_the_variable(tmp_path):
    env = {**ray_env(), "CITYSCAPES_ROOT": str(tmp_path), "DEEPLAB_INIT": str(tmp_path / "w")}
    env.pop("SYNTHIA_ROOT", None)
    result = subprocess.run(
        study_command(SYNTHIA_SPEC, tmp_path / "results", "--dry-run"), capture_output=True,
        text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "SYNTHIA_ROOT (data.source.root)" in line
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_smoke_runs_the_synthia_spec_and_reports_both_protocols(tmp_path, synthia_bench):
    env = {**ray_env(), "SYNTHIA_ROOT": str(synthia_bench / "synthia"),
           "CITYSCAPES_ROOT": str(synthia_bench / "cityscapes")}  # fmt: skip
    env.pop("DEEPLAB_INIT", None)
    results = tmp_path / "results"
    result = subprocess.run(
        study_command(SYNTHIA_SPEC, results, "--smoke"), capture_output=True, text=True,
        timeout=900, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    root = results / "synthia-smoke"
    trials = pd.read_parquet(root / "tables" / "trials.parquet")
    assert set(trials["arm"]) == ARMS
    classes = pd.read_parquet(root / "tables" / "class_iou.parquet")
    assert set(classes["class"]) == set(CITYSCAPES_CLASSES), "every class's IoU is kept"
    arms = pd.read_parquet(root / "tables" / "arms.parquet")
    assert set(arms["eval_classes"]) == {13} and set(arms["source"]) == {"synthia"}
    report = (root / "report.html").read_text()
    assert "mIoU-13, best-on-select (report)" in report
    assert "mIoU-16, best-on-select (report)" in report
    head = report.index("mIoU-16, best-on-select (report)")
    table = report[head : report.index("</table>", head)]
    assert table.count("<tr>") == len(ARMS), "every arm has its mIoU-16 and mIoU-13"
    assert json.loads((root / "summary.json").read_text())["arms"].keys() == ARMS
