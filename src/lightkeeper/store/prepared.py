"""Statements run straight on the driver: the few a refresh run makes for every connection.

SQLAlchemy builds them (one definition; every dialect difference stays in ``dialect``) and compiles them once
per engine. Running them through a SQLAlchemy ``Connection`` cost more CPU than the database's own work did:
about 70 µs a statement in execution contexts, parameter and result processing, and pool check-out, which was
a third of a refresh on SQLite (``bench cpu``). A ``Prepared`` statement keeps its SQL, its parameter order and
its types' bind and result processors (SQLAlchemy's public ``TypeEngine`` API), and runs on a DBAPI connection
from the engine's pool. Driver errors still surface as SQLAlchemy's ``DBAPIError`` subclasses, as everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Column, Engine
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

Processor = Callable[[Any], Any]


class Prepared:
    """One statement compiled for ``engine``'s dialect; ``returns`` names the columns of its RETURNING clause."""

    def __init__(self, engine: Engine, statement: ClauseElement, returns: Iterable[Column[Any]] = ()) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("a Prepared statement cannot expand parameters (IN lists): use equalities")
        self.sql = compiled.string
        self._positional = compiled.positional
        self._names: Sequence[str] = list(compiled.positiontup or ())
        #: The statement's own values (``.values(status=…)``, a ``LIMIT``), processed once; then the parameters
        #: each execution gives, by key, with the name the SQL uses and their type's processor.
        self._constants: dict[str, Any] = {}
        self._inputs: list[tuple[str, str, Processor | None]] = []
        for bind, name in compiled.bind_names.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                self._inputs.append((bind.key, name, process))
            else:
                value = bind.effective_value
                self._constants[name] = value if process is None else process(value)
        self._columns = [column.name for column in returns]
        self._results = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in returns]

    def parameters(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        """The driver's parameters: the statement's own constants, then ``values``, each through its type."""
        full = dict(self._constants)
        for key, name, process in self._inputs:
            value = values[key]
            full[name] = value if process is None else process(value)
        if self._positional:
            return [full[name] for name in self._names]
        return full

    def run(self, cursor: DBAPICursor, values: Mapping[str, Any]) -> int:
        """Execute; the number of rows changed."""
        cursor.execute(self.sql, self.parameters(values))
        return int(cursor.rowcount)

    def first(self, cursor: DBAPICursor, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """Execute; the first row returned, by column name, or None."""
        cursor.execute(self.sql, self.parameters(values))
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.fetchall()  # a driver may need the rest read before its next statement
        processed = [
            value if process is None else process(value) for process, value in zip(self._results, row, strict=True)
        ]
        return dict(zip(self._columns, processed, strict=True))


@contextmanager
def transaction(engine: Engine) -> Iterator[DBAPICursor]:
    """A cursor in one transaction on a pooled DBAPI connection: committed at the end, rolled back on error."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            yield cursor
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            cursor.close()
    except engine.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(None, None, exc, engine.dialect.loaded_dbapi.Error) from exc
    finally:
        connection.close()  # back to the pool


__all__ = ["Prepared", "transaction"]
