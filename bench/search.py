"""Search that stays flat (README "Benchmarks"): a family-name prefix search, a postcode search
(outward code and whole postcode) and a plain search page, at 2,000 children and at
``BENCH_SEARCH_CHILDREN`` (default 100,000), on SQLite and PostgreSQL, next to the figures
measured before the searches were answered from indexes; the goal is a search at the large
size within 1.5× of the small one.

Each directory is loaded once per run by ``demo-data``'s bulk path (with its ``ANALYZE``) into
a temporary SQLite file or a scratch PostgreSQL database (``bench.scratch``). The searches go
through the whole gateway in this process (Flask's test client: token check, search, disclosure,
audit record, rendering) as one authority's system, ``BENCH_SEARCH_REQUESTS`` (default 25)
distinct values each, and the page's SQL statement alone (what grows with the table); the
figures are medians in ms. The plan of each search's page statement is checked too: "index"
when the database reads no table whole.

    .venv/bin/python -m bench search            # or: BENCH_SEARCH_CHILDREN=20000 ...
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from adapter import create_app
from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.models import Child, ChildName
from bench.scratch import scratch_postgres

SMALL: Final = 2000
LARGE: Final = int(os.environ.get("BENCH_SEARCH_CHILDREN", "100000"))
REQUESTS: Final = int(os.environ.get("BENCH_SEARCH_REQUESTS", "25"))
AUTHORITIES: Final = 20
GOAL: Final = 1.5
CLI: Final = str(Path(sys.executable).parent / "contactpoint-gateway")
# Before (ms at 2,000 and at 100,000 children): the family-name search as the issue measured it
# over HTTP, the page on PostgreSQL without statistics; "-" where none was measured.
BASELINE: Final = {
    ("sqlite", "family name prefix"): (8.5, 117.0),
    ("postgresql", "family name prefix"): (17.9, 35.9),
}


@dataclass(frozen=True)
class Sample:
    """What the searches look for: one live child's family name and postcode."""

    family: str
    postcode: str


@dataclass(frozen=True)
class Directory:
    """A loaded directory and how to search it."""

    backend: str
    children: int
    client: FlaskClient
    headers: dict[str, str]
    db: Database
    samples: list[Sample]
    env: dict[str, str]

    def authorise(self) -> None:
        """Take a fresh access token (a slow figure outlasts one)."""
        token = cli(self.env, "token", "--client", "demo-la").strip()
        self.headers["Authorization"] = f"Bearer {token}"


def cli(env: dict[str, str], *args: str) -> str:
    """Run one ``contactpoint-gateway`` command; return its output."""
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"contactpoint-gateway {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def samples(db: Database) -> list[Sample]:
    """Return ``REQUESTS`` randomly chosen live children with a postcode."""
    with db.sessions() as session:
        rows = session.execute(select(ChildName.family_norm, Child.address_postcode)
                               .join(Child, Child.id == ChildName.child_id)
                               .where(Child.record_status == "live", ~Child.shielded,
                                      Child.address_postcode.is_not(None),
                                      ChildName.position == 0)).all()
    chosen = random.Random(2026).sample(rows, min(REQUESTS, len(rows)))
    return [Sample(str(family), str(postcode).replace(" ", "")) for family, postcode in chosen]


@contextmanager
def directory(backend: str, children: int, folder: Path) -> Iterator[Directory]:
    """Load ``children`` demo children into a fresh database; yield it served in-process."""
    with ExitStack() as stack:
        if backend == "sqlite":
            url: str | None = f"sqlite:///{folder / f'search-{children}.db'}"
        else:
            url = stack.enter_context(scratch_postgres(f"bench_search_{children}"))
            if url is None:
                raise SystemExit("no PostgreSQL server (BENCH_POSTGRES_ADMIN)")
        assert url is not None
        instance = folder / f"instance-{backend}-{children}"
        env = {**os.environ, "GATEWAY_DATABASE_URL": url,
               "GATEWAY_INSTANCE_PATH": str(instance), "GATEWAY_LOG_LEVEL": "WARNING"}
        db = Database(url)
        stack.callback(db.dispose)
        db.upgrade()
        started = time.perf_counter()
        load_demo_data(db, children=children, authorities=AUTHORITIES, seed=2026,
                       progress=False)
        print(f"  [{backend} {children:>7,}] loaded in {time.perf_counter() - started:.0f} s "
              "(demo-data with ANALYZE)", flush=True)
        cli(env, "clients", "ensure-demo")
        cli(env, "clients", "set-limits", "demo-la", "--rate-limit", "100000000")
        app: Flask = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(instance)})
        served: Database = app.extensions["db"]
        # Closed, not only disposed: the app's harvesting sweep (adapter/security/limits.py)
        # would otherwise reconnect to the scratch database after it is dropped.
        stack.callback(served.close)
        yield Directory(backend, children, app.test_client(),
                        {"Accept": "application/fhir+json"}, served, samples(db), env)


