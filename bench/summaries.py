"""Statistics over seeds (mean, std, min, max) and their formatting as numbers, percentages and tables
(markdown for docs/results.md, plain text for a terminal)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.references import METRICS


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for a single run) and the values."""
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "runs": values,
    }


def summarize_metrics(records: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> dict:
    """``{metric: summarize(test metric over the runs)}``."""
    return {metric: summarize([r["test"][metric] for r in records]) for metric in metrics}


def format_stat(stat: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``0.1234 ± 0.0012`` (or ``0.1234`` for one run, ``-`` for nothing)."""
    if not stat or stat.get("mean") is None:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.{digits}f}"
    return text


def format_number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def format_percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned table for the terminal."""
    rows = [list(map(str, row)) for row in rows]
    widths = [max([len(str(h)), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)
