"""Where signed audit anchors are kept, outside the application database: an
append-only JSONL file and a table in a database of its own (pipelines/anchors.py
makes and checks the anchors)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Protocol

import environ
import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class AnchorStoreError(Exception):
    """An anchor could not be written to one of its stores (it is written again later)."""


class Store(Protocol):
    name: str

    def append(self, number: int, line: str) -> None: ...

    def last(self) -> str | None: ...

    def read(self) -> list[str] | None: ...


def _last_line(path: Path) -> str:
    with path.open("rb") as file:
        end = file.seek(0, os.SEEK_END)
        tail = b""
        start = end
        while start > 0:
            step = min(64 * 1024, start)
            start -= step
            file.seek(start)
            tail = file.read(step) + tail
            body = tail.rstrip(b"\n")
            if b"\n" in body:
                return body.rsplit(b"\n", 1)[1].decode()
        return tail.rstrip(b"\n").decode()


class FileStore:
    """An append-only JSONL file: opened with O_APPEND, each line fsynced, and the folder
    fsynced when the file is created, so a written anchor survives a crash."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"anchor file {self.path}"

    def append(self, number: int, line: str) -> None:
        try:
            created = not self.path.exists()
            prefix = b""
            if not created:
                last = _last_line(self.path)
                if last:
                    try:
                        held = json.loads(last).get("number")
                    except (ValueError, AttributeError):
                        held = None
                    if held == number:
                        if last != line:
                            raise AnchorStoreError(f"{self.name} holds another anchor {number}")
                        return
                    with self.path.open("rb") as file:
                        file.seek(-1, os.SEEK_END)
                        if file.read(1) != b"\n":  # a line cut short by a crash
                            prefix = b"\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                data = memoryview(prefix + line.encode() + b"\n")
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                folder = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except OSError as exc:
            raise AnchorStoreError(f"{self.name}: {exc.strerror or exc}") from exc

    def last(self) -> str | None:
        try:
            return _last_line(self.path) or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AnchorStoreError(f"{self.name}: {exc.strerror or exc}") from exc

    def read(self) -> list[str] | None:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AnchorStoreError(f"{self.name}: {exc.strerror or exc}") from exc


ANCHOR_TABLE = "firefly_audit_anchor"


class DatabaseStore:
    """A table in a database of its own (PostgreSQL or SQLite URL), created if missing;
    one row per anchor, keyed by its number."""

    def __init__(self, url: str) -> None:
        self.config = environ.Env.db_url_config(url)
        engine = self.config.get("ENGINE", "")
        if engine.endswith("sqlite3"):
            self.vendor = "sqlite"
        elif engine.endswith("postgresql"):
            self.vendor = "postgresql"
        else:
            raise ImproperlyConfigured(
                "FIREFLY_ANCHOR_DATABASE_URL must be a postgres:// or sqlite:// URL."
            )
        host = self.config.get("HOST") or ""
        self.name = f"anchor database {self.config.get('NAME')}" + (f" on {host}" if host else "")

    def _connect(self) -> Any:
        if self.vendor == "sqlite":
            return sqlite3.connect(self.config["NAME"], timeout=30, isolation_level=None)
        options = {
            "dbname": self.config.get("NAME"),
            "user": self.config.get("USER"),
            "password": self.config.get("PASSWORD"),
            "host": self.config.get("HOST"),
            "port": self.config.get("PORT"),
        }
        return psycopg.connect(autocommit=True, **{k: v for k, v in options.items() if v})

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.vendor == "sqlite" else sql

    def append(self, number: int, line: str) -> None:
        insert = (
            f"INSERT OR IGNORE INTO {ANCHOR_TABLE} (number, line) VALUES (?, ?)"
            if self.vendor == "sqlite"
            else f"INSERT INTO {ANCHOR_TABLE} (number, line) VALUES (%s, %s)"
            " ON CONFLICT (number) DO NOTHING"
        )
        try:
            db = self._connect()
            try:
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {ANCHOR_TABLE} "
                    "(number bigint PRIMARY KEY, line text NOT NULL)"
                )
                db.execute(insert, (number, line))
                (held,) = db.execute(
                    self._sql(f"SELECT line FROM {ANCHOR_TABLE} WHERE number = %s"),
                    (number,),
                ).fetchone()
            finally:
                db.close()
        except (psycopg.Error, sqlite3.Error) as exc:
            raise AnchorStoreError(f"{self.name}: {exc}") from exc
        if held != line:
            raise AnchorStoreError(f"{self.name} holds another anchor {number}")

    def last(self) -> str | None:
        lines = self._select(f"SELECT line FROM {ANCHOR_TABLE} ORDER BY number DESC LIMIT 1")
        return lines[0] if lines else None

    def read(self) -> list[str] | None:
        return self._select(f"SELECT line FROM {ANCHOR_TABLE} ORDER BY number")

    def _select(self, sql: str) -> list[str] | None:
        try:
            db = self._connect()
            try:
                rows = db.execute(sql).fetchall()
            finally:
                db.close()
        except (psycopg.errors.UndefinedTable, sqlite3.OperationalError) as exc:
            if "no such table" in str(exc) or isinstance(exc, psycopg.errors.UndefinedTable):
                return None
            raise AnchorStoreError(f"{self.name}: {exc}") from exc
        except psycopg.Error as exc:
            raise AnchorStoreError(f"{self.name}: {exc}") from exc
        return [line for (line,) in rows]


def stores() -> list[Store]:
    """The configured stores; the settings refuse a configuration with none."""
    found: list[Store] = []
    if settings.FIREFLY_ANCHOR_FILE:
        found.append(FileStore(settings.FIREFLY_ANCHOR_FILE))
    if settings.FIREFLY_ANCHOR_DATABASE_URL:
        found.append(DatabaseStore(settings.FIREFLY_ANCHOR_DATABASE_URL))
    if not found:
        raise ImproperlyConfigured("Set FIREFLY_ANCHOR_FILE or FIREFLY_ANCHOR_DATABASE_URL.")
    return found
