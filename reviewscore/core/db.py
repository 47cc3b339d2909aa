"""The SQLAlchemy engine and sessions, tuned per backend (SQLite WAL with immediate writes, or
PostgreSQL with timeouts that cut a vanished host loose), and the database's own clock."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from reviewscore.core.settings import Settings, get_settings


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide when transactions begin (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_readonly_is_a_disconnect(context: Any) -> None:
    # A connection opened while the file could not be written (read-only mount, immutable
    # file) stays read-only for good, even once the file is writable again: drop the pool's
    # connections, so the next ones open read-write and writes recover as soon as the fault ends.
    if "attempt to write a readonly database" in str(context.original_exception):
        context.is_disconnect = True


def _sqlite_begin(conn: Any) -> None:
    # Take the write lock up front: a deferred transaction that reads and then writes can
    # fail with SQLITE_BUSY at once instead of waiting, when the API and workers write together.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin_deferred(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def postgres_connect_args(settings: Settings) -> dict[str, Any]:
    """libpq options so that no host can hold others up for long: a lock waited on too long
    fails the statement, a transaction left idle (its host cut off mid-way) is ended by the
    server, and a peer that stops answering is dropped by TCP within seconds on both ends."""
    tcp_ms = int(settings.db_tcp_timeout_s * 1000)
    server = {
        "lock_timeout": int(settings.db_lock_timeout_s * 1000),
        "idle_in_transaction_session_timeout": int(settings.db_idle_transaction_timeout_s * 1000),
        # The server's side of the same connection: it notices a silent client too.
        "tcp_keepalives_idle": 5,
        "tcp_keepalives_interval": 2,
        "tcp_keepalives_count": 3,
        "tcp_user_timeout": tcp_ms,
    }
    return {
        "connect_timeout": max(1, int(settings.db_tcp_timeout_s)),
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": tcp_ms,
        "options": " ".join(f"-c {name}={value}" for name, value in server.items()),
    }


def make_engine(url: str, *, for_writes: bool = True, settings: Settings | None = None) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "handle_error", _sqlite_readonly_is_a_disconnect)
        # Readers keep deferred transactions: under WAL they see a snapshot and never wait.
        event.listen(engine, "begin", _sqlite_begin if for_writes else _sqlite_begin_deferred)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        connect_args=postgres_connect_args(settings or get_settings()),
    )


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def get_read_engine() -> Engine:
    """Engine for read-only work; on PostgreSQL the same as get_engine()."""
    engine = get_engine()
    if not is_sqlite(engine):
        return engine
    return make_engine(get_settings().database_url, for_writes=False)


@lru_cache
def _session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None, *, readonly: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error."""
    engine = engine or (get_read_engine() if readonly else get_engine())
    session = _session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_engine_after_fork() -> None:
    """Forked worker processes must not share the parent's pooled connections."""
    for cached in (get_engine, get_read_engine):
        if cached.cache_info().currsize:
            cached().dispose(close=False)


def dialect_name(session: Session | Connection) -> str:
    """ "postgresql" or "sqlite", for a session or a connection."""
    bind = session.get_bind() if isinstance(session, Session) else session
    return bind.dialect.name


def insert_ignoring_conflicts(
    session: Session | Connection, table: Any, rows: Sequence[dict[str, Any]]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on both backends: re-runs write nothing twice."""
    if not rows:
        return
    dialect = dialect_name(session)
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        stmt = insert(table)
    session.execute(stmt, list(rows))


def copy_rows(
    session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """PostgreSQL's COPY FROM STDIN, in the session's transaction: one command for many rows,
    with far less work on the server than one INSERT per row (bench/coordination.py)."""
    import psycopg

    driver: Any = session.connection().connection.dbapi_connection  # a psycopg 3 connection
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        # The driver's own cursor: SQLAlchemy does not see its errors. Raised as SQLAlchemy
        # raises them (a full disk, a lock timeout or a lost server: OperationalError), so the
        # API answers 503 naming the database and the worker retries, as for any statement
        # (the chaos soak, seed 44677: uploads answered 500 while PostgreSQL's disk was full).
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


@contextmanager
def single_statement(engine: Engine | None = None) -> Iterator[Connection]:
    """A connection whose statements commit by themselves. On PostgreSQL it runs in autocommit
    mode, so the row locks a statement takes last only while it runs, never across a network
    round trip to the host that sent it; SQLite (one host) gets an ordinary short transaction."""
    engine = engine or get_engine()
    if is_sqlite(engine):
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn
