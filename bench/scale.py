"""Scale benchmark on PostgreSQL: the same measurements on a directory of 10,000 children and
of ``BENCH_SCALE_CHILDREN`` (default 100,000; the national figure is about 11 million, and
``BENCH_SCALE_CHILDREN=1000000`` is the run docs/scale.md quotes), over 150 authorities, with the
ratio of the large figure to the small one.

For each size, in a throw-away database: load (``demo-data``, children/s; then disk and index
sizes); served by the real gateway (gunicorn with ``bench.http``'s settings): read by id,
search by NHS number, by family + birthdate and by postcode (sequential requests with keep-alive,
p50/p99 over ``BENCH_SCALE_REQUESTS`` distinct children); a deep page (50 pages of 100, following
the keyset ``next`` links); one authority's ``Group/{id}/$export``; switch-off of a plan with 200
holding systems (purge Task creation from the delivery ledger) and the fan-out of their purge
instructions by two dispatchers to local receivers; destruction of the whole directory and the
no-personal-bytes check: every data file of the database scanned for recorded names, NHS
numbers and postcodes after ``VACUUM FULL``.

Run: ``BENCH_SCALE_CHILDREN=1000000 .venv/bin/python -m bench scale``. The scan reads the
PostgreSQL data directory, so it needs the server on this machine and read access to its files
(root on the project's machines); without it the check says it was not made.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

from bench.http import GUNICORN, free_port, served
from bench.notify import receivers
from bench.scratch import admin_conninfo, scratch_postgres

BIN = Path(sys.executable).parent
CLI = str(BIN / "contactpoint-gateway")
SMALL = 10_000
LARGE = int(os.environ.get("BENCH_SCALE_CHILDREN", "100000"))
AUTHORITIES = 150
HOLDERS = 200
REQUESTS = int(os.environ.get("BENCH_SCALE_REQUESTS", "300"))
PAGES = 50
PAGE_SIZE = 100
DISPATCHERS = 2
CANARIES = 25
OWN_SYSTEM = "https://fhir.contactpoint-gateway.example.org/Id"


@dataclass
class Figures:
    """What one size measured: name -> (value, unit, lower is better)."""

    children: int
    values: dict[str, tuple[float, str, bool]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, lower_better: bool = True) -> None:
        """Record one figure and print it as it comes."""
        self.values[name] = (value, unit, lower_better)
        print(f"  [{self.children:>9,}] {name:<46} {value:>12,.2f} {unit}", flush=True)


# --- the gateway's command line and server ----------------------------------------------------

def run_cli(env: dict[str, str], *args: str, check: bool = True) -> str:
    """Run one ``contactpoint-gateway`` command; return its standard output."""
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"contactpoint-gateway {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def cli_supports(env: dict[str, str], option: str, *command: str) -> bool:
    """Return True when ``command`` of the CLI has ``option`` (its --help names it)."""
    return re.search(rf"{re.escape(option)}(?![\w-])", run_cli(env, *command, "--help")) \
        is not None


def environment(url: str, instance: Path) -> dict[str, str]:
    """Return the gateway's environment for a benchmark database."""
    return {**os.environ, "GATEWAY_DATABASE_URL": url, "GATEWAY_INSTANCE_PATH": str(instance),
            "GATEWAY_PORT": str(free_port()), "GATEWAY_NOTIFY_ALLOW_HTTP": "true",
            "GATEWAY_NOTIFY_ALLOW_PRIVATE": "true", "GATEWAY_LOG_LEVEL": "WARNING"}


def sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the benchmark database; return its rows."""
    with psycopg.connect(_conninfo(url), autocommit=True) as connection:
        cursor = connection.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


def _conninfo(url: str) -> str:
    """Return the libpq form of a SQLAlchemy PostgreSQL URL."""
    return url.replace("postgresql+psycopg://", "postgresql://")


# --- load -------------------------------------------------------------------------------------

def load(env: dict[str, str], url: str, figures: Figures) -> None:
    """Migrate, load the demo children (timed) and record the sizes."""
    run_cli(env, "db", "upgrade")
    started = time.perf_counter()
    run_cli(env, "demo-data", "--children", str(figures.children), "--authorities",
            str(AUTHORITIES), "--seed", "2026", "--quiet")
    seconds = time.perf_counter() - started
    figures.add("load: children/s (demo-data, incl. ANALYZE)", figures.children / seconds,
                "/s", lower_better=False)
    figures.add("load: seconds", seconds, "s")
    ((database, tables, indexes),) = sql(url, """
        SELECT pg_database_size(current_database()),
               sum(pg_table_size(c.oid)), sum(pg_indexes_size(c.oid))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname = 'public'""")
    for name, size in (("disk: database", database), ("disk: tables", tables),
                       ("disk: indexes", indexes)):
        figures.add(f"{name} MB", int(size) / 2**20, "MB")
    figures.add("disk: bytes per child (database)", int(database) / figures.children, "B")


# --- requests ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    """One sampled child: how to find it."""

    resource_id: str
    nhs_number: str
    family: str
    birth_date: str
    postcode: str


def probes(url: str) -> list[Probe]:
    """Return ``REQUESTS`` randomly chosen unshielded live children with an NHS number,
    family name and postcode (the searches a caller makes)."""
    rows = sql(url, """
        SELECT c.resource_id, c.nhs_number, n.family_norm, c.birth_date::text,
               c.address_postcode
        FROM child c JOIN child_name n ON n.child_id = c.id AND n.position = 0
        WHERE NOT c.shielded AND c.record_status = 'live' AND c.nhs_number IS NOT NULL
          AND c.address_postcode IS NOT NULL
        ORDER BY md5(c.resource_id) LIMIT %s""", REQUESTS)
    return [Probe(*map(str, row)) for row in rows]


def timed_gets(session: requests.Session, urls: list[str],
               check: Callable[[dict[str, Any]], bool]) -> list[float]:
    """GET each URL in turn; return the latencies in ms.

    :raises SystemExit: an answer that is not 200 or fails ``check``.
    """
    latencies = []
    for target in urls:
        started = time.perf_counter()
        answer = session.get(target, timeout=60)
        latencies.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200 or not check(answer.json()):
            raise SystemExit(f"{target}: {answer.status_code} {answer.text[:300]}")
    return latencies


def _found(bundle: dict[str, Any]) -> bool:
    """Return True when a searchset holds at least one Patient."""
    return any(e.get("resource", {}).get("resourceType") == "Patient"
               for e in bundle.get("entry", []))


def latency(figures: Figures, label: str, values: list[float]) -> None:
    """Record p50 and p99 of ``values`` (ms)."""
    ordered = sorted(values)
    figures.add(f"{label} p50 ms", statistics.median(ordered), "ms")
    figures.add(f"{label} p99 ms", ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], "ms")


def searches(base: str, session: requests.Session, sample: list[Probe],
             figures: Figures) -> None:
    """Measure read by id and the three searches over the sampled children."""
    latency(figures, "read by id", timed_gets(
        session, [f"{base}/Patient/{p.resource_id}" for p in sample],
        lambda body: body.get("resourceType") == "Patient"))
    latency(figures, "search by NHS number", timed_gets(
        session, [f"{base}/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{p.nhs_number}"
                  for p in sample], _found))
    latency(figures, "search by family + birthdate", timed_gets(
        session, [f"{base}/Patient?family={p.family}&birthdate={p.birth_date}"
                  for p in sample], _found))
    latency(figures, "search by postcode", timed_gets(
        session, [f"{base}/Patient?address-postalcode={p.postcode.replace(' ', '')}"
                  f"&_count=20" for p in sample], _found))


def deep_pages(base: str, session: requests.Session, figures: Figures) -> None:
    """Follow 50 ``next`` links of 100 Patients each; record the per-page latency."""
    target: str | None = f"{base}/Patient?_count={PAGE_SIZE}"
    latencies: list[float] = []
    while target and len(latencies) < PAGES:
        started = time.perf_counter()
        answer = session.get(target, timeout=120)
        latencies.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{target}: {answer.status_code} {answer.text[:300]}")
        links = {link["relation"]: link["url"] for link in answer.json().get("link", [])}
        target = links.get("next")
    latency(figures, f"page of {PAGE_SIZE} ({len(latencies)} pages deep)", latencies)
    figures.add("page: ms per Patient (p50)", statistics.median(latencies) / PAGE_SIZE, "ms")


def authority_export(base: str, session: requests.Session, url: str,
                     figures: Figures) -> None:
    """Export the largest authority's children; record the time and the lines per second."""
    ((gss, children),) = sql(url, """
        SELECT o.gss_code, count(*) FROM child c JOIN organisation o
          ON o.id = c.managing_organisation_id
        GROUP BY o.gss_code ORDER BY count(*) DESC, o.gss_code LIMIT 1""")
    started = time.perf_counter()
    kick = session.get(f"{base}/Group/{gss}/$export?_type=Patient",
                       headers={"Prefer": "respond-async"}, timeout=60)
    if kick.status_code != 202:
        raise SystemExit(f"$export: {kick.status_code} {kick.text[:300]}")
    status = kick.headers["Content-Location"]
    while (answer := session.get(status, timeout=60)).status_code == 202:
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    lines = sum(int(item.get("count", 0)) for item in answer.json().get("output", []))
    figures.add(f"authority $export seconds ({children:,} children)", seconds, "s")
    figures.add("authority $export Patients/s", lines / seconds, "/s", lower_better=False)


