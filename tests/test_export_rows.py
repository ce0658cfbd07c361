"""study.export on a hand-written Ray experiment: every column of every row, worked out by hand
(a restore segment, a line cut by a kill, rows without split or model, each way a trial ends)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from study.tables.export import export

SPACE = {"lr": {"log_uniform": [1e-4, 1e-2]}, "gan": {"categorical": ["vanilla", "ls"]},
         "num_steps": {"int": [6, 12], "arms": ["b"]}, "iter_size": {"categorical": [1, 2]},
         "poly_power": {"categorical": [0.9, 1]}, "deterministic": {"categorical": [True, False]},
         "eval_limit": {"categorical": ["all", 5]}}  # fmt: skip


REPAIRS = (
    "checkpoint_000002 could not be read; resumed from checkpoint_000001 (step 6)",
    "checkpoint_000004 could not be read; resumed from checkpoint_000003 (step 12)",
)


def row(step, iteration, miou, **extra):
    return {"step": step, "training_iteration": iteration, "miou": miou, "seed": 7,
            "time_total_s": 10.0 * iteration, "compute_seconds": 9.0 * iteration,
            "lr": 1e-3, "lr_d": 1e-4, "images_per_second": 5.0, "loss_seg_src_main": 0.5,
            "iou_road": miou + 0.1, "iou_car": miou - 0.1, **extra}  # fmt: skip


def experiment(root, name, trials, as_text=True, error_file="error_2.txt"):
    folder = root / "ray" / name
    folder.mkdir(parents=True)
    data, older = [], []
    for trial_id, status, config, lines, error in trials:
        (folder / trial_id).mkdir()
        (folder / trial_id / "result.json").write_text("".join(line + "\n" for line in lines))
        runtime = {"error_filename": None}
        if error:  # named by Ray's runtime record (if it names one), else error.txt
            (folder / trial_id / error_file).write_text(f"Traceback\n  ...\n{error}\n")
            if error_file != "error.txt":
                (folder / trial_id / "error.txt").write_text("an earlier attempt's error\n")
                runtime = {"error_filename": error_file}
        trial = {"trial_id": trial_id, "status": status, "config": config,
                 "relative_logdir": trial_id}  # fmt: skip
        encode = json.dumps if as_text else (lambda value: value)  # Ray has written both
        data.append([encode(trial), encode(runtime)])
        older.append([encode({**trial, "status": "RUNNING"}), encode(runtime)])
    for stamp, trial_data in [("2026-01-01_00-00-00", older), ("2026-01-01_00-00-09", data)]:
        state = json.dumps({"trial_data": trial_data})
        (folder / f"experiment_state-{stamp}.json").write_text(state)


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    spec = {"name": "s", "train": {"num_steps": 12}, "search": {"space": SPACE},
            "arms": {"a": {}, "b": {"num_steps": 24}}}  # fmt: skip
    (root / "study.yaml").write_text(yaml.safe_dump(spec))
    (root / "provenance.json").write_text(json.dumps({"code_version": "abc123"}))
    dump = json.dumps
    experiment(root, "search-a", [
        ("done", "TERMINATED", {"arm": "a", "stage": "search", "lr": 1e-3, "gan": "ls"},
         [dump(row(6, 1, 0.2, split="select", peak_memory_gb=0.5, repair=REPAIRS[0])),
          dump(row(12, 2, 0.3, peak_memory_gb=0.9)),
          '{"step": 18, "mi',  # cut by a kill; the restored run appends after it
          # the same report again after the restore (on another machine): the last wins
          dump(row(12, 2, 0.35, peak_memory_gb=0.7, device="cpu AVX2 (test)", amp_used="none",
                   repair=REPAIRS[1]))],
         None),
        ("stopped", "TERMINATED", {"arm": "a", "stage": "search", "lr": 2e-3},
         [dump(row(6, 1, 0.25))], None),
        ("lost", "RUNNING", {"arm": "a", "lr": 4e-3, "gan": "ls", "iter_size": 2,
                             "poly_power": 1, "deterministic": True, "eval_limit": 5},
         [dump(row(6, 1, 0.15))], None),
        ("oom", "TERMINATED", {"arm": "a", "stage": "search", "lr": 5e-3},
         [dump(row(6, 1, 0.12)),
          dump({"step": 6, "model": "errored", "status": "errored", "seed": 7,
                "training_iteration": 2, "error": "CUDA out of memory at step 7: Tried"})],
         None),
        ("empty", "TERMINATED", {"arm": "a", "stage": "search", "lr": 6e-3}, [], None),
        ("broke", "ERROR", {"arm": "a", "stage": "search", "lr": 3e-3, "gan": "ls"},
         [dump(row(6, 1, 0.1))], "RuntimeError: the worker died"),
        ("nan", "TERMINATED", {"arm": "a", "stage": "search", "lr": 9.0, "gan": "ls"},
         [dump(row(6, 1, 0.05)),
          dump({"step": 6, "model": "diverged", "status": "diverged", "seed": 7,
                "training_iteration": 2,
                "error": "loss became NaN or infinite at step 7"})],
         None),
    ])  # fmt: skip
    confirm = {"arm": "b", "stage": "confirm", "rank": 0, "seed": 3, "lr": 1e-3, "gan": "ls",
               "num_steps": 12}  # fmt: skip
    experiment(root, "search-b", [
        ("crashed", "ERROR", {"arm": "b", "stage": "search", "lr": 1e-3, "num_steps": 6},
         [], "ValueError: bad"),
    ], error_file="error.txt")  # fmt: skip
    experiment(root, "confirm-1", [
        ("c0", "TERMINATED", {"case": confirm},
         [dump(row(12, 1, 0.4, seed=3)),
          dump({"step": 12, "split": "report", "model": "final", "miou": 0.31, "seed": 3,
                "training_iteration": 2,
                "iou_road": 0.5, "time_total_s": 30.0, "compute_seconds": 25.0}),
          dump({"step": 12, "split": "report", "model": "best_on_select", "miou": 0.33,
                "training_iteration": 3,
                "seed": 3, "time_total_s": 31.0, "compute_seconds": 25.5})],
         None),
        ("c1", "PENDING", {"case": {**confirm, "seed": 4}}, [], None),
    ], as_text=False)  # fmt: skip
    # A finished trial keeps the error file of an earlier, failed attempt: not its error.
    (root / "ray" / "search-a" / "done" / "error.txt").write_text("RuntimeError: old\n")
    # Tune gave up on "lost" after the last snapshot (study/outcomes.py records it).
    (root / "trial_errors.json").write_text(
        json.dumps({"search-a": {"lost": "RayActorError: the actor died"}})
    )
    # A grown study re-ranked: the case that ran as rank 0 is rank 1 in the current plan.
    plan = [{"for": None, "cases": [confirm]}, {"for": None, "cases": [{**confirm, "rank": 1}]}]
    (root / "confirm_plan.json").write_text(json.dumps({"generations": plan}))
    return root


def table(root, name):
    return pq.read_table(root / "tables" / f"{name}.parquet").to_pylist()


def test_every_trial_column(study):
    assert export(study) == {"trials": 10, "evals": 12, "class_iou": 17, "arms": 2,
                             "comparisons": 0, "errored": 4}  # fmt: skip
    schema = pq.read_schema(study / "tables" / "trials.parquet")
    columns = ("lr", "gan", "num_steps", "iter_size", "poly_power", "deterministic", "eval_limit")
    assert [str(schema.field(n).type) for n in columns] == [
        "double", "string", "int64", "int64", "double", "bool", "string",
    ]  # fmt: skip
    trials = {t["trial_id"]: t for t in table(study, "trials")}
    common = {"study": "s", "seed": 7, "code_version": "abc123", "num_steps": None,
              "iter_size": None, "poly_power": None, "deterministic": None, "eval_limit": None,
              "peak_memory_gb": None, "device": None, "amp_used": None, "repairs": None}  # fmt: skip
    assert trials["done"] == {
        **common, "experiment": "search-a", "arm": "a", "stage": "search", "trial_id": "done",
        "rank": None, "repeat": 1, "current": True, "status": "completed", "error": None,
        "best_miou": 0.35,
        "final_miou": 0.35, "best_step": 12, "step_reached": 12, "max_steps": 12,
        "report_miou_final": None, "report_miou_best_on_select": None, "wall_seconds": 20.0,
        "compute_seconds": 18.0, "lr": 1e-3, "gan": "ls",
        # the largest peak of the rows kept; the machine and amp of the last report
        "peak_memory_gb": 0.7, "device": "cpu AVX2 (test)", "amp_used": "none",
        "repairs": "; ".join(REPAIRS),  # what resumes repaired, oldest first
        "config": '{"arm": "a", "gan": "ls", "lr": 0.001, "stage": "search"}',
    }  # fmt: skip
    assert (trials["stopped"]["status"], trials["stopped"]["step_reached"]) == ("early_stopped", 6)
    assert trials["stopped"]["gan"] is None  # not sampled for it: null, not the text "None"
    lost = trials["lost"]
    assert (lost["status"], lost["error"]) == ("errored", "RayActorError: the actor died")
    assert lost["stage"] == "search"  # a config without a stage is a search trial's
    assert (lost["iter_size"], lost["poly_power"], lost["deterministic"]) == (2, 1.0, True)
    assert lost["eval_limit"] == "5"  # a choice among mixed types is kept as text
    oom = trials["oom"]
    assert (oom["status"], oom["error"]) == ("errored", "CUDA out of memory at step 7: Tried")
    empty = trials["empty"]
    assert (empty["status"], empty["step_reached"], empty["seed"]) == ("early_stopped", 0, None)
    assert (empty["best_miou"], empty["wall_seconds"]) == (None, None)
    assert (trials["crashed"]["status"], trials["crashed"]["error"]) == (
        "errored",
        "ValueError: bad",
    )
    assert (trials["c1"]["status"], trials["c1"]["seed"], trials["c1"]["rank"]) == (
        "running",
        4,
        None,
    )
    assert trials["c1"]["current"] is False  # its case is no longer in the newest plan
    assert trials["broke"]["status"] == "errored"
    assert trials["broke"]["error"] == "RuntimeError: the worker died"
    nan = trials["nan"]
    assert (nan["status"], nan["error"]) == ("diverged", "loss became NaN or infinite at step 7")
    assert (nan["best_miou"], nan["final_miou"], nan["step_reached"]) == (0.05, 0.05, 6)
    assert trials["c0"] == {
        **common, "seed": 3, "experiment": "confirm-1", "arm": "b", "stage": "confirm",
        "trial_id": "c0", "rank": 1, "repeat": 1, "current": True, "status": "completed",
        "error": None,
        "best_miou": 0.4,
        "final_miou": 0.4, "best_step": 12, "step_reached": 12, "max_steps": 12,  # its own
        "report_miou_final": 0.31, "report_miou_best_on_select": 0.33, "wall_seconds": 31.0,
        "compute_seconds": 25.5, "lr": 1e-3, "gan": "ls", "num_steps": 12,
        "config": json.dumps({"arm": "b", "gan": "ls", "lr": 0.001, "num_steps": 12,
                              "rank": 1, "seed": 3, "stage": "confirm"}),
    }  # fmt: skip


def test_every_evaluation_and_class_column(study):
    export(study)
    evals = table(study, "evals")
    done = [e for e in evals if e["trial_id"] == "done"]
    assert [(e["step"], e["miou"]) for e in done] == [(6, 0.2), (12, 0.35)]
    assert done[1] == {
        "study": "s", "experiment": "search-a", "arm": "a", "stage": "search",
        "trial_id": "done", "seed": 7, "split": "select", "model": "current", "step": 12,
        "time_total_s": 20.0, "compute_seconds": 18.0, "images_per_second": 5.0, "lr": 1e-3,
        "lr_d": 1e-4, "loss_seg_src_main": 0.5, "loss_seg_src_aux": None,
        "loss_adv_trg_main": None, "loss_adv_trg_aux": None, "loss_ent_trg_main": None,
        "loss_ent_trg_aux": None, "loss_d_main": None, "loss_d_aux": None, "miou": 0.35,
        "peak_memory_gb": 0.7, "status": "ok",
    }  # fmt: skip
    ending = next(e for e in evals if e["trial_id"] == "nan" and e["model"] == "diverged")
    assert (ending["status"], ending["miou"], ending["split"]) == ("diverged", None, "select")
    report = [(e["split"], e["model"], e["miou"]) for e in evals if e["trial_id"] == "c0"]
    assert report == [("select", "current", 0.4), ("report", "final", 0.31),
                      ("report", "best_on_select", 0.33)]  # fmt: skip
    classes = table(study, "class_iou")
    assert {
        "study": "s",
        "arm": "b",
        "stage": "confirm",
        "trial_id": "c0",
        "seed": 3,
        "step": 12,
        "split": "report",
        "model": "final",
        "class": "road",
        "iou": 0.5,
    } in classes
    road = [c["iou"] for c in classes if c["trial_id"] == "done" and c["class"] == "road"]
    assert road == pytest.approx([0.3, 0.45])


def test_an_arm_without_num_steps_has_the_trainers_default():
    from adaptseg.config import TrainConfig
    from study.tables.export import _arm_steps

    default = TrainConfig.model_fields["num_steps"].default
    assert _arm_steps({"train": {}, "arms": {"a": {}}}, "a") == default == 150000
    assert _arm_steps({"train": {"num_steps": 40}, "arms": {"a": {"num_steps": 80}}}, "a") == 80


def test_a_study_without_provenance_or_experiments_still_exports(study):
    (study / "provenance.json").unlink()
    export(study)
    assert {t["code_version"] for t in table(study, "trials")} == {"unknown"}
    for folder in sorted((study / "ray").iterdir()):
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        folder.rmdir()
    (study / "ray").rmdir()
    assert export(study) == {"trials": 0, "evals": 0, "class_iou": 0, "arms": 2,
                             "comparisons": 0, "errored": 0}  # fmt: skip


def test_a_running_drivers_statuses_win_over_a_lagging_snapshot(study):
    """The live report exports while Ray's snapshot still lags (study/live.py)."""
    live = {"search-a": {"done": "RUNNING", "stopped": "TERMINATED"},
            "confirm-1": {"c1": "TERMINATED"}}  # fmt: skip
    export(study, live=live)
    trials = {t["trial_id"]: t for t in table(study, "trials")}
    assert trials["done"]["status"] == "running"
    assert (trials["c1"]["status"], trials["c1"]["error"]) == ("early_stopped", None)
    assert trials["stopped"]["status"] == "early_stopped" and trials["stopped"]["error"] is None
    lost = trials["lost"]  # not in the live statuses: the errors file still applies
    assert (lost["status"], lost["error"]) == ("errored", "RayActorError: the actor died")


