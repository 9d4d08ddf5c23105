"""The README's "Layout" section is a map that stays true (issue 20 point 8).

It holds two tables. The first has one row per module or package at the top of `worker/`
and per other folder: its first column is a path from the repository's root, and a path
its second column names is inside that folder. The second ("where is ...") answers where a
thing lives: each row's paths are from the root, and every Python name it shows in
backquotes is defined at the top of one of the row's Python files. So a file moved, a
class renamed or a module added without its row fails here, not in a reader's search.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a path in the tables may end in, besides a folder's `/`; any other backquoted text
# (`qrw`, `jobs.scan`, `QRW_WORKERS`, a command, a route) is not a path.
PATH_SUFFIXES = (".py", ".md", ".lua", ".json", ".yml", ".yaml", ".toml")
ROOT_FILES = {"Procfile", "Makefile", "Dockerfile"}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Row:
    cells: list[str]

    def quoted(self, column: int) -> list[str]:
        return re.findall(r"`([^`]+)`", self.cells[column])


def layout_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Layout\n(.*?)^## ", text, re.DOTALL | re.MULTILINE)
    assert match, "README.md has no '## Layout' section followed by another section"
    return match.group(1)


def tables(section: str) -> list[list[Row]]:
    """The section's Markdown tables, each without its header and rule lines."""
    found: list[list[Row]] = []
    current: list[str] = []
    for line in [*section.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
            continue
        if current:
            body = [
                Row([cell.strip() for cell in row.strip().strip("|").split("|")])
                for row in current[2:]
            ]
            found.append(body)
            current = []
    return found


def is_path(token: str) -> bool:
    if " " in token or token.startswith("/"):  # a command, or a URL path (`/readyz`)
        return False
    return (
        token.endswith("/")
        or "/" in token
        or token.endswith(PATH_SUFFIXES)
        or Path(token).name in ROOT_FILES
    )


def layout_rows() -> list[Row]:
    found = tables(layout_section())
    assert len(found) == 2, f"expected the layout table and the 'where is' table, not {len(found)}"
    return found[0]


def where_rows() -> list[Row]:
    return tables(layout_section())[1]


def layout_paths() -> list[tuple[str, Path]]:
    """(as written, resolved) for every path the layout table names."""
    named: list[tuple[str, Path]] = []
    for row in layout_rows():
        firsts = [token for token in row.quoted(0) if is_path(token)]
        assert firsts, f"a layout row names no path first: {row.cells[0]}"
        named += [(token, ROOT / token) for token in firsts]
        folder = ROOT / firsts[0] if len(firsts) == 1 and firsts[0].endswith("/") else ROOT
        named += [(token, folder / token) for token in row.quoted(1) if is_path(token)]
    return named


def where_paths() -> list[tuple[str, Path]]:
    return [
        (token, ROOT / token) for row in where_rows() for token in row.quoted(1) if is_path(token)
    ]


def top_level_names(path: Path) -> set[str]:
    """Classes, functions and assigned names at the top of a Python file."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _id(value: str | Path) -> str:
    return value if isinstance(value, str) else str(value.relative_to(ROOT))


@pytest.mark.parametrize(("written", "path"), layout_paths() + where_paths(), ids=_id)
def test_every_path_the_layout_names_exists(written: str, path: Path) -> None:
    assert path.exists(), f"README Layout names `{written}`: {path.relative_to(ROOT)} is missing"
    if written.endswith("/"):
        assert path.is_dir(), f"`{written}` is named as a folder: {path} is not one"


@pytest.mark.parametrize("row", where_rows(), ids=lambda row: row.cells[0])
def test_every_name_a_where_is_row_shows_is_defined_in_its_files(row: Row) -> None:
    files = [ROOT / token for token in row.quoted(1) if token.endswith(".py")]
    defined = set().union(*(top_level_names(path) for path in files if path.exists()))
    shown = [token for token in row.quoted(1) if IDENTIFIER.fullmatch(token)]
    missing = [name for name in shown if name not in defined]
    assert not missing, (
        f"README 'where is {row.cells[0]}' names {missing}, defined in none of "
        f"{[str(p.relative_to(ROOT)) for p in files]}"
    )


def worker_entries() -> list[str]:
    """Every module and package at the top of `worker/`, as a layout row would name it."""
    entries = [
        f"worker/{path.name}" for path in (ROOT / "worker").glob("*.py") if path.stem != "__init__"
    ]
    entries += [
        f"worker/{path.name}/"
        for path in (ROOT / "worker").iterdir()
        if path.is_dir() and (path / "__init__.py").exists()
    ]
    return sorted(entries)


def test_every_module_and_package_of_worker_has_a_layout_row() -> None:
    rows = {token for row in layout_rows() for token in row.quoted(0)}
    missing = [entry for entry in worker_entries() if entry not in rows]
    assert not missing, f"README Layout has no row for {missing}"


def test_the_checks_read_the_tables_they_are_meant_to() -> None:
    """The parsing above, on what it must find: a guard against a table that silently
    stops being read (a renamed heading, a broken rule line)."""
    firsts = {token for row in layout_rows() for token in row.quoted(0)}
    assert {"worker/backfill/", "worker/rules.py", "examples/", "worker/errors.py"} <= firsts
    where = {row.cells[0] for row in where_rows()}
    for thing in (
        "the RQ job class",
        "how a result is written",
        "the error codes",
        "S3",
        "the benchmark harness",
    ):
        assert thing in where
    assert ("app.py", ROOT / "worker/http/app.py") in layout_paths()
    assert not is_path("jobs.scan") and not is_path("python -m worker.bench.speed")
