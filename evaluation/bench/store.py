"""The embedded result store: one SQLite file, one row per job, exportable to CSV/pandas.

Each insert is its own transaction, so a sweep killed at any point leaves every finished
job intact and nothing half-written; rerunning skips keys already stored. Opening checks an
existing file before writing anything: a foreign database or a damaged (e.g. truncated)
store is a ValueError and is left untouched.

A row's identity (its key, and the key of its best-in-class value) holds every setting that
can change its numbers: the instance (``env_id`` and the canonical ``env_kwargs``), ``horizon``,
``agent`` and its identity (``agent_config``: its settings, the code that fits it, and the
torch device where it runs on one; :func:`agents.plugins.agent_identity`), ``seed``,
``n_train``, ``eval_samples`` and ``oracle_starts``; each is also a column. Numbers are
canonical (``1.0`` and ``1`` key one row). Rows of a store written before a setting was keyed
have it NULL (or an ``agent_config`` without ``_code``): they are not reused, and summaries
keep them apart from the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

SETTING_COLUMNS = ["eval_samples", "oracle_starts", "agent_config"]
"""Settings besides the instance, agent, horizon, seed and data that change a row's numbers."""
KEY_COLUMNS = ["env_id", "env_kwargs", "horizon", "agent", "seed", "n_train", *SETTING_COLUMNS]
STATUSES = ("ok", "unconverged", "failed")
"""Row statuses: ``unconverged`` rows hold numbers from a fit whose solver reported
``converged: false`` (kept, not retried: the fit is deterministic); ``failed`` rows hold an
error and are retried."""
RESULT_COLUMNS: dict[str, str] = {
    "job_key": "TEXT PRIMARY KEY",
    "env_id": "TEXT NOT NULL",
    "env_kwargs": "TEXT NOT NULL",
    "horizon": "INTEGER NOT NULL",
    "agent": "TEXT NOT NULL",
    "seed": "INTEGER NOT NULL",
    "n_train": "INTEGER NOT NULL",
    "status": "TEXT NOT NULL",
    "error": "TEXT",
    "hellinger2": "REAL",
    "hellinger2_stderr": "REAL",
    "kl": "REAL",
    "kl_stderr": "REAL",
    "tv": "REAL",
    "tv_stderr": "REAL",
    "best_in_class_hellinger2": "REAL",
    "c_apx": "REAL",
    "eval_method": "TEXT",
    "oracle_method": "TEXT",
    "oracle_agreement": "REAL",
    "fit_seconds": "REAL",
    "eval_seconds": "REAL",
    "agent_info": "TEXT",
    # tasks with a right answer (task.answer_length): greedy answer accuracy, held out
    "answer_accuracy": "REAL",
    "answer_accuracy_stderr": "REAL",
    "answer_split": "TEXT",
    # task-specific measurements as JSON (evaluation.metrics.accuracy.TASK_METRICS, e.g. PathStar)
    "task_metrics": "TEXT",
    # part of the row's identity (keyed since issue 14); NULL in rows of older stores
    "eval_samples": "INTEGER",
    "oracle_starts": "INTEGER",
    "agent_config": "TEXT",
    # the family of instances swept (issue 13): env kwargs, a list of values per grid kwarg
    "family": "TEXT",
}
ADDED_RESULT_COLUMNS = ("answer_accuracy", "answer_accuracy_stderr", "answer_split",
                        "task_metrics", "eval_samples", "oracle_starts", "agent_config", "family")
"""Nullable columns added after the first release: a store without them gets them on open."""
APPLICATION_ID = 0x6E747067  # "ntpg" in the SQLite header: marks files written by this store
SQLITE_HEADER = b"SQLite format 3\x00"
ORACLE_COLUMNS: dict[str, str] = {
    "oracle_key": "TEXT PRIMARY KEY",
    "env_id": "TEXT NOT NULL",
    "env_kwargs": "TEXT NOT NULL",
    "horizon": "INTEGER NOT NULL",
    "best_in_class_hellinger2": "REAL",
    "oracle_method": "TEXT",
    "oracle_agreement": "REAL",
    "oracle_seconds": "REAL",
    "local_optima": "TEXT",
    "oracle_starts": "INTEGER",
}
ADDED_ORACLE_COLUMNS = ("oracle_starts",)


