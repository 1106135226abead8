"""The served-rows record: what the service answered and, later, what was true.

Two tables, shared by every worker and replica that writes to the same store:

- ``tabserve_served``: one row per answered row and per model that answered it (``role``
  ``champion``, or ``shadow`` for a shadow challenger), with its id, time, endpoint,
  source (``api``, ``ui``), features and answer (JSON text);
- ``tabserve_feedback``: the ground truth of a served row (``id``, ``actual`` as JSON
  text, when it came); one per id, the first report stands.

Two backends behind :func:`open_store`: SQLite (``sqlite:///path/record.db``), a file
for one machine (WAL mode: the workers of one server write it at once), and PostgreSQL
(``postgresql://user:pw@host/db``, psycopg) for several replicas. Times are Unix seconds.
The connections are per thread: the writer thread, the live-quality publisher and the
feedback calls each have their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tabserve.record.rows import LabelledRow, Pair, Served

SERVED = "tabserve_served"
FEEDBACK = "tabserve_feedback"
# The feature names of each model version and role: the order of its rows' values (a
# shadow's rows are the champion's, in the champion's order).
MODELS = "tabserve_models"

_TABLES = (
    f"""CREATE TABLE IF NOT EXISTS {SERVED} (
        id TEXT NOT NULL,
        role TEXT NOT NULL,
        model TEXT NOT NULL,
        served_at DOUBLE PRECISION NOT NULL,
        endpoint TEXT NOT NULL,
        source TEXT NOT NULL,
        features TEXT NOT NULL,
        answer TEXT NOT NULL,
        PRIMARY KEY (id, role))""",
    f"CREATE INDEX IF NOT EXISTS {SERVED}_time ON {SERVED} (served_at)",
    f"""CREATE TABLE IF NOT EXISTS {FEEDBACK} (
        id TEXT PRIMARY KEY,
        actual TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS {FEEDBACK}_time ON {FEEDBACK} (received_at)",
    f"""CREATE TABLE IF NOT EXISTS {MODELS} (
        model TEXT NOT NULL,
        role TEXT NOT NULL,
        features TEXT NOT NULL,
        PRIMARY KEY (model, role))""",
)


