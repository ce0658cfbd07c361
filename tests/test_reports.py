"""Tables and report: schemas, de-duplication, statistics, escaping, determinism, a browser."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fabricate import fabricate

from reports.build import main as build_main
from reports.report import build
from reports.stats import mean_ci, paired_difference
from study.records.trials import read_rows
from study.tables.export import export


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fab") / "demo"
    fabricate(root, trials_per_arm=4, evals=4)
    export(root)
    return root


def test_tables_have_the_documented_shape(study):
    trials = pq.read_table(study / "tables" / "trials.parquet").to_pandas()
    assert len(trials) == 4 * 4 + 4 * 3
    assert set(trials["status"]) == {"completed", "early_stopped"}
    assert trials.loc[trials["stage"] == "confirm", "report_miou_best_on_select"].notna().all()
    evals = pq.read_table(study / "tables" / "evals.parquet")
    assert evals.schema.metadata[b"adaptseg.schema_version"] == b"1"
    assert set(evals.column("split").to_pylist()) == {"select", "report"}
    classes = pq.read_table(study / "tables" / "class_iou.parquet")
    assert classes.num_rows == evals.num_rows * 19


def test_two_exports_concatenate_and_empty_columns_keep_their_type(tmp_path, study):
    other = tmp_path / "single"
    fabricate(other, trials_per_arm=2, evals=2, arms={"source_only": {"use_target": False}})
    export(other)
    for name in ("evals", "class_iou"):
        a, b = (pq.read_table(d / "tables" / f"{name}.parquet") for d in (study, other))
        assert a.schema == b.schema
        assert pa.concat_tables([a, b]).num_rows == a.num_rows + b.num_rows
    evals = pq.read_table(other / "tables" / "evals.parquet")
    assert evals.schema.field("loss_d_aux").type == pa.float64()
    assert evals.column("loss_d_aux").null_count == evals.num_rows


def test_replayed_rows_after_a_hard_kill_keep_the_last_segment(tmp_path):
    rows = [
        {"step": s, "miou": 0.1, "iterations_since_restore": i} for i, s in enumerate((2, 4, 6), 1)
    ]
    rows += [
        {"step": s, "miou": 0.2, "iterations_since_restore": i} for i, s in enumerate((4, 6, 8), 1)
    ]
    (tmp_path / "result.json").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 1'
    )
    kept = read_rows(tmp_path)
    assert [(r["step"], r["miou"]) for r in kept] == [(2, 0.1), (4, 0.2), (6, 0.2), (8, 0.2)]


def test_confidence_interval_and_paired_difference_by_hand():
    ci = mean_ci([0.40, 0.42, 0.47])
    assert ci.mean == pytest.approx(0.43)
    half = 4.302652729911275 * math.sqrt(0.0013) / math.sqrt(3)
    assert (ci.low, ci.high) == pytest.approx((0.43 - half, 0.43 + half))
    diff = paired_difference({0: 0.5, 1: 0.57, 2: 0.61}, {0: 0.4, 1: 0.45, 2: 0.5, 3: 0.9})
    assert diff.n == 3 and diff.mean == pytest.approx(0.11)  # seed 3 has no pair
    assert diff.high - diff.mean == pytest.approx(4.302652729911275 * 0.01 / math.sqrt(3))
    assert diff.excludes_zero
    wide = paired_difference({0: 0.5, 1: 0.6, 2: 0.55}, {0: 0.4, 1: 0.45, 2: 0.5})
    assert wide.mean == pytest.approx(0.1) and not wide.excludes_zero  # sd 0.05: too wide
    assert not paired_difference({0: 0.5, 1: 0.4}, {0: 0.4, 1: 0.5}).excludes_zero


def test_report_is_deterministic_offline_and_complete(study, tmp_path):
    first = build(study, tmp_path / "a.html").read_bytes()
    second = build(study, tmp_path / "b.html").read_bytes()
    assert first == second
    text = first.decode()
    assert "<script src" not in text and text.count("Plotly.newPlot") >= 6
    for section in ("Does adaptation help?", "Per class", "Learning curves", "Hyperparameters",
                    "Parameter importance", "GAN balance", "Cost", "Provenance"):  # fmt: skip
        assert section in text
    assert "<td>multi_level &minus; source_only</td>" in text  # every compared pair has a row


def test_user_strings_are_escaped(tmp_path):
    root = tmp_path / "evil"
    evil = "<script>alert(1)</script>"
    fabricate(
        root, trials_per_arm=2, evals=2, arms={"source_only": {"use_target": False}, evil: {}}
    )
    export(root)
    text = build(root).read_text()
    assert evil not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_build_without_tables_is_a_clear_error(tmp_path, capsys):
    assert build_main([str(tmp_path)]) == 2
    assert "no tables (run python -m study.export" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("ADAPTSEG_REQUIRE_BROWSER"),
    reason="no Chromium found (Debian package chromium); CI sets ADAPTSEG_REQUIRE_BROWSER",
)
def test_report_renders_in_a_real_browser_offline(study, tmp_path):
    assert CHROMIUM is not None, "ADAPTSEG_REQUIRE_BROWSER is set but Chromium is missing"
    playwright = pytest.importorskip("playwright.sync_api")
    report = build(study, tmp_path / "report.html")
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])  # fmt: skip
        context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        figures = page.eval_on_selector_all(
            "div[id^='figure-']",
            "els => els.map(e => [e.id, e.classList.contains('js-plotly-plot'), e.getBoundingClientRect().height, e.querySelectorAll('.main-svg').length])",
        )
        headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        comparisons = page.inner_text("h3 + table")
        status = page.inner_text("h2 + p")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert headings[:2] == ["Status", "Does adaptation help? (confirm stage, report split)"]
    assert status.startswith("No status recorded")  # exported by hand, not by a running study
    assert "multi_level \u2212 single_level" in comparisons.splitlines()[1]  # the headline pair
    assert len(figures) >= 6
    for figure_id, rendered, height, svgs in figures:
        assert rendered and height > 100 and svgs > 0, figure_id


def test_an_empty_newest_snapshot_left_by_kill_9_is_skipped(tmp_path):
    root = tmp_path / "killed"
    fabricate(root, trials_per_arm=2, evals=2)
    expected = export(root)
    for experiment in (root / "ray").iterdir():
        (experiment / "experiment_state-2099-01-01_00-00-00.json").write_text("")
    assert export(root) == expected


@pytest.mark.commands
def test_the_export_command_says_what_it_wrote_and_refuses_other_folders(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "cli"
    fabricate(root, trials_per_arm=2, evals=2)
    result = subprocess.run([sys.executable, "-m", "study.export", str(root)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    wrote, rebuilt = result.stdout.strip().splitlines()
    assert wrote == (
        f"wrote {root / 'tables'}: trials.parquet 20 rows, evals.parquet 60 rows, "
        "class_iou.parquet 1140 rows, arms.parquet 4 rows, comparisons.parquet 6 rows "
        "(0 errored trials)"
    )
    # The made-up study has no Optuna database: the export derives it from Ray's records.
    assert rebuilt.startswith(f"{root / 'optuna.db'}: it is missing; rebuilt it from Ray's")
    assert (root / "tables" / "trials.parquet").is_file()
    other = subprocess.run([sys.executable, "-m", "study.export", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert other.returncode == 2
    assert other.stderr.strip() == f"error: {tmp_path}: not a study directory (no study.yaml)"


def test_a_study_with_nothing_evaluated_yet_draws_no_empty_figure(tmp_path):
    """Built while the first trials run: every figure without data is left out, one line
    saying why (no axes from 0.1 to 1M with no points)."""
    import pandas as pd

    from reports.report import Report

    root = tmp_path / "young"
    fabricate(root, trials_per_arm=2, evals=2)
    export(root)
    tables = root / "tables"
    evals = pd.read_parquet(tables / "evals.parquet")
    evals.iloc[0:0].to_parquet(tables / "evals.parquet")
    trials = pd.read_parquet(tables / "trials.parquet")
    search = trials[trials["stage"] == "search"].assign(
        status="running", best_miou=None, final_miou=None, compute_seconds=None
    )
    search.to_parquet(tables / "trials.parquet")
    pd.read_parquet(tables / "class_iou.parquet").iloc[0:0].to_parquet(
        tables / "class_iou.parquet"
    )
    report = Report(root)
    html = report.render()
    assert report.figure_count == 0 and "figure-1" not in html
    assert "Lambda sensitivity: no search trial has been evaluated yet." in html
    assert "No evaluations yet." in html and "No adversarial trial has been evaluated yet." in html
    assert "No trial has reported its compute time yet." in html
    assert "No confirm-stage results yet" in html
