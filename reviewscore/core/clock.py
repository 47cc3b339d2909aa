"""The database's clock as SQL expressions: every time stamp that another host judges (leases,
staleness, retention, a job's rate) is taken from the database server, never from the host
that writes it, because hosts' clocks drift."""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement


class db_now(FunctionElement[Any]):  # noqa: N801 - used like a SQL function
    """The database server's current time (UTC)."""

    type = DateTime(timezone=True)
    inherit_cache = True


class db_now_plus(FunctionElement[Any]):  # noqa: N801
    """The database server's current time plus a number of seconds (negative for the past)."""

    type = DateTime(timezone=True)
    inherit_cache = True


# SQLite keeps SQLAlchemy's own text format, so stamps written either way compare as text.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now'{})"


@compiles(db_now, "postgresql")
def _pg_now(_element: db_now, _compiler: Any, **_kw: Any) -> str:
    return "statement_timestamp()"


@compiles(db_now, "sqlite")
def _sqlite_now(_element: db_now, _compiler: Any, **_kw: Any) -> str:
    return _SQLITE_NOW.format("")


@compiles(db_now_plus, "postgresql")
def _pg_now_plus(element: db_now_plus, compiler: Any, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(statement_timestamp() + make_interval(secs => CAST({seconds} AS double precision)))"


@compiles(db_now_plus, "sqlite")
def _sqlite_now_plus(element: db_now_plus, compiler: Any, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return _SQLITE_NOW.format(f", printf('%+.3f seconds', {seconds})")
