"""Engines and migrations for the metadata store.

Owns: database URL resolution (explicit > ``$SPHERE_DATABASE_URL`` > SQLite in
``$SPHERE_HOME``; ``postgresql://`` and ``postgres://`` mean psycopg 3), password-free URLs
for messages, engine creation (SQLite: WAL, busy timeout, foreign keys, ``BEGIN IMMEDIATE``
for writes, transactional DDL), turning driver failures (missing driver, damaged or
unwritable SQLite file, unreachable server) into one-line ``StoreError``s that name the
database and what to do, and running the packaged Alembic migrations programmatically under
a cross-process lock (a file lock on SQLite, an advisory lock on PostgreSQL). Does not own
queries (``repo.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, make_url

from sphere_core.errors import StoreError
from sphere_core.locks import file_lock
from sphere_core.paths import default_database_url, sphere_home

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
SQLITE_BUSY_TIMEOUT_S = 30.0
WRITE_OPTION = "sphere_write"
"""Execution option: on SQLite, transactions on such connections start with BEGIN IMMEDIATE."""


_PG_SCHEME = re.compile(r"^(?:postgres|postgresql|postgres\+psycopg)(?=://)")
PG_DRIVER = "postgresql+psycopg"


def normalize_database_url(url: str) -> str:
    """``postgresql://``, ``postgres://`` (and ``postgres+psycopg://``) -> ``postgresql+psycopg://``:
    SPHERE ships psycopg 3, not SQLAlchemy's default PostgreSQL driver (psycopg2)."""
    return _PG_SCHEME.sub(PG_DRIVER, url.strip(), count=1)


def resolve_database_url(database_url: str | None = None, home: Path | None = None) -> str:
    """Explicit URL > ``$SPHERE_DATABASE_URL`` > ``sqlite:///$SPHERE_HOME/sphere.db``."""
    url = database_url or os.environ.get("SPHERE_DATABASE_URL")
    if url:
        return normalize_database_url(url)
    return default_database_url(Path(home) if home is not None else sphere_home())


def redact_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparsable database URL>"


def _parse(url: str) -> URL:
    """A supported URL whose driver is installed and synchronous; else a StoreError."""
    try:
        parsed = make_url(normalize_database_url(url))
    except exc.ArgumentError as err:
        raise StoreError(f"invalid database URL {redact_url(url)!r}: {_first_line(err)}") from err
    shown = redact_url(parsed)
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StoreError(f"unsupported database {shown}: use sqlite:/// or postgresql+psycopg://")
    try:
        dialect = parsed.get_dialect()
    except exc.NoSuchModuleError as err:
        raise StoreError(
            f"unknown database driver {parsed.get_driver_name()!r} in {shown}: "
            "use sqlite:/// or postgresql+psycopg://"
        ) from err
    if getattr(dialect, "is_async", False):
        raise StoreError(
            f"database driver {parsed.get_driver_name()!r} in {shown} is asynchronous, which "
            "SPHERE does not use: use sqlite:/// or postgresql+psycopg://"
        )
    try:
        dialect.import_dbapi()
    except ImportError as err:
        module = getattr(err, "name", None) or parsed.get_driver_name()
        raise StoreError(
            f"the database driver for {shown} is not installed (no module {module!r}): "
            "use postgresql+psycopg:// (psycopg 3 ships with SPHERE) or sqlite:///"
        ) from err
    return parsed


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _sqlite_path(url: URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser().resolve()


def _enable_wal(cur: Any) -> None:
    """Switch the file to WAL once. The switch needs a lock that SQLite does not wait for
    through busy_timeout ("database is locked" at once when another process connects at the
    same moment), so it is retried here for up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode")
            if str(cur.fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err).lower() and "busy" not in str(err).lower():
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _install_sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(cur)
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that later upgrades
        # to a writer fails at once with "database is locked" when another process wrote
        # meanwhile (busy_timeout does not apply to that case).
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _what_to_do(path: Path) -> str:
    if path.name == "sphere.db":  # the default file in $SPHERE_HOME
        return (
            "set SPHERE_HOME to a writable directory, or point --database-url / "
            "SPHERE_DATABASE_URL at another database"
        )
    return "point --database-url / SPHERE_DATABASE_URL at a database in a writable directory"


def _prepare_sqlite_dir(path: Path) -> None:
    """Create the SQLite file's directory; a StoreError naming the file when that cannot work."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        blocker = next(
            (p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), parent
        )
        raise StoreError(
            f"cannot create SQLite database {path}: {blocker} is not a directory; "
            f"{_what_to_do(path)}"
        ) from err
    except OSError as err:
        raise StoreError(
            f"cannot create directory {parent} for SQLite database {path}: "
            f"{err.strerror or err}; {_what_to_do(path)}"
        ) from err
    if path.exists() and not path.is_file():
        raise StoreError(f"SQLite database {path} is not a file; {_what_to_do(path)}")


def make_engine(database_url: str) -> Engine:
    """An Engine for a supported URL; creates the SQLite file's directory."""
    url = _parse(database_url)
    serializer = lambda obj: json.dumps(obj, default=str)
    if url.get_backend_name() == "sqlite":
        path = _sqlite_path(url)
        if path is not None:
            _prepare_sqlite_dir(path)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
            json_serializer=serializer,
        )
        _install_sqlite_events(engine)
        return engine
    connect_args = {"connect_timeout": 10} if url.get_driver_name() == "psycopg" else {}
    return create_engine(
        url, pool_pre_ping=True, connect_args=connect_args, json_serializer=serializer
    )


