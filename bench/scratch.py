"""A scratch PostgreSQL database for a benchmark, shared by ``bench.http`` and
``bench.bulk_import``: created on the local server, dropped afterwards.

The server is the one ``BENCH_POSTGRES_ADMIN`` names (a libpq connection string, default
``host=127.0.0.1 user=postgres dbname=postgres``); the scratch database is reached as the same
user on the same host and port.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

ADMIN_DEFAULT: Final = "host=127.0.0.1 user=postgres dbname=postgres"
NAME: Final = re.compile(r"[a-z_][a-z0-9_]*")


def admin_conninfo() -> str:
    """Return the connection string of the server's maintenance database."""
    return os.environ.get("BENCH_POSTGRES_ADMIN", ADMIN_DEFAULT)


def database_url(admin: str, name: str) -> str:
    """Return the SQLAlchemy URL of database ``name`` on the server ``admin`` connects to."""
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    params = conninfo_to_dict(admin)
    port = params.get("port")
    return URL.create("postgresql+psycopg", username=str(params.get("user") or "postgres"),
                      password=None if params.get("password") is None
                      else str(params["password"]),
                      host=str(params.get("host") or "127.0.0.1"),
                      port=int(port) if port else 5432,
                      database=name).render_as_string(hide_password=False)


@contextmanager
def scratch_postgres(name: str) -> Iterator[str | None]:
    """Yield the URL of a fresh PostgreSQL database named ``name`` and this process's id on
    the local server (None if the server is unreachable), dropped afterwards. The process id
    keeps two runs of one benchmark at once (two checkouts on one machine) from dropping each
    other's database."""
    import psycopg

    if not NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    name = f"{name}_{os.getpid()}"
    admin = admin_conninfo()
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError:
        yield None
        return
    try:
        yield database_url(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
