"""Dependencies point one way: the runtime (engine, queue, shim, storage, settings, jobs)
never imports training (models/) or benchmark (worker/bench) code, training imports the
engine's network and geometry, and the command line and the demo do not import each other
in a circle. Read from the source (every import statement, at module level or inside a
function), so an import that only runs on one code path is caught too."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RUNTIME = [
    "worker/engine",
    "worker/queue",
    "worker/http",
    "worker/schemes",
    "worker/storage.py",
    "worker/settings.py",
    "worker/rules.py",
    "worker/logs.py",
    "worker/metrics.py",
    "worker/metrics_env.py",
    "jobs",
]
# The runtime may not reach up into these: training and benchmarks, and the front ends.
FORBIDDEN_FOR_RUNTIME = ("models", "worker.bench", "worker.cli", "worker.demo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files(*places: str) -> Iterator[Path]:
    for place in places:
        path = ROOT / place
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imports(path: Path) -> set[str]:
    """Every module `path` imports, absolute, wherever the statement is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            # `from worker import demo` imports the module worker.demo.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize(
    "path", list(python_files(*RUNTIME)), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_runtime_never_imports_training_benchmark_or_front_end_code(path: Path) -> None:
    bad = sorted(
        name
        for name in imports(path)
        if any(within(name, forbidden) for forbidden in FORBIDDEN_FOR_RUNTIME)
    )
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_training_imports_the_network_from_the_engine_which_defines_it_once() -> None:
    assert (ROOT / "worker/engine/detector/net.py").is_file()
    assert (ROOT / "worker/engine/detector/configs.py").is_file()
    assert not (ROOT / "models/detector/net.py").exists()
    assert not (ROOT / "models/detector/configs.py").exists()
    training = set().union(*(imports(p) for p in python_files("models/detector")))
    assert "worker.engine.detector.net" in training
    assert "worker.engine.detector.geometry" in training


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in python_files("worker", "jobs")}
    return {name: {m for m in imports(path) if m in modules} for name, path in modules.items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_the_command_line_and_the_demo_do_not_import_each_other_in_a_circle() -> None:
    graph = import_graph()
    assert "worker.demo" in reachable(graph, "worker.cli")  # `qrw demo` runs it
    assert "worker.cli" not in reachable(graph, "worker.demo")


# "rq:queue:", "qrw:reply:..." and the like; not the program's own "qrw: error: ..." prefix.
KEY_LITERAL = re.compile(r"(rq|qrw):\S")


@pytest.mark.parametrize("path", ["worker/cli.py", "worker/demo.py", "worker/console.py"])
def test_front_ends_take_redis_key_names_from_the_names_module(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    literals = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and KEY_LITERAL.match(node.value)
    ]
    assert not literals, f"{path} spells Redis keys itself: {literals}"
