"""The served-rows record: what the service answered and, later, what was true.

Three tables, shared by every worker and replica that writes to the same store:

- ``tabserve_served``: a record per request and per model that answered it (``role``
  ``champion``, or ``shadow`` for a shadow challenger): time, endpoint, source (``api``,
  ``ui``), and its rows' features and answers as JSON arrays (the row
  ``<request id>-<index>`` at position ``index - first_index``). A request, not a row,
  is the unit written: recording costs the writer thread and the database per request;
- ``tabserve_feedback``: the ground truth of a served row (its id, request and index,
  ``actual`` as JSON text, when it came); one per id, the first report stands;
- ``tabserve_models``: each model version's feature names (the order of its values).

The backends (SQLite, PostgreSQL) are ``tabserve/record/backends.py``. Times are Unix
seconds. The connections are per thread: the writer thread, the live-quality publisher
and the feedback calls each have their own.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from tabserve.record.rows import LabelledRow, Pair, Recorded, Served, expand

SERVED = "tabserve_served"
# Who answered a served row: the model the client heard from, or a shadow challenger.
ROLES = ("champion", "shadow")
FEEDBACK = "tabserve_feedback"
# The feature names of each model version and role: the order of its rows' values (a
# shadow's rows are the champion's, in the champion's order).
MODELS = "tabserve_models"

_TABLES = (
    # One row per request (and role): its rows' features and answers as JSON arrays, the
    # row <request id>-<first + i> at position i (a request's rows are answered together).
    f"""CREATE TABLE IF NOT EXISTS {SERVED} (
        request_id TEXT NOT NULL,
        first_index INTEGER NOT NULL,
        role TEXT NOT NULL,
        n_rows INTEGER NOT NULL,
        model TEXT NOT NULL,
        served_at DOUBLE PRECISION NOT NULL,
        endpoint TEXT NOT NULL,
        source TEXT NOT NULL,
        features TEXT NOT NULL,
        answers TEXT NOT NULL,
        PRIMARY KEY (request_id, role, first_index))""",
    # By role and time: the shadow's records found without a walk through the champion's.
    f"DROP INDEX IF EXISTS {SERVED}_time",  # the index of 2026-12-07's first version
    f"CREATE INDEX IF NOT EXISTS {SERVED}_role_time ON {SERVED} (role, served_at)",
    f"""CREATE TABLE IF NOT EXISTS {FEEDBACK} (
        id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        row_index INTEGER NOT NULL,
        actual TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS {FEEDBACK}_time ON {FEEDBACK} (received_at)",
    f"CREATE INDEX IF NOT EXISTS {FEEDBACK}_request ON {FEEDBACK} (request_id)",
    f"""CREATE TABLE IF NOT EXISTS {MODELS} (
        model TEXT NOT NULL,
        role TEXT NOT NULL,
        features TEXT NOT NULL,
        outputs TEXT,
        PRIMARY KEY (model, role))""",
)
# A labelled row: the feedback, and the request record that holds its row.
_HOLDS = (
    "s.request_id = f.request_id AND f.row_index >= s.first_index "
    "AND f.row_index < s.first_index + s.n_rows"
)


def split_id(row_id: str) -> tuple[str, int] | None:
    """``(request id, index)`` of a row id ``<request id>-<index>``; None for another form."""
    request, _, index = row_id.rpartition("-")
    return (request, int(index)) if request and index.isdigit() else None


