"""Where benchmarks write their tables (shown by docs/benchmarks.md), and how."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def write_table(name: str, rows: list[str]) -> str:
    """Write ``rows`` as ``bench/results/<name>.md``, print them, return the text."""
    table = "\n".join(rows) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(table)
    print("\n" + table, flush=True)
    return table
