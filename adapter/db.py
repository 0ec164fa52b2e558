"""Database engine and sessions from ``GATEWAY_DATABASE_URL``; migrations with Alembic.

Flask is imported only by the web layer's ``get_db`` at the end.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Select, create_engine, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from adapter.settings import Settings

if TYPE_CHECKING:
    from flask import Flask

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Writes what a transaction gathered in its session's ``info`` (audit records, deliveries) on a
# connection, popping it: ``adapter.security.audit.write_gathered``, handed in when that module
# is imported (the security layer sits above this one: docs/architecture.md "Layers").
GatheredWriter = Callable[[Connection, dict[str, Any]], None]
_gathered_writer: list[GatheredWriter] = []
# Records, after a write transaction was rolled back by ``error``, what the error's answer
# itself discloses (a 409 naming the live entry that holds an NHS number):
# ``adapter.security.audit.record_refusal_disclosure``, handed in likewise.
RefusalRecorder = Callable[["Database", BaseException], None]
_refusal_recorder: list[RefusalRecorder] = []


T = TypeVar("T")


def built_once(build: Callable[..., T]) -> Callable[..., T]:
    """Return ``build`` remembering its value for each tuple of arguments, built once per
    process even when threads first ask for it together (``functools.cache`` may build it
    in each of them and keep the last).

    For SQL statements kept for the life of the process this matters: SQLAlchemy keeps one
    compiled form per statement shape, made from the first statement object executed; a
    statement that is an equal copy of it finds that form but has its result columns
    matched against the copy's again on every execution (``CursorResultMetaData.
    _adapt_to_context``; SQLAlchemy "SQL Compilation Caching"), which in a served read by id,
    132 columns, was the largest single cost (docs/scale.md "Reads").
    """
    built: dict[tuple[Hashable, ...], T] = {}
    lock = threading.Lock()

    @functools.wraps(build)
    def once(*args: Hashable) -> T:
        try:
            return built[args]
        except KeyError:
            pass
        with lock:
            if args not in built:
                built[args] = build(*args)
            return built[args]

    return once


@dataclass(frozen=True)
class DriverStatement:
    """A SELECT kept for the process, compiled once for a dialect and run on the driver's own
    cursor in a session's transaction: its SQL, its parameters' order (positional drivers)
    or None (named), the values of its fixed parameters, and the result processors of the
    columns that have one (SQLite's dates and booleans; psycopg returns Python values).

    For the hottest read (one entry by id): SQLAlchemy's execution of a cached statement
    looks its compiled form up by a key it hashes anew on every execution, then builds an
    execution context and a result around the cursor, which for the entry's 132 columns
    cost more than the database's own work (docs/scale.md "Reads")."""

    sql: str
    order: tuple[str, ...] | None
    fixed: dict[str, Any]
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]

    def rows(self, session: Session, values: dict[str, Any]) -> list[Sequence[Any]]:
        """Return the rows of the statement for ``values`` (with the fixed parameters), run
        in ``session``'s transaction; a driver error is raised as SQLAlchemy raises it
        (``DBAPIError``), which the HTTP layer answers (503 for a database that is gone)."""
        connection = session.connection()
        params: dict[str, Any] = {**self.fixed, **values}
        raw: Any = connection.connection.driver_connection
        driver_error = connection.dialect.loaded_dbapi.Error
        try:
            with closing(raw.cursor()) as cursor:
                cursor.execute(self.sql, params if self.order is None
                               else tuple([params[key] for key in self.order]))
                rows: list[Any] = cursor.fetchall()
        except driver_error as error:
            raise DBAPIError.instance(self.sql, None, error, driver_error) from error
        return rows if not self.processors else [self._processed(row) for row in rows]

    def _processed(self, row: Sequence[Any]) -> list[Any]:
        """Return ``row`` with its columns' result processors applied."""
        values = list(row)
        for index, process in self.processors:
            if values[index] is not None:
                values[index] = process(values[index])
        return values