class StoreError(RuntimeError):
    """The store cannot be reached or refused an operation (the message says which)."""


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class RecordStore:
    """A record store (use :func:`open_store`); every method may raise :class:`StoreError`."""

    url: str
    placeholder = "?"

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._made = False
        self._lock = threading.Lock()
        self._named: set[tuple[str, str]] = set()  # (model, role) whose names are stored

    # ---- connections -----------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def _transaction(self, connection: Any) -> Any:
        """A context in which ``connection``'s statements are one transaction."""
        raise NotImplementedError

    def _create_tables(self, connection: Any) -> None:
        for statement in _TABLES:
            connection.execute(statement)

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor of this thread's connection, in one transaction; a failure drops the
        connection (the next call reconnects) and raises :class:`StoreError`."""
        try:
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = self._local.connection = self._connect()
            with self._lock:
                if not self._made:
                    with self._transaction(connection):
                        self._create_tables(connection)
                    self._made = True
            with self._transaction(connection):
                cursor = connection.cursor()
                try:
                    yield cursor
                finally:
                    cursor.close()
        except self._errors() as exc:
            self._drop()
            raise StoreError(f"record store {self.safe_url}: {exc}".strip()) from exc

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to do
                connection.close()

    def close(self) -> None:
        """Close this thread's connection."""
        self._drop()

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        return self.url.replace(f":{parts.password}@", ":***@", 1)

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    # ---- writes ------------------------------------------------------------------
    _insert_calls = ""  # one call's JSON payload exploded into rows (per backend)

    def write_calls(self, calls: Sequence[Served]) -> None:
        """Add model calls' served rows (one transaction, one statement a call); a row
        already recorded is left as it was."""
        if not calls:
            return
        names = {(c.model, c.role): c.names for c in calls if (c.model, c.role) not in self._named}
        with self._cursor() as cursor:
            for (model, role), features in names.items():
                cursor.execute(
                    self._sql(
                        f"INSERT INTO {MODELS} (model, role, features) VALUES (?, ?, ?) "
                        "ON CONFLICT (model, role) DO NOTHING"
                    ),
                    (model, role, json.dumps(list(features))),
                )
            cursor.executemany(
                self._sql(self._insert_calls),
                [(c.role, c.model, c.served_at, c.endpoint, c.source, c.payload()) for c in calls],
            )
        self._named.update(names)

    def served(self, ids: Sequence[str], role: str = "champion") -> dict[str, dict[str, Any]]:
        """The recorded answers (and ``served_at``) of ``ids`` by ``role``, by id."""
        found: dict[str, dict[str, Any]] = {}
        if not ids:
            return found
        marks = ", ".join("?" * len(ids))
        statement = self._sql(
            f"SELECT id, served_at, answer FROM {SERVED} WHERE role = ? AND id IN ({marks})"
        )
        with self._cursor() as cursor:
            cursor.execute(statement, (role, *ids))
            for row_id, served_at, answer in cursor.fetchall():
                found[row_id] = {"served_at": served_at, "answer": json.loads(answer)}
        return found

    def add_feedback(self, items: Sequence[tuple[str, Any]], received_at: float) -> set[str]:
        """Record ground truths ``(id, actual)``; the ids that were already recorded (a
        second report never changes the first)."""
        duplicates: set[str] = set()
        statement = self._sql(
            f"INSERT INTO {FEEDBACK} (id, actual, received_at) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING"
        )
        with self._cursor() as cursor:
            for row_id, actual in items:
                cursor.execute(statement, (row_id, json.dumps(actual), received_at))
                if cursor.rowcount == 0:
                    duplicates.add(row_id)
        return duplicates

    def delete_before(self, cutoff: float) -> int:
        """Forget served rows older than ``cutoff`` and ground truths that came before it
        (the retention); how many served rows went."""
        with self._cursor() as cursor:
            cursor.execute(self._sql(f"DELETE FROM {SERVED} WHERE served_at < ?"), (cutoff,))
            deleted = int(cursor.rowcount)
            cursor.execute(self._sql(f"DELETE FROM {FEEDBACK} WHERE received_at < ?"), (cutoff,))
        return deleted

    # ---- reads -------------------------------------------------------------------
    def labelled(
        self,
        per_model: int | None = None,
        model: str | None = None,
        role: str | None = None,
        since: float | None = None,
    ) -> list[LabelledRow]:
        """Labelled served rows, the most recently labelled first.

        Args:
            per_model: at most this many per model version and role (None: all).
            model: one model version only.
            role: one role only (``champion``, ``shadow``).
            since: labelled at or after this time only.
        """
        where, params = ["1 = 1"], []
        for clause, value in (
            ("s.model = ?", model),
            ("s.role = ?", role),
            ("f.received_at >= ?", since),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        statement = (
            f"SELECT s.id, s.role, s.model, s.served_at, f.received_at, s.features, s.answer, "
            f"f.actual, m.features AS names, ROW_NUMBER() OVER (PARTITION BY s.model, s.role "
            f"ORDER BY f.received_at DESC, s.id) AS n "
            f"FROM {FEEDBACK} f JOIN {SERVED} s ON s.id = f.id "
            f"LEFT JOIN {MODELS} m ON m.model = s.model AND m.role = s.role "
            f"WHERE {' AND '.join(where)}"
        )
        statement = f"SELECT * FROM ({statement}) ranked"
        if per_model is not None:
            statement += " WHERE n <= ?"
            params.append(per_model)
        statement += " ORDER BY received_at DESC, id"
        with self._cursor() as cursor:
            cursor.execute(self._sql(statement), params)
            return [
                LabelledRow(
                    id=r[0],
                    role=r[1],
                    model=r[2],
                    served_at=r[3],
                    received_at=r[4],
                    features=dict(zip(json.loads(r[8] or "[]"), json.loads(r[5]), strict=False)),
                    answer=json.loads(r[6]),
                    actual=json.loads(r[7]),
                )
                for r in cursor.fetchall()
            ]

    def pairs(
        self, limit: int, *, labelled: bool = False, since: float | None = None
    ) -> list[Pair]:
        """Rows both the champion and a shadow answered, the most recent first (labelled
        only: the most recently labelled first), at most ``limit``."""
        join = "JOIN" if labelled else "LEFT JOIN"
        order = "f.received_at" if labelled else "s.served_at"
        statement = (
            f"SELECT s.id, c.model, s.model, c.answer, s.answer, f.actual FROM {SERVED} s "
            f"JOIN {SERVED} c ON c.id = s.id AND c.role = 'champion' "
            f"{join} {FEEDBACK} f ON f.id = s.id "
            f"WHERE s.role = 'shadow' AND s.served_at >= ? ORDER BY {order} DESC, s.id LIMIT ?"
        )
        with self._cursor() as cursor:
            cursor.execute(self._sql(statement), (since or 0.0, limit))
            return [
                Pair(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), _loads(r[5]))
                for r in cursor.fetchall()
            ]

    def counts(self) -> dict[str, int]:
        """How many served rows (by role) and ground truths the store holds."""
        with self._cursor() as cursor:
            cursor.execute(f"SELECT role, COUNT(*) FROM {SERVED} GROUP BY role")
            counts = {f"served_{role}": int(n) for role, n in cursor.fetchall()}
            cursor.execute(f"SELECT COUNT(*) FROM {FEEDBACK}")
            counts["feedback"] = int(cursor.fetchone()[0])
        return counts


