"""What every part of the store shares: the engine, one short transaction, one move.

The exactly-once rule every feature keeps: a step that must happen once is one
conditional ``UPDATE ... WHERE state = <old>`` (``_move``, checked against the lifecycle
table), and the caller acts only when it changed a row. A move to ``sending`` also
writes this process's incarnation (``intent_owner``): whoever finds the intent open can
tell whether the process making the run call still lives.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.lifecycle import RequestState, State, check
from bot.store.schema import add_missing_columns, create_tables, make_engine


class StoreBase:
    """The engine, whether it is PostgreSQL, this process's incarnation (``owner``), and
    ``_tx`` and ``_move``, which every feature's queries use."""

    def __init__(self, engine: Engine, *, owner: str | None = None) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        # this process's incarnation (see ``processes``): written with every intent it
        # opens, so whoever finds the intent can tell whether its owner still lives
        self.owner = owner

    @classmethod
    def from_url(cls, url: str, *, threads: int = 10) -> Self:
        store = cls(make_engine(url, threads=threads))
        store.create_tables()
        return store

    def create_tables(self) -> None:
        create_tables(self.engine)

    def _add_missing_columns(self) -> None:
        """Databases made by an older version lack the newer (always nullable) columns."""
        add_missing_columns(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _move(self, c: Connection, table: sa.Table, column: sa.Column[Any], id: str,
              old: State, new: State, values: dict[str, Any],
              *conditions: sa.ColumnElement[bool]) -> bool:
        """The one way a state changes: allowed by the lifecycle table, and made by this
        call only if the row was still in ``old``."""
        check(old, new)
        if new is RequestState.SENDING:  # an intent: this process makes the run call
            values = {**values, "intent_owner": self.owner}
        q = (table.update().where(table.c.id == id, column == old.value, *conditions)
             .values({column.name: new.value, **values}))
        return bool(c.execute(q).rowcount == 1)