def test_a_spec_this_version_cannot_validate_still_exports_its_arms_by_name(study, capsys):
    """An older study's saved spec (here: no data section, and keys this version does not
    know) keeps its tables: the arms by name, without roles, and one warning naming what
    failed, cut at 300 characters."""
    spec = yaml.safe_load((study / "study.yaml").read_text())
    spec.update({f"retired_key_{i}": i for i in range(8)})
    (study / "study.yaml").write_text(yaml.safe_dump(spec))
    export(study)
    (line,) = capsys.readouterr().err.strip().splitlines()
    head, tail = "warning: study.yaml: ", "; arms exported without roles"
    assert line.startswith(head) and line.endswith(tail)
    reason = line[len(head) : -len(tail)]
    assert reason.startswith("9 validation errors for StudySpec data Field required")
    assert len(reason) == 300  # cut
    empty = {"role": None, "multi_level": None, "adapt_space": None, "method": None,
             "model": None, "source": None, "eval_classes": None, "use_target": None,
             "num_steps": None, "searched": None, "planned_search": None,
             "planned_confirm": None}  # fmt: skip
    assert table(study, "arms") == [
        {"study": "s", "arm": "a", "order": 0, **empty},
        {"study": "s", "arm": "b", "order": 1, **empty},
    ]
    assert table(study, "comparisons") == []


