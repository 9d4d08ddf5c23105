"""Dependencies point one way, read from the source.

- The runtime (everything under worker/ and jobs/ but the command line, the demo and the
  benchmarks: the engine, the queue, the shim, storage, the backfill, the console, the
  process harness) never imports training (models/), benchmark (worker/bench), test or
  front-end code; the benchmarks never import the tests (the tests import them).
- Inside the runtime: the engine reaches neither the queue, the shim, the backfill nor
  storage; storage and S3 reach neither the queue nor the engine. "Reach" follows every
  import, a package's __init__ included, since importing a.b.c runs a/__init__.py first.
- No module imports itself back while it loads (no cycle), anywhere in the project.
- Redis key names are spelled in worker/queue/names.py alone.
- S3 is asked in worker/s3.py alone: no other runtime module imports boto3 or botocore or
  calls an S3 operation of the client, so what a request is, how it is retried and what its
  failures mean are read in one place.

Read from the source: every import statement, at module level or inside a function, so an
import that only runs on one code path is caught too; only the cycle check keeps to the
imports that run while a module loads, since a deferred import is how two modules that
call each other load without one finding the other half-built.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FRONT_ENDS = ("worker/cli.py", "worker/demo.py")
BENCHMARKS = "worker/bench"
# The runtime may not reach up into these: training and benchmarks, the tests, and the
# front ends.
FORBIDDEN_FOR_RUNTIME = ("models", "worker.bench", "tests", "worker.cli", "worker.demo")
# Each runtime package, and what it must never load (directly or through another module).
DIRECTION = {
    "worker.engine": (
        "worker.queue",
        "worker.http",
        "worker.backfill",
        "worker.storage",
        "worker.s3",
        "jobs",
    ),
    "worker.storage": ("worker.queue", "worker.engine", "worker.http", "worker.backfill"),
    "worker.s3": ("worker.queue", "worker.engine", "worker.http", "worker.backfill"),
}
# The floors everything else stands on: the standard library only, nothing run at import
# (the supervisor reads its children with worker.procfs before its metrics are set up).
STDLIB_ONLY = ("worker/procfs.py", "worker/backoff.py")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files(*places: str) -> Iterator[Path]:
    for place in places:
        path = ROOT / place
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def runtime_files() -> list[Path]:
    excluded = {ROOT / f for f in FRONT_ENDS}
    return [
        p
        for p in python_files("worker", "jobs")
        if p not in excluded and not p.is_relative_to(ROOT / BENCHMARKS)
    ]


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - node.level + 1] if node.level else []
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(path: Path) -> set[str]:
    """Every module `path` imports, absolute, wherever the statement is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, node)
            found.add(module)
            # `from worker import demo` imports the module worker.demo.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for p in python_files("worker", "jobs", "models")}


def loaded_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project's modules importing it loads: each one named, and the
    packages above it, whose __init__ runs first."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        loads: set[str] = set()
        for imported in imports(path):
            parts = imported.split(".")
            loads.update(
                prefix
                for prefix in (".".join(parts[:k]) for k in range(1, len(parts) + 1))
                if prefix in modules and prefix != name
            )
        graph[name] = loads
    return graph


