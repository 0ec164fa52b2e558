"""HTTP benchmark (README "Benchmarks"): Patient read by id and search by identifier under wrk for
10 s, next to a bare Flask route returning a fixed 2 KB JSON on the same gunicorn settings,
measured in the same run (req/s, p50, p99)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.scratch import scratch_postgres

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHILDREN = int(os.environ.get("BENCH_HTTP_CHILDREN", "5000"))
DURATION = os.environ.get("BENCH_HTTP_DURATION", "10s")
WARM_UP = os.environ.get("BENCH_HTTP_WARM_UP", "3s")
# The same settings serve the gateway and the bare baseline; BENCH_HTTP_GUNICORN replaces them
# (e.g. "--workers 2 --worker-class gthread --threads 4") to compare others.
GUNICORN = [*os.environ.get("BENCH_HTTP_GUNICORN", "--workers 2 --worker-class gthread "
                                                   "--threads 4").split(),
            "--log-level", "warning"]


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


def wait_for(port: int, timeout: float = 60) -> None:
    """Wait until something listens on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"nothing listens on {port}")


@contextmanager
def served(app: str, env: dict[str, str], port: int | None = None) -> Iterator[int]:
    """Serve ``app`` with gunicorn on ``port`` (default: a free one) for the block."""
    port = port or free_port()
    process = subprocess.Popen([str(BIN / "gunicorn"), *GUNICORN, "--bind",
                                f"127.0.0.1:{port}", app], cwd=ROOT, env=env)
    try:
        wait_for(port)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:  # a worker kept busy (e.g. a keep-alive client)
            process.kill()
            process.wait(30)


def wrk(url: str, headers: dict[str, str]) -> tuple[float, float, float]:
    """Run wrk against ``url`` after a warm-up of WARM_UP (every worker booted, its caches
    filled: gunicorn listens before its workers have loaded the app); return req/s, p50 and
    p99 in milliseconds."""
    args = [ensure_wrk(), "-t2", "-c16", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    subprocess.run([*args, f"-d{WARM_UP}", url], check=True, capture_output=True)
    out = subprocess.run([*args, f"-d{DURATION}", url], check=True, capture_output=True,
                         text=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise SystemExit(f"{url}: {non_2xx.group(1)} failed responses")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, _percentile(out, "50"), _percentile(out, "99")


def _percentile(out: str, which: str) -> float:
    """Return a wrk latency percentile in milliseconds."""
    value, unit = re.search(rf"\s{which}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def prepare(instance: Path, url: str) -> tuple[dict[str, str], str, str, str]:
    """Create a demo database; return the environment, a token, a Patient id and a query."""
    # Access tokens are bound to the address the gateway serves at: the CLI's token names
    # 127.0.0.1:GATEWAY_PORT, so the port is chosen before the token is made.
    env = {**os.environ, "GATEWAY_INSTANCE_PATH": str(instance), "GATEWAY_DATABASE_URL": url,
           "GATEWAY_PORT": str(free_port())}
    cli = str(BIN / "contactpoint-gateway")
    for args in (["db", "upgrade"], ["demo-data", "--children", str(CHILDREN), "--quiet"],
                 ["clients", "ensure-demo"],
                 # wrk sends far more than a client's default rate limit (600 a minute).
                 ["clients", "set-limits", "demo-admin", "--rate-limit", "100000000"]):
        subprocess.run([cli, *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return env, *_probe(env, cli)


def _probe(env: dict[str, str], cli: str) -> tuple[str, str, str]:
    """Return a token of demo-admin, a Patient id and an identifier search for it."""
    from sqlalchemy import create_engine, text

    token = subprocess.run([cli, "token", "--client", "demo-admin"], check=True, env=env,
                           capture_output=True, text=True).stdout.strip()
    engine = create_engine(env["GATEWAY_DATABASE_URL"])
    with engine.connect() as connection:
        rid, cpid = connection.execute(text(
            "SELECT resource_id, contactpoint_id FROM child WHERE NOT shielded "
            "ORDER BY id LIMIT 1 OFFSET 100")).one()
    engine.dispose()
    system = "https://fhir.contactpoint-gateway.example.org/Id/contactpoint-id"
    return token, rid, f"identifier={system}|{cpid}"


def measure(url: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Return the read and search figures of the gateway on the database ``url``."""
    with tempfile.TemporaryDirectory(prefix="bench-http-") as folder:
        target = url or f"sqlite:///{Path(folder) / 'gateway.db'}"
        env, token, rid, query = prepare(Path(folder), target)
        auth = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
        with served("wsgi:app", env, int(env["GATEWAY_PORT"])) as port:
            read = wrk(f"http://127.0.0.1:{port}/fhir/Patient/{rid}", auth)
            search = wrk(f"http://127.0.0.1:{port}/fhir/Patient?{query}", auth)
    return read, search


def main() -> None:
    """Run the measurements on SQLite and PostgreSQL and print them with the baseline
    (BENCH_HTTP_BACKENDS: "sqlite", "postgresql" or both, the default)."""
    backends = os.environ.get("BENCH_HTTP_BACKENDS", "sqlite postgresql").split()
    with served("bench.bare_app:app", dict(os.environ)) as port:
        bare = wrk(f"http://127.0.0.1:{port}/fixed", {})
    rows = [("bare Flask route, fixed 2 KB JSON (baseline)", bare)]
    if "sqlite" in backends:
        sqlite_read, sqlite_search = measure("")
        rows += [("SQLite: GET /fhir/Patient/{id}", sqlite_read),
                 ("SQLite: GET /fhir/Patient?identifier=…", sqlite_search)]
    with scratch_postgres("bench_gateway_http") as pg_url:
        if pg_url and "postgresql" in backends:
            pg_read, pg_search = measure(pg_url)
            rows += [("PostgreSQL: GET /fhir/Patient/{id}", pg_read),
                     ("PostgreSQL: GET /fhir/Patient?identifier=…", pg_search)]
    print(f"{'request':46} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}")
    for label, (rate, p50, p99) in rows:
        print(f"{label:46} {rate:9.0f} {p50:8.2f} {p99:8.2f} {rate / bare[0]:8.0%}")
    print(f"(gunicorn {' '.join(GUNICORN)}; wrk -t2 -c16 -d{DURATION} after {WARM_UP} of "
          f"warm-up; {CHILDREN} demo "
          "children; every read verified, authorised and audited in its own transaction)")


if __name__ == "__main__":
    main()