def test_export_takes_the_study_folder_or_its_paths(study, tmp_path):
    from study.records.folder import StudyPaths

    by_folder = export(study)
    assert export(StudyPaths.of_study(study)) == by_folder
    shared = tmp_path / "shared"  # Ray's experiments on a shared folder: <storage>/<name>/
    shared.mkdir()
    (study / "ray").rename(shared / "s")
    assert export(StudyPaths(study, str(shared))) == by_folder
    assert export(study)["trials"] == 0  # the folder alone: its spec names no storage


def test_a_repeats_trials_carry_their_repeat_and_the_first_repeats_carry_1(study):
    """A repeated search's trials (and their confirm cases) name their repeat in every table
    that rows by trial; the first repeat's, which name none, are repeat 1."""
    case = {"arm": "a", "stage": "confirm", "rank": 0, "seed": 0, "repeat": 2, "lr": 1e-3}
    experiment(study, "search-a+r2", [
        ("r2", "TERMINATED", {"arm": "a", "stage": "search", "lr": 1e-3, "repeat": 2},
         [json.dumps(row(6, 1, 0.2))], None),
    ])  # fmt: skip
    experiment(study, "confirm-2", [
        ("c2", "TERMINATED", {"case": case}, [json.dumps(row(12, 1, 0.3, seed=0))], None),
    ])  # fmt: skip
    export(study)
    repeats = {t["trial_id"]: t["repeat"] for t in table(study, "trials")}
    assert (repeats["r2"], repeats["c2"], repeats["done"], repeats["c0"]) == (2, 2, 1, 1)