def reachable(graph: dict[str, set[str]], *starts: str) -> set[str]:
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _at_load(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run while a module loads: at module level, in class
    bodies and in module-level if/try/with blocks; not in functions, and not under
    `if TYPE_CHECKING:`, which never runs."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            test = node.test
            guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
            )
            if not guarded:
                yield from _at_load(node.body)
            yield from _at_load(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _at_load(block)
            for handler in node.handlers:
                yield from _at_load(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _at_load(node.body)


def load_time_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project's modules it imports while it loads. `from package import
    submodule` depends on the submodule alone: Python loads the package's __init__ for any
    submodule, and that implicit step is no edge of ours."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in _at_load(ast.parse(path.read_text(), filename=str(path)).body):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
                continue
            module = _absolute(path, node)
            for alias in node.names:
                if f"{module}.{alias.name}" in modules:
                    edges.add(f"{module}.{alias.name}")
                elif module in modules:
                    edges.add(module)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of a module that
    imports itself (Tarjan's algorithm, iterative: the graph has hundreds of modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        found.append(sorted(component))
    return found


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --------------------------------------------------------------------------- the runtime


def test_the_runtime_holds_the_backfill_the_console_and_the_process_harness() -> None:
    runtime = {_rel(p) for p in runtime_files()}
    for path in (
        "worker/backfill/runner.py",
        "worker/console.py",
        "worker/harness.py",
        "worker/procfs.py",
        "worker/engine/engine.py",
        "worker/queue/supervisor.py",
        "worker/http/app.py",
        "worker/storage.py",
        "jobs/__init__.py",
    ):
        assert path in runtime
    assert not runtime & {*FRONT_ENDS, f"{BENCHMARKS}/soak.py"}


@pytest.mark.parametrize("path", runtime_files(), ids=_rel)
def test_the_runtime_never_imports_training_benchmark_test_or_front_end_code(path: Path) -> None:
    bad = sorted(
        name
        for name in imports(path)
        if any(within(name, forbidden) for forbidden in FORBIDDEN_FOR_RUNTIME)
    )
    assert not bad, f"{_rel(path)} imports {bad}"


@pytest.mark.parametrize("path", list(python_files(BENCHMARKS)), ids=_rel)
def test_the_benchmarks_never_import_the_tests(path: Path) -> None:
    bad = sorted(name for name in imports(path) if within(name, "tests"))
    assert not bad, f"{_rel(path)} imports {bad}: the tests import the benchmarks, not back"


@pytest.mark.parametrize("package", sorted(DIRECTION))
def test_inside_the_runtime_dependencies_point_down(package: str) -> None:
    modules = project_modules()
    graph = loaded_graph(modules)
    own = [name for name in modules if within(name, package)]
    assert own, f"no module {package}"
    loaded = reachable(graph, *own)
    bad = sorted(
        name for name in loaded if any(within(name, forbidden) for forbidden in DIRECTION[package])
    )
    assert not bad, f"{package} loads {bad}"


@pytest.mark.parametrize("path", STDLIB_ONLY)
def test_the_floors_import_only_the_standard_library(path: str) -> None:
    tops = {name.split(".")[0] for name in imports(ROOT / path)}
    assert tops <= set(sys.stdlib_module_names) | {"__future__"}, f"{path} imports {tops}"


def test_the_supervisor_and_the_harness_read_children_from_one_reader() -> None:
    # The pool's subreaper pass and every benchmark's process tree read /proc the same
    # way: every thread's children (a child is listed under the thread that started it).
    for path in ("worker/queue/supervisor.py", "worker/harness.py"):
        tree = ast.parse((ROOT / path).read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert "children" not in defined, f"{path} reads /proc children itself"
        assert "worker.procfs" in imports(ROOT / path) or "worker.procfs.children" in imports(
            ROOT / path
        )


# --------------------------------------------------------------------------- the whole


def test_no_module_imports_itself_back_while_it_loads() -> None:
    found = cycles(load_time_graph(project_modules()))
    assert not found, f"import cycles: {found}"


def test_the_cycle_check_finds_a_cycle_through_several_modules() -> None:
    # The check itself, on a graph with one three-module cycle and one module importing
    # itself, beside modules that only point down.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e"]]


def test_training_imports_the_network_from_the_engine_which_defines_it_once() -> None:
    assert (ROOT / "worker/engine/detector/net.py").is_file()
    assert (ROOT / "worker/engine/detector/configs.py").is_file()
    assert not (ROOT / "models/detector/net.py").exists()
    assert not (ROOT / "models/detector/configs.py").exists()
    training = set().union(*(imports(p) for p in python_files("models/detector")))
    assert "worker.engine.detector.net" in training
    assert "worker.engine.detector.geometry" in training


def test_the_command_line_and_the_demo_do_not_import_each_other_in_a_circle() -> None:
    graph = loaded_graph(project_modules())
    assert "worker.demo" in reachable(graph, "worker.cli")  # `qrw demo` runs it
    assert "worker.cli" not in reachable(graph, "worker.demo")


# --------------------------------------------------------------------------- Redis keys

# "rq:queue:", "qrw:reply:..." and the like; not the program's own "qrw: error: ..." prefix.
KEY_LITERAL = re.compile(r"(rq|qrw):\S")
KEY_NAMES = "worker/queue/names.py"


@pytest.mark.parametrize(
    "path",
    [p for p in python_files("worker", "jobs", "models") if _rel(p) != KEY_NAMES],
    ids=_rel,
)
def test_every_module_takes_redis_key_names_from_the_names_module(path: Path) -> None:
    tree = ast.parse(path.read_text())
    literals = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and KEY_LITERAL.match(node.value)
    ]
    assert not literals, f"{_rel(path)} spells Redis keys itself: {literals}"


# --------------------------------------------------------------------------- S3

S3_MODULE = "worker/s3.py"
# The client's operations the project uses, and the client itself: `s3.client()`.
S3_OPERATIONS = {
    "get_object",
    "head_object",
    "put_object",
    "delete_object",
    "list_objects_v2",
    "create_multipart_upload",
    "upload_part",
    "complete_multipart_upload",
    "abort_multipart_upload",
    "client",
}


@pytest.mark.parametrize("path", [p for p in runtime_files() if _rel(p) != S3_MODULE], ids=_rel)
def test_only_the_s3_module_asks_s3(path: Path) -> None:
    tree = ast.parse(path.read_text())
    libraries = sorted(
        name for name in imports(path) if name.split(".")[0] in {"boto3", "botocore"}
    )
    calls = sorted(
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in S3_OPERATIONS
    )
    assert not libraries and not calls, (
        f"{_rel(path)} reaches S3 itself: imports {libraries}, calls {calls}; "
        f"ask {S3_MODULE} instead"
    )
