"""The record's two backends: SQLite (``sqlite:///path/record.db``), a file for the workers
of one machine (WAL mode), and PostgreSQL (``postgresql://user:pw@host/db``, psycopg 3) for
several replicas; :func:`open_store` picks one from a URL."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from tabserve.record.store import RecordStore


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
        # Records of a few kilobytes each (a request's features and answers): 16 KiB pages
        # hold them without chains of overflow pages, a third less of SQLite's work per
        # write (set when the file is new; an existing file keeps its size).
        connection.execute("PRAGMA page_size=16384")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error, OSError)

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

    def _transaction(self, connection: Any) -> Any:
        return connection.transaction()

    def _usable(self, connection: Any) -> bool:
        # A server restarted since the connection's last use has cut it, and the first
        # statement on it would fail: a write's rows would be lost, a feedback call
        # answered 503. One round trip finds out, and the caller reconnects.
        import psycopg

        if connection.closed:
            return False
        try:
            connection.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

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