class SqliteStore(RecordStore):
    """The embedded store: one SQLite file in WAL mode (the workers of one machine)."""

    def __init__(self, url: str, path: Path, timeout_s: float) -> None:
        super().__init__(url)
        self.path = path
        self.timeout_s = timeout_s

    def _connect(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Served features are as private as the requests were: owner only (SQLite gives
        # its -wal and -shm files the database's mode).
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        connection = sqlite3.connect(self.path, timeout=self.timeout_s, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error, OSError)

    # "WHERE true": SQLite's parser needs it between a SELECT and ON CONFLICT.
    _insert_calls = (
        f"INSERT INTO {SERVED} (id, role, model, served_at, endpoint, source, features, answer) "
        "SELECT json_extract(value, '$.id'), ?, ?, ?, ?, ?, json_extract(value, '$.f'), "
        "json_extract(value, '$.a') FROM json_each(?) WHERE true ON CONFLICT (id, role) DO NOTHING"
    )

    def _transaction(self, connection: Any) -> Any:
        return connection  # sqlite3's connection commits (or rolls back) on exit


class PostgresStore(RecordStore):
    """A PostgreSQL database (psycopg 3): the replicas of a deployment share it."""

    placeholder = "%s"

    def __init__(self, url: str, timeout_s: float) -> None:
        super().__init__(url)
        self.timeout_s = timeout_s

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(
            self.url,
            autocommit=True,  # each block below is its own transaction
            connect_timeout=max(1, round(self.timeout_s)),
            options=f"-c statement_timeout={round(self.timeout_s * 1000)}",
        )

    def _errors(self) -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.Error, OSError)

    _insert_calls = (
        f"INSERT INTO {SERVED} (id, role, model, served_at, endpoint, source, features, answer) "
        "SELECT x->>'id', ?, ?, ?, ?, ?, (x->'f')::text, (x->'a')::text "
        "FROM json_array_elements(?::json) AS x ON CONFLICT (id, role) DO NOTHING"
    )

    def _transaction(self, connection: Any) -> Any:
        return connection.transaction()

    def _create_tables(self, connection: Any) -> None:
        # Workers and replicas start together: one creates the tables at a time
        # (concurrent CREATE ... IF NOT EXISTS can still collide in PostgreSQL).
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('tabserve_record'))")
        super()._create_tables(connection)


def open_store(url: str, timeout_s: float = 5.0) -> RecordStore:
    """The store at ``url``: ``sqlite:///relative/or//absolute/path.db`` or
    ``postgresql://...`` (``postgres://`` too). Nothing is connected until first used.

    Raises:
        ValueError: for any other scheme, or a SQLite URL without a path.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"{url!r}: a SQLite record is sqlite:///path/to/record.db")
        return SqliteStore(url, Path(path), timeout_s)
    if scheme in {"postgresql", "postgres"}:
        return PostgresStore(url, timeout_s)
    raise ValueError(f"{url!r}: the record store is sqlite:///path.db or postgresql://...")
