"""The study folder (study.folder): its paths, and Ray's records read from a shared folder or
through the mirror of a URI."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from study_helpers import run_study, tiny_spec, write_spec
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

from study.records.folder import MIRROR, StudyPaths


def test_paths_of_a_saved_study_follow_its_storage(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.yaml").write_text(yaml.safe_dump({"name": "s"}))
    local = StudyPaths.of_study(tmp_path / "s")
    assert local.experiments == str(tmp_path / "s" / "ray") and not local.remote
    assert local.sync_records() == local.records_dir == tmp_path / "s" / "ray"
    (tmp_path / "s" / "study.yaml").write_text(yaml.safe_dump({"storage": "s3://b/runs/"}))
    remote = StudyPaths.of_study(tmp_path / "s")
    assert remote.remote and remote.experiment("confirm") == "s3://b/runs/s/confirm"
    (tmp_path / "s" / "study.yaml").write_text(yaml.safe_dump({"storage": str(tmp_path / "x")}))
    shared = StudyPaths.of_study(tmp_path / "s")
    assert not shared.remote and shared.sync_records() == tmp_path / "x" / "s"


def test_the_mirror_of_a_uri_holds_every_record_but_the_checkpoints(tmp_path):
    store = tmp_path / "store" / "s" / "search-a"
    (store / "trial_1" / "checkpoint_000001").mkdir(parents=True)
    (store / "trial_1" / "checkpoint_000001" / "trainer.pt").write_bytes(b"x" * 100)
    (store / "trial_1" / "result.json").write_text('{"step": 2}\n')
    (store / "experiment_state-1.json").write_text(json.dumps({"trial_data": []}))
    paths = StudyPaths(tmp_path / "s", f"file://{tmp_path / 'store'}")
    assert paths.remote
    records = paths.sync_records()
    assert records == tmp_path / "s" / MIRROR
    copied = sorted(str(p.relative_to(records)) for p in records.rglob("*") if p.is_file())
    assert copied == ["search-a/experiment_state-1.json", "search-a/trial_1/result.json"]
    assert paths.search_parts("a") == ["search-a"] and paths.confirm_parts() == []

    mirrored = records / "search-a" / "trial_1" / "result.json"
    stamp = mirrored.stat().st_mtime
    mirrored.write_text("#" * 12)  # marked, same size and time: an unchanged file stays
    os.utime(mirrored, (stamp, stamp))
    paths.sync_records()
    assert mirrored.read_text() == "#" * 12
    (store / "trial_1" / "result.json").write_text('{"step": 2}\n{"step": 4}\n')
    paths.sync_records()
    assert mirrored.read_text().splitlines() == ['{"step": 2}', '{"step": 4}']

    repaired = records / "search-a" / "experiment_state-1.json"  # a repair made in the mirror
    repaired.write_text(json.dumps({"trial_data": [], "runner_data": {}}))
    paths.upload("search-a", repaired.name)
    assert json.loads((store / repaired.name).read_text()) == {"trial_data": [], "runner_data": {}}


@pytest.mark.slow
def test_a_study_on_a_shared_folder_keeps_its_experiments_there(tmp_path, bench):  # noqa: F811
    shared = tmp_path / "shared"
    spec = tiny_spec(
        bench, search={"num_samples": 2}, confirm={"top_k": 1, "seeds": [0]},
        storage=str(shared),
    )  # fmt: skip
    result = run_study(write_spec(tmp_path, spec), tmp_path / "results")
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "results" / "tiny"
    assert not (root / "ray").exists() and not (root / MIRROR).exists()
    assert sorted(p.name for p in (shared / "tiny").iterdir() if p.is_dir()) == [
        "confirm", "search-single_level", "search-source_only",
    ]  # fmt: skip
    assert (root / "report.html").is_file() and "single_level" in result.stdout