@built_once
def driver_form(statement: Select[Any], dialect: Dialect, *given: str) -> DriverStatement:
    """Return ``statement`` compiled for ``dialect`` to run on the driver; ``given`` names the
    parameters each execution gives (the others keep the values the statement holds)."""
    compiled = statement.compile(dialect=dialect)
    processors = []
    for index, column in enumerate(statement.selected_columns):
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            processors.append((index, process))
    order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    fixed = dict(compiled.construct_params(dict.fromkeys(given)))
    return DriverStatement(compiled.string, order, fixed, tuple(processors))


def set_gathered_writer(writer: GatheredWriter) -> None:
    """Make ``writer`` what ``Database.read_transaction`` writes gathered rows with."""
    _gathered_writer[:] = [writer]


def set_refusal_recorder(recorder: RefusalRecorder) -> None:
    """Make ``recorder`` what a write transaction rolled back by an error calls, once its
    lock is released, with the error."""
    _refusal_recorder[:] = [recorder]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Enforce foreign keys and use WAL with a busy timeout on every SQLite connection.

    The driver's own transaction handling is switched off so that SQLAlchemy's BEGIN (below)
    starts every transaction (SQLAlchemy docs, "Serializable isolation / Savepoints /
    Transactional DDL" for pysqlite).
    """
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _query_only(dbapi_connection: Any, _record: Any) -> None:
    """Refuse every write on a connection of read transactions (SQLite ``PRAGMA query_only``):
    a read transaction that wrote would take the write lock unqueued and fail on a stale
    snapshot under load; refused, it fails at once, in the tests."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


class _ResultView:
    """A psycopg cursor as it stood when its ``description`` was asked for: that result, the
    cursor's adapters and encoding (which do not change with the result) read live."""

    def __init__(self, cursor: psycopg.Cursor[Any], result: Any) -> None:
        self._cursor = cursor
        self.pgresult = result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _Description(Sequence[psycopg.Column]):
    """The DB-API ``description`` of a result, each column's ``psycopg.Column`` made only when
    the description is first read through.

    SQLAlchemy asks every cursor for its description but, once a compiled statement's result
    metadata is cached, only tells None from a description (``DefaultExecutionContext.
    _setup_result_proxy``, ``CursorResult._init_metadata``); psycopg builds one ``Column`` per
    column on every ask, which for the 132 columns of an entry's SELECT
    (``adapter.store.rows``) was the larger part of loading it (docs/scale.md "Reads")."""

    def __init__(self, view: _ResultView, count: int) -> None:
        self._view = view
        self._count = count
        self._columns: list[psycopg.Column] | None = None

    def _made(self) -> list[psycopg.Column]:
        """Return the columns, made on the first call."""
        if self._columns is None:
            view: Any = self._view
            self._columns = [psycopg.Column(view, index) for index in range(self._count)]
        return self._columns

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> psycopg.Column: ...

    @overload
    def __getitem__(self, index: slice) -> list[psycopg.Column]: ...

    def __getitem__(self, index: int | slice) -> psycopg.Column | list[psycopg.Column]:
        return self._made()[index]

    def __iter__(self) -> Iterator[psycopg.Column]:
        return iter(self._made())

    def __repr__(self) -> str:
        return repr(self._made())


class DescribedOnDemand(psycopg.Cursor[Any]):
    """The cursor of PostgreSQL connections (``make_engine``): psycopg's, with a description
    whose columns are made only when read (``_Description``)."""

    @property
    def description(self) -> Any:
        """The columns of the current result, None when it returned no rows (DB-API)."""
        result = self.pgresult
        if result is None or not result.nfields:  # psycopg's own rules for these
            return super().description
        return _Description(_ResultView(self, result), result.nfields)


def make_engine(url: str, *, immediate: bool = False, read_only: bool = False,
                **kwargs: Any) -> Engine:
    """Create an engine for ``url``; SQLite files get their folder and pragmas.

    ``immediate``: SQLite transactions take the write lock at BEGIN, so that concurrent
    writers queue (busy timeout) instead of failing on a stale read snapshot.
    ``read_only``: SQLite connections refuse writes (``_query_only``).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        if read_only:
            event.listen(engine, "connect", _query_only)
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        # On the driver's connection itself: this runs twice on every read (its snapshot,
        # then its audit write), and ``exec_driver_sql`` would build a SQLAlchemy execution
        # context for a statement that returns nothing.
        event.listen(engine, "begin",
                     lambda conn: conn.connection.driver_connection.execute(begin))
        return engine
    # No pre-ping (a round trip per checkout on the hot path): connections are recycled
    # instead, and a connection lost to a server restart answers one 503 (adapter.http).
    connect_args = {"cursor_factory": DescribedOnDemand, **kwargs.pop("connect_args", {})}
    return create_engine(url, pool_recycle=1800, connect_args=connect_args, **kwargs)


class WriterQueue:
    """Queues SQLite writers of all threads and processes on one lock file, in arrival order.

    SQLite's own busy handler polls with sleeps of up to 100 ms, which makes writers that
    meet under load wait far longer than the write takes; an exclusive ``flock`` on a lock
    file beside the database (one per process, plus a thread lock, since flock is per open
    file) hands the lock over at once. A writer that ignores the file still meets SQLite's
    own locking, so this is an optimisation, never the guarantee.

    The file stays open for the process (opening it cost a system call pair per write), as a
    bare descriptor closed when the queue is closed or collected; a process forked from one
    that opened it opens its own, since a forked child shares its parent's open file and so
    its flock (flock(2)).
    """

    def __init__(self, url: str) -> None:
        database = make_url(url).database
        self.path = f"{database}.writers" if database and database != ":memory:" else None
        self.thread_lock = threading.Lock()
        self.handle: int | None = None
        self.opened_by = 0  # the process that opened ``handle``
        self.closer: Callable[[], object] | None = None

    def __enter__(self) -> None:
        self.thread_lock.acquire()
        if self.path is None:
            return
        try:
            fcntl.flock(self._file(self.path), fcntl.LOCK_EX)
        except OSError:
            self.thread_lock.release()
            raise

    def __exit__(self, *_exc: object) -> None:
        try:
            if self.handle is not None:
                fcntl.flock(self.handle, fcntl.LOCK_UN)
        finally:
            self.thread_lock.release()

    def _file(self, path: str) -> int:
        """Return this process's open lock file (under the thread lock)."""
        if self.handle is None or self.opened_by != os.getpid():
            # An inherited descriptor is closed in this process only: the parent's own still
            # holds its lock (flock(2): released when all duplicates are closed).
            self._close_own()
            self.handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                                  0o644)
            self.opened_by = os.getpid()
            self.closer = weakref.finalize(self, os.close, self.handle)
        return self.handle

    def _close_own(self) -> None:
        """Close the descriptor held, if any."""
        if self.closer is not None:
            self.closer()
        self.handle, self.closer = None, None

    def close(self) -> None:
        """Close this process's lock file (it is opened again by the next writer)."""
        with self.thread_lock:
            self._close_own()


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.write_engine = (make_engine(url, immediate=True, **engine_kwargs)
                             if self.is_sqlite else self.engine)
        self.write_sessions = sessionmaker(self.write_engine, expire_on_commit=False)
        self.writer_queue = WriterQueue(url) if self.is_sqlite else None
        self.read_engine = (make_engine(url, read_only=True, **engine_kwargs)
                            if self.is_sqlite else self.engine)
        self.read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        self.closed = False

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session in a transaction: committed on success, rolled back on error."""
        with self.sessions.begin() as session:
            yield session

    @contextmanager
    def write_transaction(self) -> Iterator[Session]:
        """Yield a session in a transaction that will write (on SQLite: BEGIN IMMEDIATE
        behind the writer queue).

        A transaction that reads and then writes uses this: on SQLite a deferred transaction
        that reads and then writes fails with "database is locked" when another writer
        committed in between (SQLite "WAL mode", busy snapshot), whereas BEGIN IMMEDIATE queues
        behind the busy timeout. A read of a child's data, which only writes its audit records
        and deliveries, uses ``read_transaction``.
        """
        try:
            if self.writer_queue is None:
                with self.write_sessions.begin() as session:
                    yield session
                return
            with self.writer_queue, self.write_sessions.begin() as session:
                yield session
        except Exception as error:
            self.record_refusal(error)
            raise

    def record_refusal(self, error: BaseException) -> None:
        """Record what the answer to ``error``, which rolled back a write transaction, will
        disclose (``set_refusal_recorder``), in a transaction of its own: the rolled-back one
        took its records with it, the writer lock is free again, and the answer is made only
        after this returns."""
        if _refusal_recorder:
            _refusal_recorder[0](self, error)

    @contextmanager
    def read_transaction(self) -> Iterator[Session]:
        """Yield a session for a read of a child's data, whose writes (its audit records and
        deliveries, gathered in ``session.info`` by ``adapter.security.audit`` and
        ``adapter.security.ledger``) are committed before the block's result is returned, so
        before any response made of it is sent (docs/architecture.md "Audit before the
        answer"). An error in the block writes nothing.

        PostgreSQL: one transaction; the gathered rows are written just before its COMMIT.
        SQLite: the read runs in a deferred (read) transaction on a connection that refuses
        writes, without the writer lock, concurrently with other reads; the read snapshot is
        then ended and the gathered rows written on a plain connection of the write engine, in
        a fresh ``BEGIN IMMEDIATE`` behind the writer queue held only for that write, by the
        same Core statements a session's commit writes them with (``set_gathered_writer``).
        (Writing in the read transaction itself would fail with SQLITE_BUSY_SNAPSHOT whenever
        another writer committed since it began: SQLite "WAL mode", section 2.2.) A block that
        gathered nothing takes no lock.
        """
        if not self.is_sqlite:
            with self.write_transaction() as session:
                yield session
            return
        with self.read_sessions() as reader:
            with reader.begin():
                yield reader
                gathered = dict(reader.info)
                reader.info.clear()
        if any(gathered.values()):
            self.write_gathered(gathered)

    def write_gathered(self, gathered: dict[str, Any]) -> None:
        """Commit what a read gathered in a ``BEGIN IMMEDIATE`` transaction of its own, behind
        the writer queue (SQLite)."""
        if not _gathered_writer:
            raise RuntimeError("rows were gathered but no writer is set (set_gathered_writer)")
        with self.writer_queue or nullcontext(), self.write_engine.begin() as connection:
            _gathered_writer[0](connection, gathered)

    def ping(self) -> bool:
        """Return True when the database answers a trivial query."""
        with self.engine.connect() as connection:
            return connection.execute(text("SELECT 1")).scalar() == 1

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the database to ``revision`` with Alembic."""
        with self.engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def dispose(self) -> None:
        """Close every pooled connection (the database stays usable: new ones are opened)."""
        self.engine.dispose()
        self.write_engine.dispose()
        self.read_engine.dispose()

    def close(self) -> None:
        """Dispose of the connections for good: background work that holds this database (the
        harvesting sweep, ``adapter/security/limits.py``) leaves it alone from now on."""
        self.closed = True
        self.dispose()
        if self.writer_queue is not None:
            self.writer_queue.close()


def alembic_config() -> Config:
    """Return the Alembic configuration of the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def connect(settings: Settings) -> Database:
    """Return the Database of ``settings`` (``GATEWAY_DATABASE_URL``): what the app factory
    and the command line processes open."""
    return Database(settings.database_url)


def init_app(app: Flask, settings: Settings) -> None:
    """Attach the Database of ``settings`` to ``app`` (web layer)."""
    app.extensions["db"] = connect(settings)


def get_db() -> Database:
    """Return the current application's Database (web layer and commands run in an app)."""
    from flask import current_app

    db: Database = current_app.extensions["db"]
    return db
