"""The package's shape: modules small enough to read, and imports that flow one way.

Both are read from the source with ``ast``, counting imports inside functions too: a
function-local import still makes one module depend on another, it only hides the cycle until
the function runs.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "seqpeft"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """seqpeft module -> the seqpeft modules it imports anywhere in its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)  # from pkg import module
        graph[name] = {target for target in targets if target in modules and target != name}
        graph[name].discard("seqpeft")  # the package itself (its __init__ imports nothing of ours)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_function_local_imports():
    graph = import_graph()
    # artifacts.load_trained imports torch inside the function, but its seqpeft imports count wherever they are
    assert "seqpeft.config.settings" in graph["seqpeft.training.loop"]
    assert graph["seqpeft.util.errors"] == set()


def test_no_import_cycle_among_seqpeft_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_is_longer_than_the_limit():
    lengths = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    too_long = {name: count for name, count in lengths.items() if count > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them by job): {too_long}"


LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
TOP_LEVEL_MODULE_LIMIT = 8


def _lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(PACKAGE.parents[1] / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_hold():
    """pyproject.toml's import-linter contracts: folders are layers, kinds never import each other."""
    result = _lint_imports(PACKAGE.parent, PACKAGE.parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    contracts = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert {layer.split(".")[1] for layer in layers} - {"cli"} == folders, "every folder is a layer of the contract"
    kinds = next(c for c in contracts if c["type"] == "independence")["modules"]
    registered = {name for name in _modules() if name.count(".") == 2 and name.startswith("seqpeft.tasks.")
                  and "register_task_kind(" in _modules()[name].read_text()}
    registered |= {f"seqpeft.tasks.{p.name}" for p in (PACKAGE / "tasks").iterdir() if p.is_dir() and (p / "kind.py").is_file()}
    assert registered == set(kinds), "every task kind is in the independence contract"


def test_the_layer_contract_catches_an_upward_import(tmp_path):
    """The same contracts on a copy of the package in which the bottom layer imports the loop."""
    copy = tmp_path / "src" / "seqpeft"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    errors = copy / "util" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _planted():\n    from seqpeft.training import loop  # noqa\n")
    result = _lint_imports(tmp_path / "src", tmp_path)
    assert result.returncode != 0
    assert "seqpeft.util.errors -> seqpeft.training.loop" in result.stdout


def test_few_modules_beside_the_folders():
    modules = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= TOP_LEVEL_MODULE_LIMIT, modules