def over_http(env: dict[str, str], url: str, figures: Figures) -> None:
    """Serve the gateway and take the HTTP figures."""
    run_cli(env, "clients", "ensure-demo")
    run_cli(env, "clients", "set-limits", "demo-admin", "--rate-limit", "100000000")
    token = run_cli(env, "token", "--client", "demo-admin").strip()
    sample = probes(url)
    with served("wsgi:app", env, int(env["GATEWAY_PORT"])) as port, \
            requests.Session() as session:
        base = f"http://127.0.0.1:{port}/fhir"
        session.trust_env = False
        session.headers.update({"Authorization": f"Bearer {token}",
                                "Accept": "application/fhir+json"})
        timed_gets(session, [f"{base}/Patient/{p.resource_id}" for p in sample[:20]],
                   lambda _body: True)  # warm-up: every worker booted and connected
        searches(base, session, sample, figures)
        deep_pages(base, session, figures)
        authority_export(base, session, url, figures)


# --- decommissioning --------------------------------------------------------------------------

def add_holders(url: str, instance: Path, ports: list[int]) -> int:
    """Register 200 holding systems, each holding the children of one authority (cycling over
    the 150) in the delivery ledger, each with a purge-instruction subscription to a local
    receiver; return the ledger rows written."""
    from adapter.db import Database

    authorities = [row[0] for row in sql(
        url, "SELECT DISTINCT managing_organisation_id FROM child ORDER BY 1")]
    database = Database(url)
    try:
        with database.write_transaction() as session:
            for n in range(HOLDERS):
                _add_holder(session, instance, n,
                            f"http://127.0.0.1:{ports[n % len(ports)]}/holder/{n}")
    finally:
        database.dispose()
    for n in range(HOLDERS):
        sql(url, "INSERT INTO delivery_ledger (client_id, child_ref, first_at, last_at, "
                 "last_via, deliveries) SELECT %s, resource_id, now(), now(), 'read', 1 "
                 "FROM child WHERE managing_organisation_id = %s",
            f"holder-{n:03d}", authorities[n % len(authorities)])
    ((rows,),) = sql(url, "SELECT count(*) FROM delivery_ledger")
    return int(rows)


