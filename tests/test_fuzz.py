"""Property-based fuzzing (Hypothesis) of every file a user hands the project.

The rule for every input: it loads, or loading raises the project's one error for that kind of
file (which the commands turn into exit 2), with a message of one line that names the file.
No other exception, no traceback, and nothing a file holds is ever executed. A few CLI runs at
the end check the exit code, the single line and that nothing was written.
Cases the fuzzer found are kept in tests/bad_inputs/ (see FOUND below).
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from adaptseg.checkpoint import CheckpointError, load_state
from adaptseg.config import FIELDS, ConfigError, load_config
from adaptseg.data.files import CITYSCAPES_LABELS, SegmentationFiles, gta5_samples
from adaptseg.data.preprocess import DataError
from adaptseg.models import DeeplabMulti, InitWeightsError, load_init_weights
from study.errors import SpecError
from study.spec.loading import load_spec

ROOT = Path(__file__).parents[1]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
WORK = Path(tempfile.mkdtemp(prefix="adaptseg-fuzz-"))
SIDE_EFFECT = WORK / "pwned"


def one_line_naming(message: str, path: Path) -> None:
    assert "\n" not in message, message
    assert str(path) in message, message
    assert "Traceback" not in message and "weights_only=False" not in message, message


def file_with(content: bytes, name: str = "input") -> Path:
    path = WORK / name
    path.write_bytes(content)
    return path


# --- values a hostile file can hold -----------------------------------------------------------
def deep(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


hostile_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("nan"),
    float("inf"), -float("inf"), -1, 0, -1e-9]),
    st.text(max_size=20), st.text(min_size=5000, max_size=20000), st.just("a\0b"),
    st.lists(st.integers(), max_size=4), st.dictionaries(st.text(max_size=5), st.integers(),
    max_size=3), st.integers(min_value=20, max_value=400).map(deep),
)  # fmt: skip


def paths_of(tree: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += paths_of(value, (*prefix, key))
    return out


@st.composite
def mutated(draw, base: dict, keys: tuple[str, ...]) -> dict:
    """``base`` with 1-3 hostile changes: a value replaced, a key removed, an unknown or
    misspelled key added."""
    tree = yaml.safe_load(yaml.safe_dump(base))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths_of(tree)))
        parent = tree
        for key in where[:-1]:
            parent = parent[key]
        if not isinstance(parent, dict) or where[-1] not in parent:
            continue
        action = draw(st.sampled_from(["replace", "replace", "remove", "unknown", "misspell"]))
        if action == "replace":
            parent[where[-1]] = draw(hostile_values)
        elif action == "remove":
            del parent[where[-1]]
        elif action == "unknown":
            parent[draw(st.text(min_size=1, max_size=30))] = draw(hostile_values)
        else:
            key = draw(st.sampled_from(keys))
            index = draw(st.integers(0, len(key) - 1))
            parent[key[:index] + key[index + 1 :]] = draw(hostile_values)
    return tree


def dump(tree: object) -> bytes:
    try:
        return yaml.safe_dump(tree, allow_unicode=True).encode()
    except (yaml.YAMLError, RecursionError):
        return b"{"


# --- the study spec ----------------------------------------------------------------------------
SPEC = {
    "name": "fuzz",
    "data": {"synthetic": {"root": "data/synthetic", "seed": 0, "size": "64x128",
                           "counts": [24, 24, 16]}},
    "train": {k: v for k, v in TINY.items() if k not in ("source", "target", "lr")},
    "arms": {"source_only": {"use_target": False, "multi_level": False},
             "single_level": {"multi_level": False}},
    "search": {"num_samples": 3, "sampler": {"kind": "tpe", "seed": 0, "n_startup_trials": 1},
               "space": {"lr": {"log_uniform": [5e-4, 2e-3]},
                         "lambda_adv_main": {"log_uniform": [1e-3, 1e-2], "arms": ["single_level"]}}},
    "scheduler": {"kind": "asha", "grace_period": 2, "reduction_factor": 2},
    "confirm": {"top_k": 1, "seeds": [0, 1]},
    "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2},
}  # fmt: skip
SPEC_KEYS = tuple(k for path in paths_of(SPEC) for k in path if isinstance(k, str))


def spec_loads_or_says_why(content: bytes) -> None:
    path = file_with(content, "study.yaml")
    try:
        load_spec(path)
    except SpecError as exc:
        one_line_naming(str(exc), path)


@FUZZ
@given(st.binary(max_size=4096))
def test_study_spec_of_random_bytes(content):
    spec_loads_or_says_why(content)


@FUZZ
@given(mutated(SPEC, SPEC_KEYS))
def test_study_spec_generated_from_the_schema(tree):
    spec_loads_or_says_why(dump(tree))


def test_the_unmutated_study_spec_loads():
    load_spec(file_with(dump(SPEC), "study.yaml"))


# --- the train config --------------------------------------------------------------------------
def config_loads_or_says_why(content: bytes) -> None:
    path = file_with(content, "config.yaml")
    try:
        load_config(path)
    except ConfigError as exc:
        one_line_naming(str(exc), path)


@FUZZ
@given(st.binary(max_size=4096))
def test_train_config_of_random_bytes(content):
    config_loads_or_says_why(content)


@FUZZ
@given(mutated(TINY, FIELDS))
def test_train_config_generated_from_the_schema(tree):
    config_loads_or_says_why(dump(tree))


# --- weights and checkpoints -------------------------------------------------------------------
class RunsCode:
    """A pickle that would run code when loaded (it must be refused, never run)."""

    def __reduce__(self):
        return (os.system, (f"touch {SIDE_EFFECT}",))


MODEL = DeeplabMulti(19, "small", multi_level=False)
GOOD = {k: v for k, v in MODEL.state_dict().items() if k in MODEL.backbone_state_keys()}


def saved(obj: object, protocol: int = 2) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_protocol=protocol)
    return buffer.getvalue()


weights_files = st.one_of(
    st.binary(max_size=8192),
    st.integers(0, len(saved(GOOD)) - 1).map(lambda n: saved(GOOD)[:n]),
    st.just(saved(DeeplabMulti(19, "resnet50", multi_level=False).state_dict())),
    st.sampled_from([pickle.dumps({"x": RunsCode()}, protocol=p) for p in (2, 4, 5)]),
    st.integers(2, 5).map(lambda p: saved({"model": {"x": RunsCode()}}, protocol=p)),
    st.just(saved([1, 2, 3])), st.just(saved({"state_dict": "nope"})),
    st.binary(max_size=64).map(lambda junk: saved(GOOD)[:200] + junk + saved(GOOD)[200:]),
)  # fmt: skip


@FUZZ
@given(weights_files)
def test_init_weights_load_or_say_why_and_never_run_code(content):
    path = file_with(content, "init.pth")
    try:
        load_init_weights(MODEL, path)
    except InitWeightsError as exc:
        one_line_naming(str(exc), path)
    assert not SIDE_EFFECT.exists(), "a weights file ran code"


@FUZZ
@given(weights_files)
def test_checkpoints_load_or_say_why_and_never_run_code(content):
    path = file_with(content, "step_00000010.pt")
    try:
        load_state(path)
    except CheckpointError as exc:
        one_line_naming(str(exc), path)
    assert not SIDE_EFFECT.exists(), "a checkpoint ran code"


# --- images, label PNGs and list files ---------------------------------------------------------
def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


GOOD_IMAGE = png(np.zeros((16, 32, 3), dtype=np.uint8))
GOOD_LABEL = png(np.full((16, 32), 7, dtype=np.uint8))
image_files = st.one_of(
    st.binary(max_size=2048),
    st.integers(0, len(GOOD_IMAGE) - 1).map(lambda n: GOOD_IMAGE[:n]),
    st.binary(min_size=1, max_size=32).map(lambda junk: GOOD_IMAGE[:40] + junk + GOOD_IMAGE[40:]),
    st.just(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x7f\xff\xff\xff\x7f\xff\xff\xff\x08\x02\x00\x00\x00"),
    st.just(png(np.zeros((16, 32), dtype=np.uint16))), st.just(GOOD_IMAGE), st.just(GOOD_LABEL),
    st.just(png(np.zeros((16, 32, 4), dtype=np.uint8))), st.just(png(np.zeros((1, 1, 3), dtype=np.uint8))),
    st.just(png(np.full((16, 32), 250, dtype=np.uint8))),
)  # fmt: skip


def gta5_folder(
    image: bytes, label: bytes, listing: bytes | None = None
) -> tuple[Path, Path | None]:
    root = Path(tempfile.mkdtemp(dir=WORK))
    (root / "images").mkdir()
    (root / "labels").mkdir()
    (root / "images" / "00001.png").write_bytes(image)
    (root / "labels" / "00001.png").write_bytes(label)
    list_file = None
    if listing is not None:
        list_file = root / "list.txt"
        list_file.write_bytes(listing)
    return root, list_file


def data_loads_or_says_why(root: Path, list_file: Path | None) -> None:
    try:
        files = SegmentationFiles(
            gta5_samples(root, list_file), (16, 32), CITYSCAPES_LABELS, "caffe"
        )
        files.check()
        files[0]
    except DataError as exc:
        assert "\n" not in str(exc) and str(root) in str(exc), str(exc)


@FUZZ
@given(image_files, image_files)
def test_images_and_label_pngs_load_or_say_why(image, label):
    data_loads_or_says_why(*gta5_folder(image, label))


list_files = st.one_of(
    st.binary(max_size=512),
    st.lists(st.sampled_from(["00001.png", "00002.png", "../00001.png", "/etc/passwd", "a\0b",
                              "x" * 5000, "", "images/00001.png", "\udcff"]), max_size=6)
    .map(lambda lines: "\n".join(lines).encode("utf-8", "surrogateescape")),
)  # fmt: skip


@FUZZ
@given(list_files)
def test_list_files_load_or_say_why(listing):
    data_loads_or_says_why(*gta5_folder(GOOD_IMAGE, GOOD_LABEL, listing))


# --- through the commands: exit 2, one line, no traceback, nothing written -------------------
def command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


@pytest.mark.commands
@pytest.mark.parametrize("kind", ["random bytes", "deep nesting", "non-finite lr"])
def test_hostile_files_through_the_commands(tmp_path, kind):
    if kind == "random bytes":
        content = bytes(range(256)) * 4
    elif kind == "deep nesting":
        content = ("train: " + "[" * 3000 + "]" * 3000 + "\n").encode()
    else:
        content = b"lr: .inf\nsource: random\ntarget: random\n"
    (tmp_path / "bad.yaml").write_bytes(content)
    for args in (["study.run", "bad.yaml", "--results", "results"],
                 ["adaptseg.train", "--config", "bad.yaml", "--out", "run"]):  # fmt: skip
        result = command(*args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and "bad.yaml" in line, line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], "something was written"


@pytest.mark.commands
@pytest.mark.parametrize("kind", ["corrupt", "runs code"])
def test_hostile_init_weights_through_the_train_command(tmp_path, kind):
    content = os.urandom(4096) if kind == "corrupt" else saved({"model": RunsCode()})
    (tmp_path / "init.pth").write_bytes(content)
    result = command(
        "adaptseg.train", "--set", "source=random", "--set", "target=random",
        "--set", "backbone=small", "--set", "init_weights=init.pth", "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [x for x in result.stderr.strip().splitlines() if not x.startswith("INFO")]
    expected = "not a readable PyTorch weights file" if kind == "corrupt" else "refused"
    assert line.startswith("error: ") and "init.pth" in line and expected in line, line
    assert not (tmp_path / "run").exists() and not SIDE_EFFECT.exists()
