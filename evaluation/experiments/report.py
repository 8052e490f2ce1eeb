"""Rendering of a reproduction: ``report.md``, ``claims.json`` and generated documentation blocks.

A results folder (``ntp-bench reproduce --out DIR``, published to ``docs/results/<profile>/``)
holds ``claims.json`` (the run and every claim's verdict, with each experiment's tables and
figures listed), ``report.md``, and per experiment ``<name>/<table>.csv`` (display strings)
and ``<name>/<figure>.png``.

Markdown files carry generated blocks between markers; everything between them is rewritten
by :func:`update_blocks` from the results folder::

    <!-- ntp-gym:begin claims cpu -->          the claims table of profile cpu
    <!-- ntp-gym:begin run cpu -->             one line: profile, jobs, wall time
    <!-- ntp-gym:begin experiment cpu/barrier -->   an experiment's tables and figures
    <!-- ntp-gym:begin table cpu/barrier/worst_case -->
    <!-- ntp-gym:begin figure cpu/barrier/worst_case -->
    ...
    <!-- ntp-gym:end claims cpu -->            (the end marker repeats the begin marker's words)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table as RichTable

from evaluation.experiments.claims import ClaimResult

__all__ = ["BLOCK_KINDS", "RunRecord", "claims_markdown", "find_blocks", "load_record",
           "markdown_table", "print_analysis", "print_claims", "render_block",
           "render_report", "save_record", "update_blocks", "write_atomic"]

BLOCK_KINDS = ("claims", "run", "experiment", "table", "figure")
_BEGIN = re.compile(r"<!-- ntp-gym:begin (?P<words>[^>]*?) -->")
CLAIMS_FILE = "claims.json"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class RunRecord:
    """What ``claims.json`` holds: the run, its experiments' outputs and the verdicts."""

    profile: str
    started: str
    seconds: float
    jobs: int
    failed: int
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: tuple[ClaimResult, ...] = ()
    ran: int | None = None  # jobs run by this invocation (the others resumed from the store)
    job_seconds: float | None = None  # fit + evaluation seconds summed over the jobs

    def as_dict(self) -> dict[str, Any]:
        """JSON-able values."""
        return {"profile": self.profile, "started": self.started, "seconds": self.seconds,
                "jobs": self.jobs, "failed": self.failed, "ran": self.ran,
                "job_seconds": self.job_seconds,
                "experiments": self.experiments, "claims": [c.as_dict() for c in self.claims]}


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def save_record(record: RunRecord, folder: Path) -> Path:
    """Write ``folder/claims.json``."""
    return write_atomic(folder / CLAIMS_FILE, json.dumps(record.as_dict(), indent=1) + "\n")


