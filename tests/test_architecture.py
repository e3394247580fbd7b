"""The import graph, read from the code: who may import whom (ARCHITECTURE.md, "Contracts").

* the worker (``trainer/``) imports nothing of the harness (``bench/``);
* the run-directory contract (``rundir``) is a leaf: standard library only;
* backends (``bench/backends/``) import nothing of the trial runner, the fault injector or the
  report: they only see their config, the trial spec and the shared collectors;
* no module imports a private name (``_x``) of another module of the project.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "trainer", "rundir", "hydra_plugins", "benchmarks")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) of every import statement, relative ones
    resolved against ``name``."""
    out = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            out.append((module, [alias.name for alias in node.names]))
    return out


GRAPH = {name: imports(path, name) for name, path in modules().items()}


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_graph_was_read():  # the rules below are vacuous if nothing was parsed
    assert {"bench.trial", "trainer.train", "rundir", "bench.backends.k8s.handle"} <= set(GRAPH)
    assert any(under(m, "rundir") for m, _ in GRAPH["trainer.train"])


def test_the_trainer_imports_nothing_of_the_harness():
    bad = [(name, m) for name, deps in GRAPH.items() if under(name, "trainer")
           for m, _ in deps if under(m, "bench")]
    assert bad == []


def test_the_run_directory_contract_is_a_leaf():
    stdlib = sys.stdlib_module_names | {"__future__"}
    bad = [m for m, _ in GRAPH["rundir"] if m.split(".")[0] not in stdlib]
    assert bad == []


@pytest.mark.parametrize("forbidden", ["bench.trial", "bench.faults", "bench.report",
                                       "bench.sweep", "bench.preflight"])
def test_backends_do_not_import_the_runner_the_faults_or_the_report(forbidden):
    bad = [(name, m) for name, deps in GRAPH.items() if under(name, "bench.backends")
           for m, _ in deps if under(m, forbidden)]
    assert bad == []


def test_no_module_imports_a_private_name_of_another():
    ours = {m for m in GRAPH}
    bad = [(name, m, taken) for name, deps in GRAPH.items() for m, names in deps
           if m in ours and m != name
           for taken in names if taken.startswith("_") and not taken.startswith("__")]
    assert bad == []