def timed(target: Directory, queries: list[str]) -> tuple[float, float]:
    """Run each search once (after one warm-up), then its page's statement alone; return the
    median latencies in ms of the requests and of the statements."""
    page_statement(target, queries[0])
    requests, statements = [], []
    for query in queries:
        started = time.perf_counter()
        statement, parameters = page_statement(target, query)
        requests.append((time.perf_counter() - started) * 1000)
        with target.db.engine.connect() as connection:
            started = time.perf_counter()
            connection.exec_driver_sql(statement, parameters).all()
            statements.append((time.perf_counter() - started) * 1000)
    return statistics.median(requests), statistics.median(statements)


def page_statement(target: Directory, query: str) -> tuple[str, Any]:
    """Search; return the statement (and parameters) that selected the ids of its page.

    :raises SystemExit: the search failed.
    """
    seen: list[tuple[str, Any]] = []

    def collect(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("SELECT child.id") and "LIMIT" in statement:
            seen.append((statement, parameters))

    engines = {target.db.engine, target.db.write_engine, target.db.read_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", collect)
    try:
        answer = target.client.get(f"/fhir/Patient?{query}", headers=target.headers)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", collect)
    if answer.status_code != 200 or not seen:
        raise SystemExit(f"{query}: {answer.status_code} {answer.get_data(as_text=True)}")
    return seen[0]


def plan_uses_indexes(target: Directory, query: str) -> bool:
    """Return True when the database plans the search's page without reading a table whole."""
    statement, parameters = page_statement(target, query)
    with target.db.engine.connect() as connection:
        if target.db.is_sqlite:
            lines = [str(row[-1]) for row in connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters)]
            # A page with no criterion walks the table itself in rowid (= id) order, stopping
            # at the page's end: the primary key's b-tree.
            return lines == ["SCAN child"] or not any(
                line.startswith("SCAN") and "USING" not in line for line in lines)
        text = "\n".join(str(row[0]) for row in connection.exec_driver_sql(
            "EXPLAIN " + statement, parameters))
        return "Seq Scan" not in text


Searches = dict[str, Callable[[Sample], str]]
SEARCHES: Final[Searches] = {
    "family name prefix": lambda s: f"family={s.family[:3]}&_count=20",
    "postcode outward code": lambda s: f"address-postalcode={s.postcode[:-3]}&_count=20",
    "postcode whole": lambda s: f"address-postalcode={s.postcode}&_count=20",
    "page of 50": lambda _s: "_count=50",
    "family prefix + birth year": lambda s: f"family={s.family[:2]}&birthdate=ge2010&_count=20",
}


Figures = dict[str, tuple[float, float, bool]]


def measure(target: Directory) -> Figures:
    """Take each figure: (request ms, statement ms, planned from indexes)."""
    figures = {}
    for name, query in SEARCHES.items():
        queries = [query(s) for s in target.samples]
        target.authorise()
        indexed = plan_uses_indexes(target, queries[0])
        figures[name] = (*timed(target, queries), indexed)
        print(f"  [{target.backend} {target.children:>7,}] {name:<24} request "
              f"{figures[name][0]:8.2f} ms, statement {figures[name][1]:7.2f} ms, plan: "
              f"{'index' if indexed else 'SCAN'}", flush=True)
    return figures


def report(backend: str, small: Figures, large: Figures) -> None:
    """Print each figure at both sizes, the ratio and whether the goal is met, then the
    baseline."""
    print(f"\n{backend} (median ms)            {SMALL:>9,} {LARGE:>9,}  ratio  goal ≤{GOAL}×"
          "   baseline (ratio)")
    for name in small:
        for column, label in ((0, "request"), (1, "statement")):
            value, big = small[name][column], large[name][column]
            ratio = big / value if value else float("inf")
            verdict = "met" if ratio <= GOAL and large[name][2] else "NOT met"
            before = BASELINE.get((backend, name)) if column == 0 else None
            baseline = (f"{before[0]:.1f} → {before[1]:.1f} ({before[1] / before[0]:.1f}×)"
                        if before else "-")
            print(f"  {name + ' ' + label:<34} {value:9.2f} {big:9.2f}  {ratio:5.2f}  "
                  f"{verdict:<9}  {baseline}")


def main() -> None:
    """Measure both sizes on both databases."""
    print(f"{SMALL:,} and {LARGE:,} demo children over {AUTHORITIES} authorities; "
          f"{REQUESTS} searches per figure (median); load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
        for backend in ("sqlite", "postgresql"):
            figures = []
            for children in (SMALL, LARGE):
                with directory(backend, children, Path(folder)) as target:
                    figures.append(measure(target))
            report(backend, *figures)


if __name__ == "__main__":
    main()
