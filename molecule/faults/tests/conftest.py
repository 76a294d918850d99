"""The faults table: every row of test_faults.py adds one, printed at the end of the run."""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Row:
    fault: str
    saw: str = "(the test stopped before this row's fault was seen)"
    recovered: str = "no"
    lost: str = "unknown"


class Table:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def row(self, fault: str) -> Row:
        self.rows.append(Row(fault))
        return self.rows[-1]


TABLE = Table()


@pytest.fixture
def table() -> Table:
    return TABLE


def pytest_terminal_summary(terminalreporter) -> None:
    if not TABLE.rows:
        return
    lines: list[str] = []
    write = lines.append
    header = ("fault", "what the user saw", "recovered", "data lost")
    widths = (30, 72, 9, 28)
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    write(line)
    write("-" * len(line))
    for row in TABLE.rows:
        cells = (row.fault, row.saw, row.recovered, row.lost)
        columns = [textwrap.wrap(" ".join(str(c).split()), w) or [""] for c, w in zip(cells, widths, strict=True)]
        for i in range(max(len(c) for c in columns)):
            parts = ((c[i] if i < len(c) else "").ljust(w) for c, w in zip(columns, widths, strict=True))
            write(" | ".join(parts).rstrip())
        write("-" * len(line))
    terminalreporter.section("faults: what the user saw, and the recovery")
    for text in lines:
        terminalreporter.write_line(text)
    # Molecule re-wraps the verifier's output; testbed.py prints this copy as it is.
    out = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / ".cache" / "molecule" / "faults-table.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