def canonical_numbers(value: Any) -> Any:
    """``value`` (JSON data) with every integral float written as an int (``1.0`` -> ``1``,
    booleans kept), so equal numbers have one text."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: canonical_numbers(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_numbers(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """Stable JSON text (sorted keys, :func:`canonical_numbers`) used in keys and the
    ``env_kwargs`` column."""
    return json.dumps(canonical_numbers(value), sort_keys=True, separators=(",", ":"))


def job_key(env_id: str, env_kwargs: dict[str, Any], horizon: int, agent: str, seed: int,
            n_train: int, eval_samples: int, oracle_starts: int,
            agent_config: dict[str, Any]) -> str:
    """The identity of a job: every setting that can change its numbers (module doc)."""
    return canonical_json([env_id, env_kwargs, horizon, agent, seed, n_train, eval_samples,
                           oracle_starts, agent_config])


def oracle_key(env_id: str, env_kwargs: dict[str, Any], horizon: int,
               oracle_starts: int) -> str:
    """The identity of a best-in-class computation."""
    return canonical_json([env_id, env_kwargs, horizon, oracle_starts])


def _fresh_file(path: Path, suffix: str) -> Path:
    """Create a new, uniquely named empty file next to ``path`` with the mode a plain
    ``open(..., "w")`` gives (``0o666`` less the umask; ``mkstemp`` would give ``0o600``)."""
    for _ in range(100):
        name = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}"
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"no free temporary name next to {path}")


def write_atomically(path: str | os.PathLike[str], write: Any, suffix: str = "",
                     mode: int | None = None) -> Path:
    """Call ``write(tmp)`` on a fresh, uniquely named file next to ``path``, then move it onto
    ``path`` (a reader never sees half a file; concurrent writers never share a temp file).
    The file gets permission bits ``mode`` (e.g. the store's), else those of a plain new file."""
    path = Path(path)
    name = _fresh_file(path, suffix)
    try:
        write(name)
        if mode is not None:
            os.chmod(name, mode)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return path


class ResultStore:
    """Results of sweeps in an SQLite file (created on first use).

    ``readonly=True`` opens an existing store for reading only (a read-only file or folder);
    older stores then show the newer columns as NULL instead of gaining them. ``create=False``
    opens an existing store only: a missing or empty (0-byte) file is a ValueError and stays
    as it is (``ntp-bench report``).
    """

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False,
                 create: bool = True) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder, not a result store file")
        if (readonly or not create) and self.path.is_file() and self.path.stat().st_size == 0:
            raise ValueError(f"{self.path} is empty (0 bytes), not a result store: left "
                             "untouched (a sweep writes one there; delete the file or choose "
                             "another --out)")
        if readonly:
            self._open_readonly()
            return
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if fresh and not create:
            raise ValueError(f"{self.path} is not a readable result store: no such file")
        if not fresh:
            with open(self.path, "rb") as handle:
                if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise ValueError(f"{self.path} is not a readable result store: "
                                     "not an SQLite database (left untouched)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # the mode of a plain new file (SQLite's own is 0o644)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self._conn = sqlite3.connect(self.path)
        try:
            if not fresh:  # read-only checks first: a foreign or damaged file is never written
                self._check_existing()
            self._conn.execute("PRAGMA journal_mode=WAL")
            if fresh:
                self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._create("results", RESULT_COLUMNS)
            self._create("oracle", ORACLE_COLUMNS)
            self._check_schema()
        except (sqlite3.DatabaseError, ValueError) as err:
            self._close_and_raise(err)

    def _close_and_raise(self, err: Exception) -> NoReturn:
        """Close the connection and raise ``err`` (a ValueError naming the file for SQLite's)."""
        self._conn.close()
        if isinstance(err, sqlite3.DatabaseError):
            raise ValueError(f"{self.path} is not a readable result store: {err} "
                             "(left untouched)") from None
        raise err

    def _open_readonly(self) -> None:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise ValueError(f"{self.path} is not a readable result store: no such file")
        with open(self.path, "rb") as handle:
            if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise ValueError(f"{self.path} is not a readable result store: "
                                 "not an SQLite database (left untouched)")
        # a WAL store in a read-only folder cannot get its -shm file: read it as immutable
        for flags in ("mode=ro", "immutable=1"):
            self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?{flags}", uri=True)
            try:
                self._check_existing()
                return
            except sqlite3.OperationalError:
                self._conn.close()
            except (sqlite3.DatabaseError, ValueError) as err:
                self._close_and_raise(err)
        raise ValueError(f"{self.path} is not a readable result store: SQLite cannot open it "
                         "read-only")

    def _check_existing(self) -> None:
        """ValueError unless the file is an intact ntp-gym store (or an empty database)."""
        app = self._conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in
                  self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        legacy = app == 0 and (not tables or {"results", "oracle"} <= tables)  # or empty
        ours = app == APPLICATION_ID or legacy
        if not ours:
            raise ValueError(f"{self.path} is an SQLite database but not an ntp-gym result store "
                             f"(application_id {app}, tables {sorted(tables)}); left untouched: "
                             "choose another --out")
        problems = [row[0] for row in self._conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise ValueError(f"{self.path} is not a readable result store: integrity check "
                             f"failed ({'; '.join(problems[:3])}); left untouched: restore it "
                             "or choose another --out")
        if tables:
            self._check_schema()

    def _create(self, table: str, columns: dict[str, str]) -> None:
        spec = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        with self._conn:
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({spec})")

    def _check_schema(self) -> None:
        for table, columns, added in (("results", RESULT_COLUMNS, ADDED_RESULT_COLUMNS),
                                      ("oracle", ORACLE_COLUMNS, ADDED_ORACLE_COLUMNS)):
            have = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if columns.keys() - have <= set(added):
                if self.readonly:  # read as NULL (see _select)
                    have |= set(added)
                else:
                    with self._conn:  # an older store: add the (nullable) newer columns
                        for name in [c for c in added if c not in have]:
                            self._conn.execute(
                                f"ALTER TABLE {table} ADD COLUMN {name} {columns[name]}")
                            have.add(name)
            missing = set(columns) - have
            if missing:
                raise ValueError(f"{self.path}: table {table} lacks columns {sorted(missing)}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Turn SQLite's errors while reading rows (e.g. text that is not UTF-8 in a damaged
        or hand-edited cell) into one-line ValueErrors naming the file."""
        try:
            yield
        except (sqlite3.Error, pd.errors.DatabaseError) as err:
            text = " ".join(str(err).split())
            if not any(word in text for word in ("decode", "malformed", "not a database")):
                raise  # e.g. a locked database: not the file's fault
            raise ValueError(f"{self.path} is not a readable result store: {text} (left "
                             "untouched: restore it or choose another --out)") from None

    def done_keys(self) -> set[str]:
        """Keys of jobs that finished (status ``ok`` or ``unconverged``): not run again."""
        with self._reading():
            rows = self._conn.execute(
                "SELECT job_key FROM results WHERE status IN ('ok', 'unconverged')")
            return {row[0] for row in rows}

    def put_result(self, row: dict[str, Any]) -> None:
        """Insert or replace one job's row (one transaction)."""
        self._put("results", RESULT_COLUMNS, row)

    def put_oracle(self, row: dict[str, Any]) -> None:
        """Insert or replace one best-in-class row (one transaction)."""
        self._put("oracle", ORACLE_COLUMNS, row)

    def _put(self, table: str, columns: dict[str, str], row: dict[str, Any]) -> None:
        if self.readonly:
            raise ValueError(f"{self.path} is open read-only")
        unknown = set(row) - set(columns)
        if unknown:
            raise ValueError(f"unknown {table} column(s): {sorted(unknown)}")
        names = list(row)
        sql = (f"INSERT OR REPLACE INTO {table} ({', '.join(names)}) "
               f"VALUES ({', '.join('?' for _ in names)})")
        with self._conn:
            self._conn.execute(sql, [row[name] for name in names])

    def get_oracle(self, key: str) -> dict[str, Any] | None:
        """The stored best-in-class row for ``key``, if any."""
        with self._reading():
            cur = self._conn.execute("SELECT * FROM oracle WHERE oracle_key = ?", (key,))
            found = cur.fetchone()
        if found is None:
            return None
        return dict(zip([d[0] for d in cur.description], found, strict=True))

    def results(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """All result rows (or those with the given keys) as a DataFrame, every column of
        :data:`RESULT_COLUMNS` present (NULL where an older store lacks it)."""
        with self._reading():
            frame = pd.read_sql_query("SELECT * FROM results ORDER BY rowid", self._conn)
        for name in RESULT_COLUMNS:
            if name not in frame.columns:
                frame[name] = None
        if keys is not None:
            frame = frame[frame["job_key"].isin(set(keys))]
        return frame.reset_index(drop=True)

    def export_csv(self, path: str | os.PathLike[str], keys: Iterable[str] | None = None) -> Path:
        """Write the results (all of them, or those with the given keys), sorted by key
        columns, to CSV atomically, with the store file's permission bits."""
        frame = self.results(keys).drop(columns=["job_key"])
        frame = frame.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
        return write_atomically(
            path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.17g"),
            mode=self.file_mode())

    def file_mode(self) -> int:
        """The permission bits of the store file (its outputs get the same)."""
        return self.path.stat().st_mode & 0o777
