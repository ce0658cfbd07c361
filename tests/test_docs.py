"""The documentation cannot drift: generated references are current, every link stays inside
the repository and points at something that exists, and nothing refers to files a user's clone
does not have."""

from __future__ import annotations

import re
from pathlib import Path

from study.reference import FILES, main

ROOT = Path(__file__).parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_generated_references_are_current(capsys):
    assert main(["--check"]) == 0, capsys.readouterr().err
    assert all((ROOT / "docs" / name).is_file() for name in FILES)


def test_every_link_points_inside_the_repository_at_something_that_exists():
    for document in DOCUMENTS:
        for target in LINK.findall(document.read_text()):
            path = target.split("#", 1)[0]
            assert "://" not in target and not target.startswith("/"), f"{document}: {target}"
            if path:
                resolved = (document.parent / path).resolve()
                assert resolved.is_relative_to(ROOT), f"{document}: {target} leaves the repo"
                assert resolved.exists(), f"{document}: {target} does not exist"


def test_nothing_refers_to_the_design_notes_outside_the_repository():
    files = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yaml")
             and ".git" not in p.parts and "data" not in p.parts]  # fmt: skip
    outside = "shared" + "/design"  # spelled apart so that this file does not match itself
    for path in files:
        assert outside not in path.read_text(errors="replace"), path
