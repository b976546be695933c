"""How the report writes numbers and tables: cells as text (`85.00 ± 7.07`, `missing`), Markdown tables,
and CSVs whose number columns hold numbers."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

from ..files.atomic import atomic_writer

MISSING = "missing"  # a run that is not there, never shown as a zero


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def fmt_score(value: tuple[float, ...] | list[float] | None, digits: int = 2) -> str:
    """`60.00 / 50.00` for (F1-micro, F1-macro), `missing` for none."""
    if value is None or (isinstance(value, list | tuple) and not value):
        return MISSING
    return " / ".join(f"{v:.{digits}f}" for v in value)


def fmt_number(value: float | None, digits: int = 2, sign: bool = False) -> str:
    return "-" if value is None else f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def fmt_with_sd(mean: float | None, sd: float | None, sign: bool = False) -> str:
    """`85.00 ± 7.07` (mean ± standard deviation over seeds), `85.00` for one seed, `-` for none."""
    return fmt_number(mean, sign=sign) + ("" if sd is None or mean is None else f" ± {sd:.2f}")


def markdown(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "_no rows_\n"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, MISSING) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table_csv(path: Path, rows: list[dict[str, str]]) -> None:
    """The table as a CSV of numbers: a formatted cell becomes its number (empty where the Markdown says
    `missing` or `-`), a pair `micro / macro` becomes two columns, and `± sd` its own column."""
    numeric = [numeric_row(row) for row in rows]
    present = {key for row in numeric for key in row}
    order = [c for column in dict.fromkeys(k for row in rows for k in row) for c in (column, f"{column} F1-macro", f"{column} sd") if c in present]
    write_numeric_csv(path, [{c: row.get(c) for c in order} for row in numeric])


NUMBER = re.compile(r"^[+-]?\d[\d,]*(\.\d+)?$")


def _number(text: str) -> int | float:
    text = text.replace(",", "")
    return float(text) if "." in text else int(text)


def numeric_row(row: dict[str, str]) -> dict[str, Any]:
    """{"demo-mmimdb (ours)": "60.00 / 50.00", "x": "+1.00 ± 1.41", "n": "12,208"} ->
    {"demo-mmimdb (ours)": 60.0, "demo-mmimdb (ours) F1-macro": 50.0, "x": 1.0, "x sd": 1.41, "n": 12208}."""
    out: dict[str, Any] = {}
    for column, text in row.items():
        value, _, spread = text.partition(" ± ")
        parts = [p.strip() for p in value.split(" / ")]
        if text in (MISSING, "-", ""):
            out[column] = None
        elif all(NUMBER.match(p) for p in parts) and (not spread or NUMBER.match(spread)):
            out[column] = _number(parts[0])
            if len(parts) == 2:
                out[f"{column} F1-macro"] = _number(parts[1])
            if spread:
                out[f"{column} sd"] = float(spread)
        else:
            out[column] = text
    return out


def write_numeric_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """A CSV whose number columns hold numbers (empty where there is none)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = pa.table({c: _column([row.get(c) for row in rows]) for c in columns}) if rows else pa.table({"dataset": pa.array([], pa.string())})
    with atomic_writer(path, "wb") as f:
        pacsv.write_csv(table, f)


def _column(values: list[Any]):
    """A pyarrow column of numbers where every value is one (or None), else of text."""
    import pyarrow as pa

    if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return pa.array(values, pa.float64() if any(isinstance(v, float) for v in values) else pa.int64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())
