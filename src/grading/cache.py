"""The base of the project's on-disk caches (embeddings, parsed spans, LLM replies): one sqlite file each."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

_SQLITE_MAX_PARAMS = 900  # below sqlite's default limit on bound parameters per statement


class SqliteCache:
    """A sqlite table safe across threads (one lock around the connection) and processes (WAL journal)."""

    def __init__(self, path: str | Path, schema: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(schema)
        self._db.commit()

    def _select_keys(self, query: str, keys: Sequence[str]) -> Iterator[tuple]:
        """Rows of ``query``, whose ``{marks}`` stands for the placeholders of a ``key IN (...)`` list."""
        with self._lock:
            rows = []
            for start in range(0, len(keys), _SQLITE_MAX_PARAMS):
                chunk = list(keys[start:start + _SQLITE_MAX_PARAMS])
                rows += self._db.execute(query.format(marks=",".join("?" * len(chunk))), chunk).fetchall()
        yield from rows

    def _write(self, statement: str, rows: Iterable[tuple]) -> None:
        with self._lock:
            self._db.executemany(statement, list(rows))
            self._db.commit()


def missing_after_cache(keys: Sequence[str], memory: dict[str, Any], cache: Any | None) -> list[str]:
    """The distinct ``keys`` in neither ``memory`` nor the on-disk ``cache`` (whose hits are copied into
    ``memory``), in first-seen order: what the caller still has to compute."""
    missing = [k for k in dict.fromkeys(keys) if k not in memory]
    if missing and cache is not None:
        memory.update(cache.get_many(missing))
        missing = [k for k in missing if k not in memory]
    return missing
