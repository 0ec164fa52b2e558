"""HTTP benchmark (README "Benchmarks"): Patient read by id and search by identifier under wrk
(16 connections) for 10 s, next to a bare Flask route returning a fixed 2 KB JSON, both served by
``bench.served_app`` with the gateway's own gunicorn settings (``adapter/server.py``) and
measured in the same run (req/s, p50, p99); then, one request at a time on one keep-alive
connection, search pages of 100 Patients (ms per Patient) next to reading Patients one by one.

On SQLite, and on PostgreSQL when the local server answers (``bench.scratch``:
``BENCH_POSTGRES_ADMIN``). ``BENCH_HTTP_BACKENDS`` ("sqlite", "postgresql" or both),
``BENCH_HTTP_CHILDREN``, ``BENCH_HTTP_DURATION``, ``BENCH_HTTP_WARM_UP`` set the run;
``BENCH_HTTP_GUNICORN`` replaces gunicorn settings of both servers ("worker_class=gthread
threads=8", as ``bench.served_app`` reads them) to compare others.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.report import Goal, header, row
from bench.scratch import scratch_postgres
from bench.served_app import settings as served_settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHILDREN = int(os.environ.get("BENCH_HTTP_CHILDREN", "5000"))
DURATION = os.environ.get("BENCH_HTTP_DURATION", "10s")
WARM_UP = os.environ.get("BENCH_HTTP_WARM_UP", "3s")
# The same settings serve the gateway and the bare baseline (bench.served_app).
GUNICORN = [*os.environ.get("BENCH_HTTP_GUNICORN", "").split(), "loglevel=warning"]
CONNECTIONS = 16
PAGE = 100
PAGES = 20
# The goals set for the served gateway (README "Benchmarks").
READ_GOAL = Goal.ratio_at_least(0.50)
SEARCH_GOAL = Goal.ratio_at_least(0.35)
P99_GOAL = Goal.below(15, "ms")
PAGE_GOAL = Goal.at_most(0.5, "ms")


def ensure_wrk() -> str:
    """Return the wrk executable, installing Debian's package when missing (as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is needed: apt-get install wrk")
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, timeout: float = 120) -> None:
    """Wait until a worker answers HTTP on ``port`` (gunicorn listens before its workers
    have loaded the app; on a busy machine that takes seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if sock.recv(16).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"nothing answers on {port}")


@contextmanager
def served(app: str, env: dict[str, str], port: int | None = None) -> Iterator[int]:
    """Serve ``app`` with gunicorn on ``port`` (default: a free one) for the block."""
    with served_process(app, env, port) as (chosen, _pid):
        yield chosen


@contextmanager
def served_process(app: str, env: dict[str, str],
                   port: int | None = None) -> Iterator[tuple[int, int]]:
    """Serve ``app`` for the block; yield its port and the gunicorn master's process id."""
    port = port or free_port()
    # The access log is written as ``serve`` writes it, to a discarded standard output.
    process = subprocess.Popen([sys.executable, "-m", "bench.served_app", app, str(port),
                                *GUNICORN], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for(port)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:  # a worker kept busy (e.g. a keep-alive client)
            process.kill()
            process.wait(30)


def server_cpu(pid: int) -> float:
    """Return the CPU seconds used so far by process ``pid`` and its children (gunicorn's
    master and workers), from /proc (proc(5): stat fields utime and stime)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for each in (pid, *_children(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _children(pid: int) -> list[int]:
    """Return the process ids of ``pid``'s children."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(n) for n in (task / "children").read_text().split()]
    return found


@dataclass(frozen=True)
class Load:
    """What wrk measured: req/s, p50 and p99 in ms, and the server's CPU ms per request (its
    gunicorn processes only: PostgreSQL's own work is not in it)."""

    rate: float
    p50: float
    p99: float
    cpu_ms: float


def wrk(url: str, headers: dict[str, str]) -> tuple[float, float, float]:
    """Run wrk against ``url`` after a warm-up; return req/s, p50 and p99 in milliseconds
    (for benchmarks that do not follow the server's CPU)."""
    measured = load(url, headers, None)
    return measured.rate, measured.p50, measured.p99


def load(url: str, headers: dict[str, str], pid: int | None) -> Load:
    """Run wrk against ``url`` after a warm-up of WARM_UP (every worker booted, its caches
    filled); return what it measured, with the CPU the server ``pid`` spent meanwhile."""
    args = [ensure_wrk(), "-t2", f"-c{CONNECTIONS}", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    subprocess.run([*args, f"-d{WARM_UP}", url], check=True, capture_output=True)
    cpu = server_cpu(pid) if pid else 0.0
    out = subprocess.run([*args, f"-d{DURATION}", url], check=True, capture_output=True,
                         text=True).stdout
    cpu = server_cpu(pid) - cpu if pid else float("nan")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise SystemExit(f"{url}: {non_2xx.group(1)} failed responses")
    done = re.search(r"(\d+) requests in", out)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    if not done or not int(done.group(1)):
        raise SystemExit(f"{url}: no answer in {DURATION}:\n{out}")
    return Load(rate, _percentile(out, "50"), _percentile(out, "99"),
                cpu * 1000 / int(done.group(1)))


def _percentile(out: str, which: str) -> float:
    """Return a wrk latency percentile in milliseconds."""
    value, unit = re.search(rf"\s{which}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


@dataclass(frozen=True)
class Target:
    """A served demo database: its environment, a token and what to ask for."""

    env: dict[str, str]
    token: str
    patient_ids: list[str]
    query: str


def prepare(instance: Path, url: str, children: int = CHILDREN) -> Target:
    """Create a demo database of ``children``; return how to call it."""
    # Access tokens are bound to the address the gateway serves at: the CLI's token names
    # 127.0.0.1:GATEWAY_PORT, so the port is chosen before the token is made.
    env = {**os.environ, "GATEWAY_INSTANCE_PATH": str(instance), "GATEWAY_DATABASE_URL": url,
           "GATEWAY_PORT": str(free_port())}
    cli = str(BIN / "contactpoint-gateway")
    for args in (["db", "upgrade"], ["demo-data", "--children", str(children), "--quiet"],
                 ["clients", "ensure-demo"],
                 # wrk sends far more than a client's default rate limit (600 a minute).
                 ["clients", "set-limits", "demo-admin", "--rate-limit", "100000000"]):
        subprocess.run([cli, *args], check=True, env=env, stdout=subprocess.DEVNULL)
    token = subprocess.run([cli, "token", "--client", "demo-admin"], check=True, env=env,
                           capture_output=True, text=True).stdout.strip()
    return Target(env, token, *_probe(url))


def _probe(url: str) -> tuple[list[str], str]:
    """Return the ids of PAGE unshielded Patients and an identifier search for the first."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT resource_id, contactpoint_id FROM child WHERE NOT shielded "
            "ORDER BY id LIMIT :n OFFSET 100"), {"n": PAGE}).all()
    engine.dispose()
    system = "https://fhir.contactpoint-gateway.example.org/Id/contactpoint-id"
    return [rid for rid, _cpid in rows], f"identifier={system}|{rows[0][1]}"


@dataclass(frozen=True)
class Figures:
    """What one database measured."""

    read: Load
    search: Load
    one_by_one_ms: float
    page_ms: float


def measure(url: str) -> Figures:
    """Return the figures of the gateway on the database ``url``."""
    with tempfile.TemporaryDirectory(prefix="bench-http-") as folder:
        target = prepare(Path(folder), url or f"sqlite:///{Path(folder) / 'gateway.db'}")
        auth = {"Authorization": f"Bearer {target.token}", "Accept": "application/fhir+json"}
        with served_process("wsgi:app", target.env,
                            int(target.env["GATEWAY_PORT"])) as (port, pid):
            base = f"http://127.0.0.1:{port}/fhir"
            read = load(f"{base}/Patient/{target.patient_ids[0]}", auth, pid)
            search = load(f"{base}/Patient?{target.query}", auth, pid)
            one_by_one, page = sequential(base, auth, target.patient_ids)
    return Figures(read, search, one_by_one, page)


def sequential(base: str, auth: dict[str, str], ids: list[str]) -> tuple[float, float]:
    """Return, one request at a time on one keep-alive connection, the median ms of reading
    one Patient by id and the median ms per Patient of a search page of PAGE (PAGES pages,
    following the ``next`` links)."""
    with requests.Session() as session:
        session.trust_env = False
        session.headers.update(auth)
        reads = [_timed_get(session, f"{base}/Patient/{rid}") for rid in ids]
        per_patient: list[float] = []
        link: str | None = f"{base}/Patient?_count={PAGE}"
        while link and len(per_patient) < PAGES:
            started = time.perf_counter()
            answer = session.get(link, timeout=60)
            took = (time.perf_counter() - started) * 1000
            bundle = answer.json()
            patients = sum(1 for e in bundle.get("entry", [])
                           if e.get("resource", {}).get("resourceType") == "Patient")
            if answer.status_code != 200 or not patients:
                raise SystemExit(f"{link}: {answer.status_code}, no Patients")
            per_patient.append(took / patients)
            link = {x["relation"]: x["url"] for x in bundle.get("link", [])}.get("next")
    return statistics.median(reads), statistics.median(per_patient)


def _timed_get(session: requests.Session, url: str) -> float:
    """GET ``url`` (which must answer 200); return the ms it took."""
    started = time.perf_counter()
    answer = session.get(url, timeout=60)
    if answer.status_code != 200:
        raise SystemExit(f"{url}: {answer.status_code} {answer.text[:300]}")
    return (time.perf_counter() - started) * 1000


def bare() -> Load:
    """Return what the bare route measured under the same server."""
    with served_process("bench.bare_app:app", dict(os.environ)) as (port, pid):
        return load(f"http://127.0.0.1:{port}/fixed", {}, pid)


def report(name: str, bare: Load, figures: Figures) -> None:
    """Print one database's figures, each next to its baseline and goal."""
    header(f"{name} (baseline: the bare route, measured just before)")
    row("bare Flask route, fixed 2 KB JSON: req/s", bare.rate, "/s")
    row("bare Flask route: p50", bare.p50, "ms")
    row(f"bare Flask route: p99 at {CONNECTIONS} connections", bare.p99, "ms")
    row("bare Flask route: req per server CPU-s", 1000 / bare.cpu_ms, "/s")
    for label, load, goal in (("GET /fhir/Patient/{id}", figures.read, READ_GOAL),
                              ("GET /fhir/Patient?identifier=…", figures.search, SEARCH_GOAL)):
        row(f"{label}: req/s", load.rate, "/s", bare.rate, goal)
        row(f"{label}: p50", load.p50, "ms", bare.p50)
        row(f"{label}: p99 at {CONNECTIONS} connections", load.p99, "ms", bare.p99,
            P99_GOAL if load is figures.read else None)
        # Steadier than req/s on a shared machine: what req/s would be were the server's
        # cores its own (gunicorn's processes only; PostgreSQL's work is not counted).
        row(f"{label}: req per server CPU-s", 1000 / load.cpu_ms, "/s",
            1000 / bare.cpu_ms, goal)
    row(f"page of {PAGE} (_count={PAGE}): ms per Patient vs one read", figures.page_ms, "ms",
        figures.one_by_one_ms, PAGE_GOAL)


def main() -> None:
    """Run the measurements on SQLite and PostgreSQL and print them with their baselines."""
    backends = os.environ.get("BENCH_HTTP_BACKENDS", "sqlite postgresql").split()
    chosen = served_settings(0, GUNICORN)
    print(f"served by bench.served_app with the gateway's gunicorn settings: "
          f"{chosen['workers']} workers x {chosen['threads']} threads of "
          f"{chosen['worker_class']}; wrk -t2 -c{CONNECTIONS} -d{DURATION} after {WARM_UP} of "
          f"warm-up; {CHILDREN} demo children; every read verified, authorised and audited "
          "in its own transaction", flush=True)
    if "sqlite" in backends:
        baseline = bare()
        report("SQLite", baseline, measure(""))
    if "postgresql" in backends:
        with scratch_postgres("bench_gateway_http") as pg_url:
            if pg_url is None:
                print("PostgreSQL: not reachable, not measured")
                return
            baseline = bare()
            report("PostgreSQL", baseline, measure(pg_url))


if __name__ == "__main__":
    main()
