"""Faults a study meets in the wild, with real processes on loopback addresses: a damaged or
missing optuna.db, a full disk. Each case asserts what the user sees (exit code, one line, no
traceback) and, after the rerun, the invariants of the chaos test (``invariants.check_study``).
The other faults of the suite (``pytest -m faults``): a second driver (test_lock.py), read-only
folders (test_study.py), kill -9 of the driver, a worker or a node and damaged checkpoints
(test_chaos.py, test_chaos_random.py, test_cluster.py, test_study.py)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from invariants import check_study
from study_helpers import kill_tagged, run_study, start_study, tiny_spec, write_spec
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

from study.records.optuna_db import OPTUNA_STATE
from study.records.rows import RAY_TRIAL_ATTR

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def fault_spec(folder: Path) -> dict:
    return tiny_spec(folder, search={"num_samples": 2}, confirm={"top_k": 1, "seeds": [0, 1]})


def optuna_agrees_with_tables(root: Path, spec: dict) -> None:
    """Every search trial of the tables is one Optuna trial, in the state and with the value
    the tables give it, with its sampled parameters."""
    trials = pd.read_parquet(root / "tables" / "trials.parquet")
    for arm in spec["arms"]:
        study = optuna.load_study(
            study_name=f"{spec['name']}-{arm}", storage=f"sqlite:///{root / 'optuna.db'}"
        )
        linked = {t.user_attrs[RAY_TRIAL_ATTR]: t for t in study.trials}
        rows = trials[(trials["stage"] == "search") & (trials["arm"] == arm)]
        assert set(linked) == set(rows["trial_id"]), arm
        for row in rows.itertuples():
            trial = linked[row.trial_id]
            assert trial.state == OPTUNA_STATE[row.status], (row.trial_id, row.status)
            if row.status == "completed":
                assert trial.value == row.final_miou
            assert trial.params["lr"] > 0 and trial.intermediate_values


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture
def finished(tmp_path, bench):  # noqa: F811
    spec = fault_spec(bench)
    spec_path = write_spec(tmp_path, spec)
    first = run_study(spec_path, tmp_path / "results")
    assert first.returncode == 0, first.stderr[-3000:]
    return spec, spec_path, tmp_path / "results", tmp_path / "results" / "tiny"


def test_a_deleted_optuna_db_is_rebuilt_and_growth_keeps_the_search_history(finished):
    spec, spec_path, results, root = finished
    (root / "optuna.db").unlink()
    export = subprocess.run(
        ["python", "-m", "study.export", str(root)], capture_output=True, text=True, timeout=300
    )
    assert export.returncode == 0, export.stderr[-3000:]
    assert "optuna.db: it is missing; rebuilt it from Ray's records: 4 trials" in export.stdout
    optuna_agrees_with_tables(root, spec)

    (root / "optuna.db").unlink()  # the rerun rebuilds it as well, and TPE goes on from it
    grown = run_study(spec_path, results, "--set", "search.num_samples=3")
    assert grown.returncode == 0, grown.stderr[-3000:]
    no_traceback(grown.stderr)
    rebuilt = [line for line in grown.stderr.splitlines() if "rebuilt it from" in line]
    assert len(rebuilt) == 1 and "it is missing" in rebuilt[0], grown.stderr[-3000:]
    spec["search"]["num_samples"] = 3
    check_study(root, spec)
    optuna_agrees_with_tables(root, spec)


def test_a_damaged_optuna_db_is_moved_aside_and_rebuilt(finished):
    spec, spec_path, results, root = finished
    (root / "optuna.db").write_bytes(b"\x8f not a database " * 4096)
    grown = run_study(spec_path, results, "--set", "search.num_samples=3")
    assert grown.returncode == 0, grown.stderr[-3000:]
    no_traceback(grown.stderr)
    rebuilt = [line for line in grown.stderr.splitlines() if "rebuilt it from" in line]
    assert len(rebuilt) == 1 and "cannot be read" in rebuilt[0], grown.stderr[-3000:]
    aside = list(root.glob("optuna.db.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"\x8f not a database")
    spec["search"]["num_samples"] = 3
    check_study(root, spec)
    optuna_agrees_with_tables(root, spec)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 MB tmpfs (a tiny study needs about 150 MB) (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_the_rerun_resumes(tmp_path, bench, small_disk):  # noqa: F811
    spec = fault_spec(bench)
    spec_path = write_spec(tmp_path, spec)
    results = small_disk / "results"
    filler = small_disk / "filler"
    tag = f"disk-full-{uuid.uuid4().hex[:8]}"

    # Fill the disk while the study runs: a file that grows until the disk is full.
    driver = start_study(spec_path, results, tag, stdout=subprocess.PIPE)
    try:
        import time

        deadline = time.time() + 300
        while (
            time.time() < deadline
            and not (results / "tiny" / "ray" / "search-source_only").is_dir()
        ):
            time.sleep(0.2)
        with filler.open("wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * (1 << 20))
                    handle.flush()
            except OSError:
                pass
        out, err = driver.communicate(timeout=600)
    finally:
        kill_tagged(tag)
    no_traceback(err)
    assert driver.returncode == 3, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: no space left on the disk of {results / 'tiny'}"), last
    assert "orphan" not in err

    filler.unlink()  # space comes back: the rerun resumes and finishes
    again = run_study(spec_path, results)
    assert again.returncode == 0, again.stderr[-3000:]
    assert check_study(results / "tiny", spec)["orphans"] == 0
    shutil.rmtree(results, ignore_errors=True)