def _add_holder(session: Any, instance: Path, n: int, endpoint: str) -> None:
    """Add one holder: its client and its purge subscription (with the subscription's lane)."""
    from sqlalchemy import func, select

    from adapter.models import Client, Event, Subscription, SubscriptionLane
    from adapter.notify.signing import seal

    client = f"holder-{n:03d}"
    session.add(Client(client_id=client, name=f"Holding system {n}",
                       organisation_code=f"E06{n:06d}", scopes="system/Task.cruds",
                       rights=[], jwks={"keys": []}))
    session.flush()
    subscription = Subscription(
        resource_id=str(uuid.uuid4()), client_id=client, topic="purge-instruction",
        status="active", channel="rest-hook", endpoint=endpoint,
        payload="application/fhir+json", content="full-resource",
        secret=seal(str(instance), "bench-secret-" + "x" * 20), filters={}, filter_text=[],
        headers=[], start_event_id=session.scalar(select(func.max(Event.id))) or 0)
    session.add(subscription)
    session.flush()
    session.add(SubscriptionLane(subscription_id=subscription.id))


def switch_off(env: dict[str, str], url: str, figures: Figures) -> None:
    """Plan, enter run-down, then time the switch-off (purge Tasks from the ledger)."""
    today = time.strftime("%Y-%m-%d")
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    drill = ["--drill"] if cli_supports(env, "--drill", "decommission", "plan") else []
    run_cli(env, "decommission", "plan", "--last-use", today, "--switch-off", tomorrow,
            *drill)
    run_cli(env, "decommission", "advance", "--now")
    started = time.perf_counter()
    said = run_cli(env, "decommission", "advance", "--now")
    figures.add(f"switch-off: purge Tasks for {HOLDERS} holders s", time.perf_counter() - started,
                "s")
    ((tasks, items, holders),) = sql(
        url, "SELECT (SELECT count(*) FROM purge_task), (SELECT count(*) FROM purge_task_item), "
             "(SELECT count(DISTINCT client_id) FROM delivery_ledger)")
    # The benchmark's own reads put demo-admin in the ledger too: one Task per holding system.
    if int(tasks) != int(holders) or int(tasks) < HOLDERS:
        raise SystemExit(f"switch-off made {tasks} purge Tasks for {holders} holders: {said}")
    figures.add("switch-off: purge Task items (ledger rows)", int(items), "rows")


