"""Report rendering, generated documentation blocks, ``ntp-bench reproduce`` end to end on a
tiny registry, and its bad input; the README's and docs' blocks match ``docs/results/``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from evaluation.bench.sweep import SweepConfig
from evaluation.cli import main as cli_main
from evaluation.cli.reproduce import doc_files, exit_status, publish, reproduce
from evaluation.experiments.base import Experiment
from evaluation.experiments.claims import Claim, ClaimResult, Measured, select_rows
from evaluation.experiments.quick import mixture_ntp_c_apx
from evaluation.experiments.report import (
    RunRecord,
    find_blocks,
    load_record,
    markdown_table,
    render_block,
    save_record,
    update_blocks,
)

ROOT = Path(__file__).resolve().parents[1]
MIX = "ntp_envs/MixtureProduct-v0"


def result(claim: str, verdict: str, note: str = "") -> ClaimResult:
    return ClaimResult(claim, "exp", f"title {claim}", "a paper", "a quantity", "x >= 1",
                       verdict, (Measured("x", 1.25, 0.01),), note)


def results_folder(tmp_path: Path) -> Path:
    """``tmp/results/cpu`` with a record, one table and one figure of experiment ``exp``."""
    folder = tmp_path / "results" / "cpu"
    (folder / "exp").mkdir(parents=True)
    pd.DataFrame({"agent": ["logloss", "rho"], "C_apx": ["7.05", "1 | 2"]}).to_csv(
        folder / "exp" / "tab.csv", index=False)
    (folder / "exp" / "fig.png").write_bytes(b"\x89PNG fake")
    record = RunRecord("cpu", "2026-01-01 00:00 UTC", 90.0, 12, 0, {
        "exp": {"title": "E", "jobs": 12, "failed": 0,
                "tables": [{"name": "tab", "caption": "The table"}],
                "figures": [{"name": "fig", "caption": "The figure"}]}},
        (result("R1", "holds"), result("R2", "not run", "not in profile cpu")))
    save_record(record, folder)
    return folder


def test_markdown_table_escapes_pipes() -> None:
    text = markdown_table(pd.DataFrame({"a": ["x|y"], "b": ["1"]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


def test_record_round_trips(tmp_path) -> None:
    folder = results_folder(tmp_path)
    record = load_record(folder)
    assert record.claims[1].note == "not in profile cpu" and record.seconds == 90.0
    (folder / "claims.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="not a readable claims record"):
        load_record(folder)


def test_blocks_render_and_are_idempotent(tmp_path) -> None:
    results_folder(tmp_path)
    doc = tmp_path / "docs"
    doc.mkdir()
    text = ("# Title\n\n<!-- ntp-gym:begin claims cpu -->\nstale\n<!-- ntp-gym:end claims cpu -->"
            "\n\nprose\n<!-- ntp-gym:begin run cpu -->\n<!-- ntp-gym:end run cpu -->\n"
            "<!-- ntp-gym:begin experiment cpu/exp -->x<!-- ntp-gym:end experiment cpu/exp -->\n")
    new = update_blocks(text, tmp_path / "results", doc)
    assert "stale" not in new and "prose" in new
    assert "| R1: title R1 | a quantity | x >= 1 | x 1.25 ± 0.01 | **holds** |" in new
    assert "**not run** (not in profile cpu)" in new
    assert "Profile `cpu`: 12 jobs (0 failed), 1.5 minutes of wall time for the command" in new
    assert "The table:\n\n| agent | C_apx |" in new and "| rho | 1 \\| 2 |" in new
    assert "![The figure](../results/cpu/exp/fig.png)" in new
    assert update_blocks(new, tmp_path / "results", doc) == new
    assert [w for w, _, _ in find_blocks(new)] == ["claims cpu", "run cpu", "experiment cpu/exp"]
    absent = render_block("experiment cpu/other", tmp_path / "results", doc)
    assert absent.startswith("No results for `other` in profile `cpu`")


@pytest.mark.parametrize("words, message", [
    ("nonsense cpu", "unknown block"),
    ("table cpu/exp/nope", "lists no table"),
    ("figure cpu/nope/fig", "lists no figure"),
    ("claims gpu", "not a readable claims record"),
    ("table cpu/exp", "expected"),
])
def test_bad_blocks_are_errors(tmp_path, words, message) -> None:
    results_folder(tmp_path)
    with pytest.raises(ValueError, match=message):
        render_block(words, tmp_path / "results", tmp_path)


def test_missing_end_marker_is_an_error() -> None:
    with pytest.raises(ValueError, match="no end marker"):
        find_blocks("<!-- ntp-gym:begin claims cpu -->\n<!-- ntp-gym:end claims gpu -->")


def test_exit_status_fails_only_on_a_failed_claim_or_job() -> None:
    def record(*verdicts: str, failed: int = 0) -> RunRecord:
        return RunRecord("cpu", "t", 1.0, 3, failed, {},
                         tuple(result(f"R{i}", v) for i, v in enumerate(verdicts)))

    assert exit_status(record("holds", "not run")) == 0
    assert exit_status(record("holds", "fails")) == 1
    assert exit_status(record("holds", failed=1)) == 1


def _closed_form_check(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    rows = select_rows(frame, MIX, "logloss", horizon=8, n_train=0)
    value = float(rows["c_apx"].iloc[0])
    closed = mixture_ntp_c_apx(8, 0.05, 0.2, 0.8)[0]
    return [Measured("C_apx", value), Measured("closed form", closed)], \
        abs(value - closed) <= 1e-6 * closed, ""


def test_reproduce_end_to_end_on_a_tiny_registry(tmp_path) -> None:
    tiny = Experiment(
        "tiny", "Tiny", "MixtureProduct at H = 8 and 16.",
        {"cpu": [SweepConfig(MIX, {}, ("logloss", "no-such-agent"), (8, 16), seeds=1,
                             population=True, oracle_starts=2)]},
        (Claim("R1", "closed form", "here", "C_apx at H = 8", "= closed form",
               _closed_form_check),
         Claim("R2", "always fails", "here", "C_apx at H = 8", "< 0",
               lambda f: ([Measured("C_apx", 1.0)], False, ""))))
    gpu_only = Experiment("later", "Later", "", {"gpu": [SweepConfig(MIX, {}, ("logloss",),
                                                                     (8,))]},
                          (Claim("R3", "t", "s", "q", "e", _closed_form_check),))
    registry = {"tiny": tiny, "later": gpu_only}
    out = tmp_path / "out"
    console = Console(file=open(tmp_path / "console.txt", "w"), width=120)  # noqa: SIM115
    record = reproduce([tiny, gpu_only], "cpu", out, workers=1, progress=False,
                       console=console, registry=registry)
    verdicts = {c.claim: (c.verdict, c.note) for c in record.claims}
    assert verdicts["R1"] == ("holds", "")
    assert verdicts["R2"][0] == "fails" and verdicts["R3"] == ("not run", "not in profile cpu")
    assert exit_status(record) == 1 and (record.jobs, record.ran, record.failed) == (2, 2, 0)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.index("## Claims") < report.index("## Tiny (`tiny`)")
    assert "D_H^2 and C_apx against H" in report and "(tiny/divergence.png)" in report
    saved = json.loads((out / "claims.json").read_text(encoding="utf-8"))
    assert [c["claim"] for c in saved["claims"]] == ["R1", "R2", "R3"]
    assert saved["experiments"]["tiny"]["skipped_agents"] == ["no-such-agent"]
    assert (out / "tiny" / "divergence.csv").is_file()
    again = reproduce([tiny, gpu_only], "cpu", out, workers=1, progress=False, console=console,
                      registry=registry)  # resumes: nothing refitted
    assert again.claims == record.claims and again.jobs == 2 and again.ran == 0
    assert "2 jobs (0 failed; 0 run by this command, the others resumed from its store)" in \
        (out / "report.md").read_text(encoding="utf-8")
    target = publish(out, "cpu", tmp_path / "docs_results")
    assert sorted(p.name for p in (target / "tiny").iterdir()) == ["divergence.csv",
                                                                    "divergence.png"]
    assert not (target / "results.sqlite").exists()
    doc = tmp_path / "page.md"
    doc.write_text("<!-- ntp-gym:begin table cpu/tiny/divergence -->\n"
                   "<!-- ntp-gym:end table cpu/tiny/divergence -->\n", encoding="utf-8")
    block = update_blocks(doc.read_text(encoding="utf-8"), tmp_path / "docs_results", tmp_path)
    assert "| MixtureProduct-v0 | logloss | population | 8 |" in block


@pytest.mark.parametrize("argv, message", [
    (["--profile", "tpu"], "--profile must be one of"),
    (["--only", "nope"], "--only: unknown experiment 'nope'"),
    (["--only", ","], "--only must name at least one experiment"),
    (["--only", "quick", "--update-readme"], "--update-readme publishes a whole profile"),
    (["--workers", "0"], "--workers must be an integer in [1, "),
    (["--render-only", "--only", "quick"], "--render-only runs nothing"),
])
def test_reproduce_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv,
                                                             message) -> None:
    out = tmp_path / "out"
    assert cli_main(["reproduce", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ntp-bench: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_readme_and_docs_blocks_match_docs_results() -> None:
    """Every generated block of README.md and docs/*.md equals its rendering from the
    committed docs/results/ (regenerate with ``make docs`` or ``ntp-bench reproduce
    --render-only``)."""
    checked = 0
    for path in doc_files(ROOT):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for words, start, end in find_blocks(text):
            expected = "\n" + render_block(words, ROOT / "docs" / "results", path.parent) + "\n"
            assert text[start:end] == expected, f"{path.name}: block {words!r} is stale"
            checked += 1
    assert checked >= 1, "no generated block found in README.md or docs/*.md"
