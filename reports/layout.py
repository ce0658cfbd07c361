"""The names of the files of a study folder that the report reads, owned here once: ``study``
writes them through ``study.records.folder.StudyPaths`` (which extends ``StudyFolder`` with the
files only the study uses), and ``reports`` reads them, without importing ``study``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPEC_FILE = "study.yaml"
PROVENANCE_FILE = "provenance.json"
REPORT_FILE = "report.html"
TABLES_DIR = "tables"
# Every table a study's ``tables/`` holds (``status`` only while or after ``study.run`` ran).
TABLES = ("trials", "evals", "class_iou", "arms", "comparisons", "status")


def table_file(folder: Path, name: str) -> Path:
    """The Parquet file of table ``name`` (one of ``TABLES``) in ``folder``."""
    assert name in TABLES, name
    return folder / f"{name}.parquet"


@dataclass(frozen=True)
class StudyFolder:
    """A study folder as the report sees it."""

    root: Path

    @property
    def spec_file(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def provenance(self) -> Path:
        return self.root / PROVENANCE_FILE

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE

    @property
    def tables(self) -> Path:
        return self.root / TABLES_DIR

    def table(self, name: str) -> Path:
        return table_file(self.tables, name)