def load_record(folder: Path) -> RunRecord:
    """Read ``folder/claims.json`` (ValueError naming the file when it is missing or bad)."""
    path = folder / CLAIMS_FILE
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        claims = tuple(ClaimResult.from_dict(c) for c in values.pop("claims"))
        return RunRecord(**values, claims=claims)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a readable claims record ({err})") from None


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of ``frame``'s cells as they are."""
    lines = ["| " + " | ".join(_cell(c) for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def claims_markdown(claims: Sequence[ClaimResult]) -> str:
    """The claims table: claim, expected, measured, verdict (and why, when not run)."""
    rows = []
    for c in claims:
        verdict = f"**{c.verdict_text()}**"
        if c.verdict == "not run" and c.note:
            verdict += f" ({c.note})"
        rows.append({"claim": f"{c.claim}: {c.title}", "measured quantity": c.quantity,
                     "expected": c.expected, "measured": c.measured_text(), "verdict": verdict})
    return markdown_table(pd.DataFrame(rows, columns=["claim", "measured quantity", "expected",
                                                      "measured", "verdict"]))


def _run_line(record: RunRecord) -> str:
    resumed = "" if record.ran in (None, record.jobs) else \
        f"; {record.ran} run by this command, the others resumed from its store"
    summed = "" if record.job_seconds is None else \
        f"{record.job_seconds / 60:.1f} minutes of fit and evaluation summed over jobs, "
    return (f"Profile `{record.profile}`: {record.jobs} jobs ({record.failed} failed{resumed}), "
            f"{summed}{record.seconds / 60:.1f} minutes of wall time for the command, started "
            f"{record.started}.")


def _read_table(folder: Path, experiment: str, name: str) -> pd.DataFrame:
    path = folder / experiment / f"{name}.csv"
    if not path.is_file():
        raise ValueError(f"no table {path}")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _table_block(folder: Path, experiment: str, name: str, caption: str) -> str:
    return f"{caption}:\n\n{markdown_table(_read_table(folder, experiment, name))}"


def _figure_block(folder: Path, experiment: str, name: str, caption: str, base: Path) -> str:
    path = folder / experiment / f"{name}.png"
    if not path.is_file():
        raise ValueError(f"no figure {path}")
    return f"![{caption}]({Path(os.path.relpath(path, base)).as_posix()})"


def _listed(record: RunRecord, experiment: str, kind: str, name: str) -> str:
    for item in record.experiments.get(experiment, {}).get(kind, []):
        if item["name"] == name:
            return str(item["caption"])
    raise ValueError(f"claims.json lists no {kind[:-1]} {experiment}/{name}")


def _experiment_block(record: RunRecord, folder: Path, experiment: str, base: Path) -> str:
    info = record.experiments.get(experiment)
    if info is None:  # not run in this profile: the claims table says why
        return (f"No results for `{experiment}` in profile `{record.profile}` (see the claims "
                "table for why).")
    parts = [_table_block(folder, experiment, t["name"], t["caption"]) for t in info["tables"]]
    parts += [_figure_block(folder, experiment, f["name"], f["caption"], base)
              for f in info["figures"]]
    return "\n\n".join(parts) or f"(experiment {experiment} produced no table)"


def render_block(words: str, results: Path, base: Path) -> str:
    """The text of the block ``words`` (e.g. ``claims cpu``) from ``results/<profile>/``;
    figure links are relative to ``base`` (the folder of the file holding the block)."""
    kind, _, target = words.strip().partition(" ")
    parts = target.strip().split("/")
    if kind not in BLOCK_KINDS or not parts[0]:
        raise ValueError(f"unknown block {words!r}: kinds are {BLOCK_KINDS}, e.g. 'claims cpu'")
    folder = results / parts[0]
    record = load_record(folder)
    if kind == "claims" and len(parts) == 1:
        return claims_markdown(record.claims)
    if kind == "run" and len(parts) == 1:
        return _run_line(record)
    if kind == "experiment" and len(parts) == 2:
        return _experiment_block(record, folder, parts[1], base)
    if kind == "table" and len(parts) == 3:
        caption = _listed(record, parts[1], "tables", parts[2])
        return _table_block(folder, parts[1], parts[2], caption)
    if kind == "figure" and len(parts) == 3:
        caption = _listed(record, parts[1], "figures", parts[2])
        return _figure_block(folder, parts[1], parts[2], caption, base)
    raise ValueError(f"block {words!r}: expected 'claims P', 'run P', 'experiment P/E', "
                     "'table P/E/NAME' or 'figure P/E/NAME'")


def find_blocks(text: str) -> list[tuple[str, int, int]]:
    """``(words, start, end)`` of each block's body (between its markers); ValueError on a
    begin marker without its end marker."""
    blocks = []
    for match in _BEGIN.finditer(text):
        words = match.group("words").strip()
        end_marker = f"<!-- ntp-gym:end {words} -->"
        end = text.find(end_marker, match.end())
        if end < 0:
            raise ValueError(f"block {words!r} has no end marker {end_marker!r}")
        blocks.append((words, match.end(), end))
    return blocks


def update_blocks(text: str, results: Path, base: Path) -> str:
    """``text`` with every block's body re-rendered (:func:`render_block`)."""
    out, cursor = [], 0
    for words, start, end in find_blocks(text):
        out += [text[cursor:start], "\n", render_block(words, results, base), "\n"]
        cursor = end
    return "".join(out) + text[cursor:]


def render_report(record: RunRecord, folder: Path,
                  about: dict[str, tuple[str, str]] | None = None) -> str:
    """``report.md``: the run line and the claims table first, then each experiment's
    tables and figures (``about``: experiment -> (title, description))."""
    about = about or {}
    parts = ["# ntp-gym reproduction report", "", _run_line(record), "", "## Claims", "",
             claims_markdown(record.claims), ""]
    for c in record.claims:
        parts.append(f"* **{c.claim}** ({c.experiment}; source: {c.source}): {c.verdict_text()}"
                     + (f". {c.note}" if c.note else ""))
    for name in record.experiments:
        title, description = about.get(name, (name, ""))
        parts += ["", f"## {title} (`{name}`)", ""]
        if description:
            parts += [description, ""]
        parts.append(_experiment_block(record, folder, name, folder))
    return "\n".join(parts) + "\n"


def print_claims(console: Console, claims: Sequence[ClaimResult]) -> None:
    """The claims table on the console."""
    table = RichTable(title="Claims")
    for column in ("claim", "expected", "measured", "verdict"):
        table.add_column(column, overflow="fold")
    colours = {"holds": "green", "fails": "red", "not run": "yellow"}
    for c in claims:
        verdict = f"[{colours[c.verdict]}]{c.verdict_text()}[/]"
        if c.verdict != "holds" and c.note:
            verdict += f"\n{c.note}"
        table.add_row(f"{c.claim}: {c.title}", c.expected, c.measured_text(), verdict)
    console.print(table)


Analysis = Callable[[pd.DataFrame, Path], tuple[list[Any], list[Any]]]


def print_analysis(console: Console, analyse: Analysis, frame: pd.DataFrame, out: Path
                   ) -> tuple[list[Any], list[Any]]:
    """Run ``analyse`` on ``frame`` into ``out`` and print its tables; its tables and
    figures."""
    out.mkdir(parents=True, exist_ok=True)
    tables, figures = analyse(frame, out)
    for table in tables:
        rich = RichTable(title=table.caption)
        for column in table.frame.columns:
            rich.add_column(str(column), justify="right", overflow="fold")
        for row in table.frame.itertuples(index=False):
            rich.add_row(*map(str, row))
        console.print(rich)
    if figures:
        console.print(f"wrote {', '.join(str(out / f'{f.name}.png') for f in figures)}")
    return tables, figures
