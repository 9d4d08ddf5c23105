"""Benchmarks that share a document keep each other's numbers (docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

from worker.bench.report import write_document, write_section


def test_the_hostile_report_rewritten_keeps_the_soak_section_and_the_soak_rewrites_only_its_own(
    tmp_path: Path,
) -> None:
    doc = tmp_path / "reliability.md"
    write_document(doc, "# Reliability under hostile input\n\nfirst run")
    write_section(doc, "soak", "## Soak\n\nsoak run 1")
    # bench.hostile writes its whole report again: it used to write the file over, and the
    # soak's last run was gone from the docs.
    write_document(doc, "# Reliability under hostile input\n\nsecond run")
    write_section(doc, "soak", "## Soak\n\nsoak run 2")
    write_document(doc, "# Reliability under hostile input\n\nthird run")
    assert doc.read_text() == (
        "# Reliability under hostile input\n\nthird run\n\n"
        "<!-- begin:soak -->\n## Soak\n\nsoak run 2\n<!-- end:soak -->\n"
    )