_SQLITE_DAMAGED = ("file is not a database", "malformed", "not a database", "file is encrypted")
_SQLITE_UNWRITABLE = (
    "unable to open database file",
    "readonly database",
    "read-only",
    "permission denied",
    "disk i/o error",
)


def sqlite_problem(url: str | URL, reason: str) -> str | None:
    """A what-to-do message for a damaged or unwritable SQLite file, else None."""
    parsed = make_url(url) if isinstance(url, str) else url
    path = _sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is None:
        return None
    low = reason.lower()
    if any(s in low for s in _SQLITE_DAMAGED):
        return (
            f"SQLite database {path} is damaged ({reason}): move it aside (e.g. `mv {path} "
            f"{path}.damaged`) and run `sphere db upgrade` to start an empty store, or point "
            "--database-url / SPHERE_DATABASE_URL at another database"
        )
    if any(s in low for s in _SQLITE_UNWRITABLE):
        return (
            f"cannot open SQLite database {path} ({reason}): make {path.parent} writable, "
            f"or {_what_to_do(path)}"
        )
    return None


def connection_error(url: str | URL, err: BaseException) -> StoreError:
    """A StoreError naming the (password-free) URL and the driver's first line of reason."""
    parsed = make_url(url) if isinstance(url, str) else url
    orig = getattr(err, "orig", None) or err
    reason = _first_line(orig)
    if parsed.password:
        reason = reason.replace(str(parsed.password), "***")
    return StoreError(
        sqlite_problem(parsed, reason)
        or f"cannot connect to database {redact_url(parsed)}: {reason}"
    )


def check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except exc.DBAPIError as err:
        raise connection_error(engine.url, err) from err


# -- migrations -------------------------------------------------------------------------------


def _alembic_config(database_url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise StoreError(
            f"migrations in {MIGRATIONS_DIR} have {len(heads)} heads {heads}; expected 1"
        )
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    """The revision stamped in the database, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
    except exc.DBAPIError as err:
        raise connection_error(engine.url, err) from err
    return heads[0] if heads else None


def _advisory_key(url: URL) -> int:
    digest = hashlib.sha256(f"sphere-migrate:{url.database}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def upgrade_database(
    database_url: str | None = None, *, engine: Engine | None = None, revision: str = "head"
) -> str | None:
    """``alembic upgrade <revision>`` on the database; safe to run from several processes.

    Returns the revision the database is at afterwards.
    """
    own_engine = engine is None
    engine = engine or make_engine(resolve_database_url(database_url))
    try:
        return _migrate(engine, "upgrade", revision)
    finally:
        if own_engine:
            engine.dispose()


def downgrade_database(
    database_url: str | None = None, *, engine: Engine | None = None, revision: str = "base"
) -> str | None:
    own_engine = engine is None
    engine = engine or make_engine(resolve_database_url(database_url))
    try:
        return _migrate(engine, "downgrade", revision)
    finally:
        if own_engine:
            engine.dispose()


def _migrate(engine: Engine, direction: str, revision: str) -> str | None:
    from alembic import command
    from alembic.util import CommandError

    url = engine.url
    cfg = _alembic_config(url.render_as_string(hide_password=False))
    path = _sqlite_path(url) if url.get_backend_name() == "sqlite" else None
    pg = url.get_backend_name() == "postgresql"
    with contextlib.ExitStack() as stack:
        if path is not None:
            try:
                stack.enter_context(file_lock(path.with_name(path.name + ".migrate.lock")))
            except OSError as err:
                raise StoreError(
                    f"cannot open SQLite database {path} (cannot create its migration lock: "
                    f"{err.strerror or err}): make {path.parent} writable, or {_what_to_do(path)}"
                ) from err
        try:
            conn = engine.connect()
        except exc.DBAPIError as err:
            raise connection_error(url, err) from err
        with conn:
            conn.execution_options(**{WRITE_OPTION: True})
            try:
                if pg:  # session-level lock, held across alembic's own transactions
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _advisory_key(url)})
                    conn.commit()
                try:
                    cfg.attributes["connection"] = conn
                    try:
                        getattr(command, direction)(cfg, revision)
                    except CommandError as err:  # e.g. stamped by a newer SPHERE
                        raise StoreError(
                            f"cannot {direction} {redact_url(url)} to {revision}: "
                            f"{_first_line(err)} (was it created by a newer SPHERE? "
                            "use that version or another database)"
                        ) from err
                    conn.commit()
                finally:
                    if pg:
                        conn.rollback()
                        conn.execute(
                            text("SELECT pg_advisory_unlock(:k)"), {"k": _advisory_key(url)}
                        )
                        conn.commit()
            except exc.DBAPIError as err:
                reason = _first_line(err.orig)
                problem = sqlite_problem(url, reason)
                if problem:
                    raise StoreError(problem) from err
                raise StoreError(
                    f"migrating {redact_url(url)} ({direction} {revision}) failed: {reason}"
                ) from err
    return current_revision(engine)
