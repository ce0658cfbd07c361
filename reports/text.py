"""How the report and the terminal write numbers, intervals and verdicts (one wording for both)."""

from __future__ import annotations

import html
import math
from typing import Any

from reports.stats import Interval


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def optional(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 1:
        return "under a minute"
    return f"about {minutes:.0f} min" if minutes < 90 else f"about {minutes / 60:.1f} h"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def columns(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def interval_text(interval: Interval, signed: bool = False) -> str:
    if interval.n == 0:
        return "-"
    sign = "+" if signed else ""
    if interval.n < 2 or math.isnan(interval.low):
        return f"{interval.mean:{sign}.4f} (1 seed: no interval)"
    mark = "\u2020" if interval.clipped else ""
    return f"{interval.mean:{sign}.4f} [{interval.low:{sign}.4f}, {interval.high:{sign}.4f}]{mark}"


def short_verdict(diff: Interval, html_text: bool = True) -> str:
    """The table's verdict cell: words only where the interval excludes 0."""
    if diff.n < 2:
        return "no interval (1 seed)"
    if not diff.excludes_zero:
        return "cannot tell apart"
    word = "better" if diff.mean > 0 else "worse"
    return f"<b>{word}</b>" if html_text else word


def verdict_sentence(arm: str, base: str, diff: Interval) -> str:
    """One sentence for a comparison whose interval excludes 0."""
    word = "beats" if diff.mean > 0 else "is worse than"
    return (
        f"<b>{esc(arm)} {word} {esc(base)}</b> by {abs(diff.mean):.4f} mIoU "
        f"(95% interval [{diff.low:+.4f}, {diff.high:+.4f}], {count(diff.n, 'paired seed')})."
    )
