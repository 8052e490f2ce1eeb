"""Progress in a log file is plain lines; on a terminal, a tqdm bar."""

from __future__ import annotations

import io

from evaluation.bench.progress import LINES, LineProgress, progress_bar
from evaluation.cli import main

MIX = "ntp_envs/MixtureProduct-v0"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_lines_not_carriage_returns() -> None:
    log = io.StringIO()
    bar = progress_bar(1000, 10, "jobs", True, log)
    assert isinstance(bar, LineProgress)
    for _ in range(990):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert LINES - 1 <= len(lines) <= LINES + 1  # one line per 50 jobs, not one per job
    assert lines[-1] == "jobs: 1000/1000"
    assert [int(line.split()[1].split("/")[0]) for line in lines] == sorted(
        int(line.split()[1].split("/")[0]) for line in lines)


def test_a_terminal_gets_a_bar_and_disabled_prints_nothing() -> None:
    terminal = _Terminal()
    bar = progress_bar(4, 0, "jobs", True, terminal)
    bar.update(4)
    bar.close()
    assert "\r" in terminal.getvalue() and "4/4" in terminal.getvalue()
    quiet = io.StringIO()
    bar = progress_bar(4, 0, "jobs", False, quiet)
    bar.update(4)
    bar.close()
    assert quiet.getvalue() == ""


def test_a_sweep_logged_to_a_file_writes_lines(tmp_path, capsys) -> None:
    assert main(["sweep", "--env", MIX, "--agents", "logloss", "--horizons", "2,4",
                 "--seeds", "1", "--population", "--backend", "serial",
                 "--oracle-starts", "1", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[-1] == "jobs: 2/2"