class StoreError(RuntimeError):
    """The store cannot be reached or refused an operation (the message says which)."""


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


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

    def _usable(self, connection: Any) -> bool:
        """Whether a connection kept from an earlier call still works (a file's does)."""
        return True

    def _create_tables(self, connection: Any) -> None:
        for statement in _TABLES:
            connection.execute(statement)

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor of this thread's connection, in one transaction; a failure drops the
        connection (the next call reconnects) and raises :class:`StoreError`."""
        try:
            connection = getattr(self._local, "connection", None)
            if connection is not None and not self._usable(connection):
                self._drop()
                connection = None
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
    def write_calls(self, calls: Sequence[Recorded | Served]) -> None:
        """Add model calls' served rows, a record per request (one transaction); a
        request already recorded is left as it was."""
        if not calls:
            return
        encoded = [c.encoded() if isinstance(c, Served) else c for c in calls]
        models: dict[tuple[str, str], tuple[tuple[str, ...], list[str] | None]] = {}
        for c in encoded:
            key = (c.model, c.role)
            if key not in self._named and models.get(key, ((), None))[1] is None:
                models[key] = (c.names, c.outputs)
        records = [
            (request, first, c.role, count, c.model, c.served_at, c.endpoint, c.source, f, a)
            for c in encoded
            for request, first, count, f, a in c.requests
        ]
        with self._cursor() as cursor:
            for (model, role), (features, outputs) in models.items():
                cursor.execute(
                    self._sql(
                        f"INSERT INTO {MODELS} (model, role, features, outputs) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (model, role) DO UPDATE SET "
                        f"outputs = COALESCE({MODELS}.outputs, excluded.outputs)"
                    ),
                    (model, role, json.dumps(list(features)), _dumps(outputs)),
                )
            cursor.executemany(
                self._sql(
                    f"INSERT INTO {SERVED} (request_id, first_index, role, n_rows, model, "
                    "served_at, endpoint, source, features, answers) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (request_id, role, first_index) DO NOTHING"
                ),
                records,
            )
        # Known for good once its predictions' form is: until then, looked at each time.
        self._named.update(key for key, (_, outputs) in models.items() if outputs is not None)

    def served(self, ids: Sequence[str], role: str = "champion") -> dict[str, dict[str, Any]]:
        """The recorded answers (and ``served_at``) of ``ids`` by ``role``, by id."""
        wanted = {row_id: split_id(row_id) for row_id in ids}
        requests = sorted({where[0] for where in wanted.values() if where is not None})
        if not requests:
            return {}
        marks = ", ".join("?" * len(requests))
        statement = self._sql(
            f"SELECT s.request_id, s.first_index, s.served_at, s.answers, m.outputs "
            f"FROM {SERVED} s LEFT JOIN {MODELS} m ON m.model = s.model AND m.role = s.role "
            f"WHERE s.role = ? AND s.request_id IN ({marks})"
        )
        with self._cursor() as cursor:
            cursor.execute(statement, (role, *requests))
            held: dict[str, list[tuple[int, float, list[Any]]]] = {}
            for request, first, served_at, answers, outputs in cursor.fetchall():
                kept = [expand(item, _loads(outputs)) for item in json.loads(answers)]
                held.setdefault(request, []).append((first, served_at, kept))
        found: dict[str, dict[str, Any]] = {}
        for row_id, where in wanted.items():
            if where is None:
                continue
            request, index = where
            for first, served_at, answers in held.get(request, []):
                if 0 <= index - first < len(answers):
                    found[row_id] = {"served_at": served_at, "answer": answers[index - first]}
        return found

    def add_feedback(self, items: Sequence[tuple[str, Any]], received_at: float) -> set[str]:
        """Record ground truths ``(id, actual)`` of served rows; the ids that were already
        recorded (a second report never changes the first)."""
        duplicates: set[str] = set()
        statement = self._sql(
            f"INSERT INTO {FEEDBACK} (id, request_id, row_index, actual, received_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        )
        with self._cursor() as cursor:
            for row_id, actual in items:
                request, index = split_id(row_id) or (row_id, -1)
                cursor.execute(statement, (row_id, request, index, json.dumps(actual), received_at))
                if cursor.rowcount == 0:
                    duplicates.add(row_id)
        return duplicates

    def delete_before(self, cutoff: float) -> int:
        """Forget served requests older than ``cutoff`` and ground truths that came before
        it (the retention); how many served rows went."""
        old = f"FROM {SERVED} WHERE role IN {ROLES!r} AND served_at < ?"
        with self._cursor() as cursor:
            cursor.execute(self._sql(f"SELECT COALESCE(SUM(n_rows), 0) {old}"), (cutoff,))
            deleted = int(cursor.fetchone()[0])
            cursor.execute(self._sql(f"DELETE {old}"), (cutoff,))
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
            f"SELECT f.id, s.role, s.model, s.served_at, f.received_at, s.features, s.answers, "
            f"f.actual, m.features AS names, f.row_index - s.first_index AS position, "
            f"m.outputs, "
            f"ROW_NUMBER() OVER (PARTITION BY s.model, s.role "
            f"ORDER BY f.received_at DESC, f.id) AS n "
            f"FROM {FEEDBACK} f JOIN {SERVED} s ON {_HOLDS} "
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
            rows = cursor.fetchall()
        parsed = _Parsed()
        return [
            LabelledRow(
                id=r[0],
                role=r[1],
                model=r[2],
                served_at=r[3],
                received_at=r[4],
                features=_features(parsed(r[8] or "[]"), parsed(r[5]), r[9]),
                answer=expand(parsed(r[6])[r[9]], parsed(r[10]) if r[10] else None),
                actual=json.loads(r[7]),
            )
            for r in rows
        ]

    def pairs(
        self, limit: int, *, labelled: bool = False, since: float | None = None
    ) -> list[Pair]:
        """Rows both the champion and a shadow answered, the most recent first (labelled
        only: the most recently labelled first), at most ``limit``."""
        both = (
            f"FROM {SERVED} s JOIN {SERVED} c ON c.request_id = s.request_id "
            "AND c.role = 'champion' AND c.first_index = s.first_index "
            f"LEFT JOIN {MODELS} cm ON cm.model = c.model AND cm.role = c.role "
            f"LEFT JOIN {MODELS} sm ON sm.model = s.model AND sm.role = s.role"
        )
        if labelled:
            statement = (
                f"SELECT s.request_id, s.first_index, c.model, s.model, c.answers, s.answers, "
                f"f.row_index, f.actual, cm.outputs, sm.outputs {both} "
                f"JOIN {FEEDBACK} f ON {_HOLDS} "
                f"WHERE s.role = 'shadow' AND s.served_at >= ? "
                f"ORDER BY f.received_at DESC, f.id LIMIT ?"
            )
        else:
            statement = (
                f"SELECT s.request_id, s.first_index, c.model, s.model, c.answers, s.answers, "
                f"NULL, NULL, cm.outputs, sm.outputs {both} "
                f"WHERE s.role = 'shadow' AND s.served_at >= ? "
                f"ORDER BY s.served_at DESC, s.request_id LIMIT ?"
            )
        with self._cursor() as cursor:
            cursor.execute(self._sql(statement), (since or 0.0, limit))
            rows = cursor.fetchall()
        parsed, pairs = _Parsed(), []
        for request, first, champion_model, shadow_model, c, s, index, actual, co, so in rows:
            champion, shadow = parsed(c), parsed(s)
            c_outputs, s_outputs = _loads(co), _loads(so)
            positions = [index - first] if index is not None else range(len(shadow))
            for i in positions:
                pairs.append(
                    Pair(
                        f"{request}-{first + i}",
                        champion_model,
                        shadow_model,
                        expand(champion[i], c_outputs),
                        expand(shadow[i], s_outputs),
                        _loads(actual),
                    )
                )
        return pairs[:limit]

    def counts(self) -> dict[str, int]:
        """How many served rows (by role) and ground truths the store holds."""
        with self._cursor() as cursor:
            cursor.execute(f"SELECT role, SUM(n_rows) FROM {SERVED} GROUP BY role")
            counts = {f"served_{role}": int(n) for role, n in cursor.fetchall()}
            cursor.execute(f"SELECT COUNT(*) FROM {FEEDBACK}")
            counts["feedback"] = int(cursor.fetchone()[0])
        return counts


def _features(names: list[str], values: list[list[Any]], position: int) -> dict[str, Any]:
    """A row's features by name ({} for a record that keeps none: a shadow's)."""
    return dict(zip(names, values[position], strict=False)) if values else {}


class _Parsed:
    """JSON texts parsed once each (a request's arrays serve every labelled row of it)."""

    def __init__(self) -> None:
        self._seen: dict[str, Any] = {}

    def __call__(self, text: str) -> Any:
        if text not in self._seen:
            self._seen[text] = json.loads(text)
        return self._seen[text]
