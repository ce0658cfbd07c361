"""Every file in tests/bad_inputs/ is one mistake a user makes: one line on stderr naming the
file and the key, exit 2, and no study directory left behind."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from study.run import main

CORPUS = Path(__file__).parent / "bad_inputs"
CASES = sorted(CORPUS.glob("*.yaml"))


def headers(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        if line.startswith("# ") and ":" in line:
            key, _, value = line[2:].partition(": ")
            out[key] = value
    return out


def test_the_corpus_holds_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_input(case, dry_run, tmp_path, monkeypatch, capsys):
    data = CORPUS / "data"
    monkeypatch.setenv("DATA", str(data))
    monkeypatch.setenv("BENCH", str(tmp_path / "bench"))
    monkeypatch.delenv("ADAPTSEG_SURELY_UNSET", raising=False)
    monkeypatch.setenv("ADAPTSEG_EMPTY", "")
    info = headers(case)
    results = tmp_path / "results"
    if info.get("results") == "unwritable":
        results.write_text("a file where the results folder should be")
    argv = [str(case), "--results", str(results), *shlex.split(info.get("args", ""))]
    argv += ["--dry-run"] if dry_run else ["--node-ip-address", "127.0.0.2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    expected = info["expect"].replace("${DATA}", str(data))
    assert err[0].startswith("error: ") and expected in err[0], err[0]
    assert str(case) in err[0] or err[0].startswith("error: --set"), "the message names the file"
    assert not (results / "bad").exists() and not (tmp_path / "bench").exists()
    if results.is_dir():
        assert not list(results.iterdir()), "something was written"
