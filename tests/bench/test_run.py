"""`make bench` rewrites the scoring part of docs/performance.md and keeps the sections
after it (the sweep's, the test suite's)."""
from __future__ import annotations

from bench.run import write_doc


def test_the_scoring_tables_are_replaced_and_the_marked_sections_kept(tmp_path):
    doc = tmp_path / "performance.md"
    kept = ("<!-- test-suite -->\n## Test suite\n\nmeasured\n<!-- /test-suite -->\n\n"
            "<!-- sweep-bench -->\n## Sweep\n<!-- /sweep-bench -->\n")
    doc.write_text("# Scoring performance\n\nold table\n\n" + kept)
    write_doc("# Scoring performance\n\nnew table\n", doc)
    assert doc.read_text() == "# Scoring performance\n\nnew table\n\n" + kept
    fresh = tmp_path / "new.md"
    write_doc("# Scoring performance\n\nnew table\n", fresh)
    assert fresh.read_text() == "# Scoring performance\n\nnew table\n"
