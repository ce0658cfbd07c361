"""Checks over the source: safe loaders only, and the harness never turns Ray's auth off."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
SOURCES = [
    p for package in ("adaptseg", "study", "reports") for p in (ROOT / package).rglob("*.py")
]


def calls(name: str):
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                yield path, node


def test_every_torch_load_is_weights_only():
    found = list(calls("torch.load"))
    assert found, "expected torch.load calls to check"
    for path, node in found:
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        assert keywords.get("weights_only") == "True", f"{path}:{node.lineno}"


def test_yaml_is_only_read_with_the_safe_loader():
    assert not list(calls("yaml.load")), "use yaml.safe_load"
    assert not list(calls("yaml.unsafe_load"))
    assert list(calls("yaml.safe_load"))


def test_the_harness_never_disables_ray_token_authentication():
    for path in SOURCES:
        assert "RAY_AUTH_MODE" not in path.read_text(), path


def test_layers_adaptseg_imports_no_ray_and_reports_no_torch():
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        modules = {
            a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for a in n.names
        }
        modules |= {
            n.module.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module
        }
        package = path.relative_to(ROOT).parts[0]
        if package == "adaptseg":
            assert not modules & {"ray", "optuna", "plotly"}, path
        if package == "reports":
            # reports reads tables only: the direction is study -> reports, never back
            assert not modules & {"ray", "torch", "study"}, path


def test_the_report_loads_without_study_torch_or_ray():
    import subprocess
    import sys

    check = (
        "import sys, reports.report, reports.build; "
        "found = {'study', 'torch', 'ray'} & {m.split('.')[0] for m in sys.modules}; "
        "print(sorted(found)); sys.exit(1 if found else 0)"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_of_the_project_imports_itself_back():
    """No import cycle (an import inside a function counts too)."""
    modules: dict[str, set[str]] = {}
    for path in SOURCES:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        modules[name] = found
    graph = {m: {d for d in deps if d in modules and d != m} for m, deps in modules.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in graph[module]:
            assert state.get(other) != 1, f"import cycle: {' -> '.join([*path, module, other])}"
            if other not in state:
                visit(other, [*path, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


# What only study/ray_internals may name: Ray Tune's and Optuna's private attributes, the layout
# of Ray's records on disk, and the wording of Ray's logs.
RAY_INTERNALS = (
    "experiment_state", "search_gen_state", "searcher-state", "basic-variant-state", "result.json",
    "trial_data", "runner_data", "checkpoint_manager", "CLOUDPICKLE", "_latest_checkpoint_result",
    "_checkpoint_results", "_cached_trial_decisions", "_queued_trial_decisions", "_local_tuner",
    "_node_ip_address", "_ot_study", "_ot_trials", "_completed_trials", "_trial_id",
    "_cached_frozen_trial", "_Bracket", "_rungs", "Trial task failed", "Tuner.restore(path=",
)  # fmt: skip


def test_only_the_internals_package_names_rays_internals():
    door = ROOT / "study" / "ray_internals"
    for path in SOURCES:
        if door in path.parents:
            continue
        text = path.read_text()
        for name in RAY_INTERNALS:
            found = re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}", text)
            assert not found, f"{path.relative_to(ROOT)} names {name!r}"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module.split(".")[0] in ("ray", "optuna"):
                    assert "._" not in f".{module}", f"{path.relative_to(ROOT)} imports {module}"


def test_the_internals_package_is_where_the_libraries_private_names_are():
    text = "".join(p.read_text() for p in (ROOT / "study" / "ray_internals").glob("*.py"))
    assert sum(name in text for name in RAY_INTERNALS) == len(RAY_INTERNALS)


def test_the_study_packages_depend_one_way_along_the_route():
    """spec <- records, tables <- stages: the spec knows nothing of running it, and the records
    and tables never reach back into the stages that produce them."""
    allowed = {
        "spec": {"spec", "errors"},
        "records": {"spec", "records", "errors", "ray_internals"},
        "tables": {"spec", "records", "tables", "errors", "ray_internals"},
        "ray_internals": {"ray_internals", "records"},
    }
    for path in (ROOT / "study").rglob("*.py"):
        parts = path.relative_to(ROOT / "study").parts
        if len(parts) < 2 or parts[0] not in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module.startswith("study."):
                    package = module.split(".")[1]
                    assert package in allowed[parts[0]], (
                        f"{path.relative_to(ROOT)} imports {module}"
                    )