@contextmanager
def dispatching(env: dict[str, str]) -> Iterator[None]:
    """Run ``DISPATCHERS`` real dispatcher processes for the block."""
    processes = [subprocess.Popen([CLI, "dispatch"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(DISPATCHERS)]
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(120)


def fan_out(env: dict[str, str], url: str, figures: Figures) -> None:
    """Time the delivery of every purge instruction by the dispatchers."""
    started = time.perf_counter()
    with dispatching(env):
        while True:
            ((waiting, queued),) = sql(url, """
                SELECT (SELECT count(*) FROM event WHERE NOT fanned_out),
                       (SELECT count(*) FROM notification n JOIN subscription s
                          ON s.id = n.subscription_id
                        WHERE s.topic = 'purge-instruction' AND n.state <> 'delivered')""")
            if not waiting and not queued:
                break
            if time.perf_counter() - started > 600:
                raise SystemExit(f"fan-out: {waiting} events, {queued} notifications left")
            time.sleep(0.05)
    figures.add(f"fan-out: {HOLDERS} purge instructions delivered s",
                time.perf_counter() - started, "s")


def canaries(url: str) -> list[bytes]:
    """Return recorded personal values to look for after destruction: NHS numbers, family
    names, postcodes and carers' telephone numbers of randomly chosen children."""
    rows = sql(url, """
        SELECT c.nhs_number, n.family_norm, c.address_postcode, k.phone
        FROM child c JOIN child_name n ON n.child_id = c.id AND n.position = 0
        LEFT JOIN carer k ON k.child_id = c.id AND k.position = 0
        WHERE c.nhs_number IS NOT NULL AND c.address_postcode IS NOT NULL
        ORDER BY md5(c.resource_id) LIMIT 7""")
    values = {str(v) for row in rows for v in row if v and len(str(v)) >= 6}
    return sorted(v.encode() for v in values)[:CANARIES]


def data_files(url: str) -> list[Path]:
    """Return every file of the benchmark database in the server's data directory."""
    ((directory, oid),) = sql(url, "SELECT current_setting('data_directory'), "
                                   "(SELECT oid FROM pg_database WHERE datname = "
                                   "current_database())")
    folder = Path(str(directory)) / "base" / str(oid)
    return sorted(p for p in folder.iterdir() if p.is_file())


def scan(files: list[Path], values: list[bytes]) -> list[bytes]:
    """Return the values found in any of ``files`` (read whole: segments are ≤ 1 GB)."""
    found = set()
    for path in files:
        data = path.read_bytes()
        found.update(v for v in values if v in data)
    return sorted(found)


def destruction(env: dict[str, str], url: str, figures: Figures) -> None:
    """Time the destruction, then scan the data files for the recorded values."""
    values = canaries(url)
    sql(url, "CHECKPOINT")
    try:
        before = scan(data_files(url), values)
    except PermissionError:
        before = None
    override = (["--override", "scale benchmark drill"]
                if cli_supports(env, "--override", "decommission", "destroy")
                else ["--override-drill"])
    started = time.perf_counter()
    run_cli(env, "decommission", "destroy", "--yes", *override)
    figures.add("destruction: whole directory s", time.perf_counter() - started, "s")
    if before is None:
        figures.notes.append("no-personal-bytes scan not made: the data files are not readable")
        return
    sql(url, "CHECKPOINT")
    after = scan(data_files(url), values)
    figures.add(f"destruction: recorded values found before ({len(values)})", len(before), "")
    figures.add("destruction: recorded values found after", len(after), "")
    if after:
        raise SystemExit(f"{len(after)} recorded personal values survive destruction")


def decommission(env: dict[str, str], url: str, figures: Figures) -> None:
    """Holders, switch-off, fan-out and destruction."""
    with receivers() as ports:
        rows = add_holders(url, Path(env["GATEWAY_INSTANCE_PATH"]), ports)
        figures.add(f"ledger rows of {HOLDERS} holders", rows, "rows")
        switch_off(env, url, figures)
        fan_out(env, url, figures)
    destruction(env, url, figures)


# --- the run ----------------------------------------------------------------------------------

def measure(children: int) -> Figures:
    """Take every figure for a directory of ``children``."""
    figures = Figures(children)
    with ExitStack() as stack:
        url = stack.enter_context(scratch_postgres(f"bench_scale_{children}"))
        if url is None:
            raise SystemExit("no PostgreSQL server (BENCH_POSTGRES_ADMIN) to run on")
        instance = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
        env = environment(url, instance)
        load(env, url, figures)
        over_http(env, url, figures)
        decommission(env, url, figures)
    return figures


def compare(small: Figures, large: Figures) -> None:
    """Print each figure at both sizes with the ratio large / small."""
    print(f"\n{'figure':<52} {small.children:>12,} {large.children:>12,} {'ratio':>7}")
    for name, (value, unit, _lower) in small.values.items():
        if name not in large.values:
            continue
        big = large.values[name][0]
        ratio = f"{big / value:7.2f}" if value else "      -"
        print(f"{name:<52} {value:>12,.2f} {big:>12,.2f} {ratio} {unit}")
    for note in small.notes + large.notes:
        print(f"note: {note}")


def main() -> None:
    """Measure at 10,000 children and at ``BENCH_SCALE_CHILDREN``; print both and the ratio."""
    random.seed(2026)
    print(f"PostgreSQL via {admin_conninfo()}; {AUTHORITIES} authorities, {HOLDERS} holders, "
          f"{REQUESTS} requests per figure, gunicorn {' '.join(GUNICORN)}, "
          f"{DISPATCHERS} dispatchers; load average {os.getloadavg()[0]:.2f}", flush=True)
    small = measure(SMALL)
    large = measure(LARGE) if LARGE != SMALL else small
    compare(small, large)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
