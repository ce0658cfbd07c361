"""A full disk named as such wherever it is raised (study.stages.diskspace), and Ray's tracebacks about
it held back; the export leaves the Optuna database alone while a driver owns it."""

from __future__ import annotations

import errno
import logging
import sqlite3

from fabricate import fabricate

from study.stages.diskspace import (
    about_no_space,
    caused_by_no_space,
    error_says_no_space,
    no_space,
)


def wrapped(inner: BaseException) -> RuntimeError:
    """``inner`` two levels down a chain, as Ray and SQLAlchemy wrap errors."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise ValueError("the storage failed") from exc
    except ValueError as exc:
        try:
            raise RuntimeError("Trial task failed") from exc
        except RuntimeError as outer:
            return outer


def test_a_full_disk_is_found_anywhere_in_an_exceptions_chain():
    assert caused_by_no_space(wrapped(OSError(errno.ENOSPC, "No space left on device")))
    assert caused_by_no_space(wrapped(OSError(errno.EDQUOT, "quota")))
    assert caused_by_no_space(wrapped(sqlite3.OperationalError("database or disk is full")))
    assert not caused_by_no_space(wrapped(OSError(errno.EACCES, "Permission denied")))
    assert not caused_by_no_space(None)


def test_a_trials_error_file_says_whether_the_disk_was_full(tmp_path):
    full, other = tmp_path / "full.txt", tmp_path / "other.txt"
    full.write_text("Traceback ...\nOSError: [Errno 28] No space left on device\n")
    other.write_text("Traceback ...\nValueError: bad\n")
    assert error_says_no_space(str(full))
    assert not error_says_no_space(str(other))
    assert not error_says_no_space(None) and not error_says_no_space(str(tmp_path / "gone"))


def test_rays_records_about_a_full_disk_are_held_back_and_others_kept():
    def keep(record: logging.LogRecord) -> bool:
        return not about_no_space(record)

    def record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("ray.tune", logging.ERROR, "x", 1, message, None, info)

    assert not keep(record("Saving experiment state failed: No space left on device"))
    assert not keep(record("Trial task failed", wrapped(OSError(errno.ENOSPC, "full"))))
    assert keep(record("Trial task failed", wrapped(ValueError("bad"))))
    assert keep(record("Stop signal received"))


def test_the_no_space_line_names_the_folder_and_what_to_do(tmp_path):
    line = no_space(tmp_path / "study").line()
    assert line.startswith(f"error: no space left on the disk of {tmp_path / 'study'} (")
    assert line.endswith(" MB free); free some space and run the same command again: it "
                         "resumes where it stopped")  # fmt: skip


def test_the_export_leaves_the_optuna_database_to_a_running_driver(tmp_path):
    from study.export import rebuild_optuna_db
    from study.stages.lock import StudyLock

    root = tmp_path / "s"
    fabricate(root, trials_per_arm=2, evals=2)
    (root / "study.yaml").write_text(
        (root / "study.yaml").read_text().replace("/nowhere", str(tmp_path / "bench"))
    )
    lock = StudyLock(root).acquire()
    try:
        assert rebuild_optuna_db(root) is None and not (root / "optuna.db").exists()
    finally:
        lock.release()
    assert rebuild_optuna_db(root).startswith(f"{root / 'optuna.db'}: it is missing; rebuilt")
    assert (root / "optuna.db").is_file()
