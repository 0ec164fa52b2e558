"""The phase matrix: every HTTP route (from the app's URL map, by the kind it declares to the
access layer) and every CLI command (from the click tree, by the kind it declares to the phase
policy) in each decommissioning phase — live, run-down, switched-off, destroyed. What a phase
forbids is refused with a clear message (an OperationOutcome over HTTP; a message on stderr and
exit code ``PHASE_EXIT`` on the CLI) and changes nothing in the database; what it allows is not
refused. Routes and commands are enumerated from the code, so a new one is covered without
editing this test. One database per phase per backend, shared by the module's tests."""

from __future__ import annotations

import contextlib
import hashlib
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy import func, select

from adapter import create_app
from adapter.cli import main
from adapter.db import Database
from adapter.decommission import phases
from adapter.demo import load_demo_data
from adapter.models import Child, Organisation
from adapter.models.base import Base
from adapter.models.decommission import PHASES
from adapter.security.access import access_of
from adapter.security.policy.phase import PHASE_EXIT, allows, declared_phase
from tests.api.conftest import bearer
from tests.conftest import BACKENDS, POSTGRES_URL, REPO, PostgresSchema
from tests.directory.batches import demo_batches
from tests.fhir_validity import r4_schema, r4b_model, xsd_errors
from tests.security.routes import missing_from_capability

PLAN = ("decommission", "plan", "--last-use", "2099-08-05", "--switch-off", "2099-08-06")
TIMETABLE = "switch-off at 6 August 2099 12:00 BST"
# Bookkeeping of requests and tokens, not anybody's data: a refused request may count.
UNWATCHED = frozenset({"audit_record", "rate_window", "used_assertion"})
SKIPPED = {"run-down": "is in run-down (reads only)",
           "switched-off": "is switched off (only purge traffic)",
           "destroyed": "was destroyed (nothing that could bring personal data back)"}
STATE_WORDS = {"run-down": "run-down", "switched-off": "switched off", "destroyed": "destroyed"}


@dataclass
class World:
    """A directory in one phase: its app, database, a caller with every right, and files."""

    phase: str
    app: Flask
    db: Database
    headers: dict[str, str]
    entries: Path
    authority: str
    tmp: Path


def cli(app: Flask, *args: str) -> Result:
    """Run ``contactpoint-gateway ARGS`` against ``app``."""
    return CliRunner().invoke(main, list(args), obj=ScriptInfo(create_app=lambda: app))


def _enter(app: Flask, phase: str) -> None:
    """Take the directory from live to ``phase`` the way an operator does."""
    steps = {"run-down": [PLAN, ("decommission", "advance", "--now")],
             "switched-off": [("decommission", "advance", "--now")],
             "destroyed": [("decommission", "destroy", "--yes", "--override",
                            "phase matrix drill")]}
    for current in PHASES[1:PHASES.index(phase) + 1]:
        for step in steps[current]:
            done = cli(app, *step)
            assert done.exit_code == 0, done.output


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory XML batch of three children the directories below do not hold (demo
    children are numbered from one: these are the seventh to the ninth)."""
    folder = tmp_path_factory.mktemp("batch")
    batch, _references, _gss = demo_batches(folder, 9, seed=77)
    (folder / "entries.xml").write_bytes(replace(batch, records=batch.records[6:]).document())
    return folder / "entries.xml"


@pytest.fixture(scope="module", params=[(b, p) for b in BACKENDS for p in PHASES],
                ids=lambda param: "-".join(param))
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          entries: Path) -> Iterator[World]:
    """A directory of demo children put into the phase (one per phase and backend)."""
    backend, phase = request.param
    tmp = tmp_path_factory.mktemp(f"{backend}-{phase}")
    with contextlib.ExitStack() as stack:
        url, options = f"sqlite:///{tmp / 'gateway.db'}", {}
        if backend == "postgresql":
            assert POSTGRES_URL
            schema = stack.enter_context(PostgresSchema(POSTGRES_URL))
            url, options = POSTGRES_URL, schema.engine_options()
        db = Database(url, **options)
        stack.callback(db.close)
        db.upgrade()
        app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(tmp / "instance"),
                          "TESTING": True})
        app.extensions["db"].close()
        app.extensions["db"] = db
        stack.callback(phases.forget, db)
        load_demo_data(db, children=6, authorities=2, seed=11, progress=False)
        with db.sessions() as session:
            authority = session.scalar(select(Organisation.gss_code).where(
                Organisation.type == "local-authority").order_by(Organisation.id))
        assert authority is not None
        headers = bearer(app.test_client(), app, "everything", authority,
                         ["shielded", "sensitive", "audit", "admin"])
        _enter(app, phase)
        yield World(phase, app, db, headers, entries, authority, tmp)


def snapshot(db: Database) -> dict[str, tuple[int, str]]:
    """Return each watched table's row count and a digest of its rows."""
    state = {}
    with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name in UNWATCHED:
                continue
            rows = sorted(repr(tuple(row)) for row in connection.execute(select(table)))
            state[table.name] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    return state


def children(db: Database) -> int:
    """Return how many children the directory holds."""
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Child)) or 0)


# --- HTTP --------------------------------------------------------------------------------------

def routes(app: Flask) -> Iterator[tuple[str, str, str, str | None]]:
    """Yield every route of the URL map as (method, URL, declared kind, resource type)."""
    urls = app.url_map.bind("localhost")
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            access = access_of(rule.endpoint)
            assert access is not None, f"{rule.rule} declares no access"
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                url = urls.build(rule.endpoint, dict.fromkeys(rule.arguments, "1"),
                                 method=method)
                yield method, url, access.kind, access.resource_type


def _phase_refusal(response: Any) -> str | None:
    """Return the phase code of a phase refusal (None: the response is not one)."""
    if response.status_code not in (409, 410) or not response.is_json:
        return None
    issue = (response.json.get("issue") or [{}])[0]
    coding = (issue.get("details") or {}).get("coding") or [{}]
    return str(coding[0].get("code")) if issue.get("code") == "business-rule" else None


def test_every_route_obeys_the_phase(world: World) -> None:
    """Every route whose kind the phase forbids answers 409 (run-down) or 410 with an
    OperationOutcome naming the phase and the timetable, for a caller with every scope and
    right, and changes nothing; every other route is not refused by the phase."""
    client, before = world.app.test_client(), snapshot(world.db)
    listed = list(routes(world.app))
    assert {kind for _m, _u, kind, _t in listed} == {"meta", "read", "write", "purge", "admin"}
    forbidden = [r for r in listed if not allows(world.phase, r[2])]
    for method, url, _kind, _type in forbidden:
        response = client.open(url, method=method, headers=world.headers, json={})
        assert _phase_refusal(response) == world.phase, (method, url, response.data[:300])
        assert response.status_code == (409 if world.phase == "run-down" else 410)
        diagnostics = response.json["issue"][0]["diagnostics"]
        assert STATE_WORDS[world.phase] in diagnostics and TIMETABLE in diagnostics
        as_xml = client.open(url, method=method, json={},
                             headers={**world.headers, "Accept": "application/fhir+xml"})
        assert as_xml.status_code == response.status_code, (method, url)
        assert b"<OperationOutcome" in as_xml.data and b"business-rule" in as_xml.data
    assert snapshot(world.db) == before
    assert bool(forbidden) == (world.phase != "live")
    for method, url, _kind, _type in (r for r in listed if allows(world.phase, r[2])):
        response = client.open(url, method=method, headers=world.headers, json={})
        assert _phase_refusal(response) is None, (method, url, response.data[:300])
        assert response.status_code < 500, (method, url, response.data[:300])


def test_capability_statement_declares_every_route(world: World) -> None:
    """In every phase the CapabilityStatement declares every FHIR interaction and operation
    route of the URL map (Task and PlanDefinition included, with or without a plan): what the
    phase refuses still answers, with the phase's OperationOutcome."""
    client = world.app.test_client()
    statement = client.get("/fhir/metadata").json
    assert missing_from_capability(world.app, statement) == []
    assert {"Task", "PlanDefinition"} <= {r["type"] for r in statement["rest"][0]["resource"]}
    r4b_model(statement)
    assert xsd_errors(r4_schema(), client.get("/fhir/metadata?_format=xml").data) == []


def test_conformance_resources_answer_without_a_token(world: World) -> None:
    """In every phase the conformance resources and the topics are read and searched without a
    token (public metadata: no child's data)."""
    client = world.app.test_client()
    for path in ("/fhir/StructureDefinition", "/fhir/ValueSet", "/fhir/CodeSystem",
                 "/fhir/ConceptMap", "/fhir/OperationDefinition", "/fhir/SubscriptionTopic",
                 "/fhir/StructureDefinition/ContactPointGateway-Patient",
                 "/fhir/OperationDefinition/holders"):
        response = client.get(path)
        assert response.status_code == 200, (world.phase, path, response.data[:300])


def test_metadata_health_and_certificate_answer(world: World) -> None:
    """Metadata and /healthz answer in every phase; the certificate once destroyed."""
    client = world.app.test_client()
    assert client.get("/healthz").json["phase"] == world.phase
    assert f"Decommissioning phase: {world.phase}" in client.get("/fhir/metadata").json[
        "description"]
    certificate = client.get("/decommission/certificate.json")
    assert certificate.status_code == (200 if world.phase == "destroyed" else 404)


# --- CLI ---------------------------------------------------------------------------------------

def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    """Yield every command of the click tree with its path."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def arguments(world: World, path: tuple[str, ...], command: click.Command) -> list[str]:
    """Return arguments that make ``command`` act on the directory were it let through:
    meaningful ones for the commands that touch children's data, else a value for each
    required parameter (so a new command needs no entry here)."""
    out = str(world.tmp / f"out-{'-'.join(path)}")
    known = {("import",): [str(world.entries), "--quiet"],
             ("export",): ["--authority", world.authority, "--format", "directory-xml",
                           "--out", out, "--quiet"],
             ("demo-data",): ["--children", "3", "--authorities", "1", "--quiet"],
             ("dispatch",): ["--once"], ("events", "replay"): ["--dead"],
             ("decommission", "remind"): ["--now"],
             ("decommission", "destroy"): ["--yes", "--override", "phase matrix drill"]}
    if path in known:
        return known[path]
    generated: list[str] = []
    for param in command.params:
        if param.required:
            value = _value(param, world, out)
            generated += [value] if isinstance(param, click.Argument) else [param.opts[0], value]
    return generated


def _value(param: click.Parameter, world: World, out: str) -> str:
    """Return a value of the parameter's type."""
    if isinstance(param.type, click.Choice):
        return str(param.type.choices[0])
    if isinstance(param.type, click.Path):
        return out if not param.type.file_okay else str(world.entries)
    return "1" if isinstance(param.type, click.types.IntParamType) else "x"


def test_every_command_declares_a_kind() -> None:
    """Every command of the CLI declares what it does to the phase policy."""
    listed = list(commands(main))
    assert len(listed) > 20
    assert [" ".join(p) for p, c in listed if declared_phase(c) is None] == []


def test_declared_kinds_follow_the_rules() -> None:
    """Commands that write children's data are ``write`` (live only), those that read or send
    it again are ``read`` (refused from switch-off); what ``make run``, the certificate and
    the plan need stays available in every phase."""
    declared = {" ".join(p): declared_phase(c).kind  # type: ignore[union-attr]
                for p, c in commands(main)}
    assert {name: declared[name] for name in ("import", "demo-data")} == \
        {"import": "write", "demo-data": "write"}
    assert {declared[name] for name in ("export", "events list", "events replay",
                                         "audit report")} == {"read"}
    always = ("serve", "db upgrade", "clients ensure-demo", "decommission status",
              "decommission plan", "decommission advance", "decommission verify-certificate")
    assert all(allows("destroyed", declared[name]) for name in always)


def test_every_command_obeys_the_phase(world: World) -> None:
    """Every command whose kind the phase forbids exits with ``PHASE_EXIT`` and a message on
    stderr naming the phase, the command and the timetable, and changes nothing (database and
    files); in live nothing is refused."""
    refused = [(p, c) for p, c in commands(main)
               if not allows(world.phase, declared_phase(c).kind)]  # type: ignore[union-attr]
    assert bool(refused) == (world.phase != "live")
    before = snapshot(world.db)
    for path, command in refused:
        args = arguments(world, path, command)
        result = cli(world.app, *path, *args)
        name = " ".join(path)
        assert result.exit_code == PHASE_EXIT, (name, result.output)
        assert f"`{name}`" in result.stderr and "refused; nothing was changed" in result.stderr
        assert STATE_WORDS[world.phase] in result.stderr and TIMETABLE in result.stderr
        assert result.stdout == "", name
        assert not (world.tmp / f"out-{'-'.join(path)}").exists()
    assert snapshot(world.db) == before


def test_import_writes_only_while_live(world: World) -> None:
    """``import`` creates children while live; in run-down, after switch-off and after
    destruction it is refused and writes nothing (it used to re-create children after
    destruction)."""
    held = children(world.db)
    result = cli(world.app, "import", str(world.entries), "--quiet")
    if world.phase == "live":
        assert result.exit_code == 0, result.output
        assert children(world.db) == held + 3, result.output
        return
    assert result.exit_code == PHASE_EXIT
    assert "`import` writes children's data and is refused" in result.stderr
    assert children(world.db) == held


def test_export_reads_only_until_switch_off(world: World, tmp_path: Path) -> None:
    """``export`` of an authority's children works while live and in run-down; after
    switch-off and destruction it is refused and writes no file."""
    out = tmp_path / "export"
    result = cli(world.app, "export", "--authority", world.authority, "--format",
                 "fhir-ndjson", "--out", str(out), "--quiet")
    if world.phase in ("live", "run-down"):
        assert result.exit_code == 0, result.output
        assert (out / "Patient.ndjson").stat().st_size > 0
        return
    assert result.exit_code == PHASE_EXIT
    assert "`export` reads children's data and is refused" in result.stderr
    assert not out.exists()


def _make_run_steps() -> list[list[str]]:
    """Return the CLI steps of ``make run`` before ``serve`` (defaults for its variables)."""
    recipe = (REPO / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    joined = recipe.replace("\\\n", " ")
    steps = []
    for line in joined.splitlines():
        if line.strip().startswith("$(CLI)"):
            words = shlex.split(re.sub(r"\$\$\{\w+:-([^}]*)\}", r"\1", line.strip()))[1:]
            steps.append(words)
    assert steps[-1] == ["serve"]
    return steps[:-1]


def test_make_run_starts_in_every_phase(world: World) -> None:
    """The steps of ``make run`` before ``serve`` succeed in every phase (so the server
    starts, and answers by the phase); after live, demo data is not loaded, with a message
    saying why; ``serve`` itself is let through in every phase."""
    steps = _make_run_steps()
    assert [s[0] for s in steps] == ["db", "demo-data", "clients"]
    before = children(world.db)
    for step in steps:
        result = cli(world.app, *step)
        assert result.exit_code == 0, (step, result.output)
        if step[0] == "demo-data" and world.phase != "live":
            assert result.stdout.strip() == f"The directory {SKIPPED[world.phase]}: " \
                "`demo-data --if-empty` has nothing to do; nothing was written."
    assert children(world.db) == before
    serve = dict(commands(main))[("serve",)]
    assert allows(world.phase, declared_phase(serve).kind)  # type: ignore[union-attr]


def test_demo_data_load_is_refused_after_live(world: World) -> None:
    """``demo-data`` without ``--if-empty`` loads while live; afterwards it is refused with a
    non-zero exit and loads nothing."""
    held = children(world.db)
    result = cli(world.app, "demo-data", "--children", "2", "--authorities", "1", "--quiet")
    if world.phase == "live":
        assert result.exit_code == 0 and children(world.db) == held + 2, result.output
        return
    assert result.exit_code == PHASE_EXIT
    assert "`demo-data` writes children's data and is refused" in result.stderr
    assert children(world.db) == held


def test_an_undeclared_command_is_refused(world: World) -> None:
    """A command added without a declaration is refused before it runs."""
    ran: list[bool] = []

    @main.command("undeclared-for-test")
    def undeclared() -> None:
        """Would run."""
        ran.append(True)

    try:
        result = cli(world.app, "undeclared-for-test")
    finally:
        del main.commands["undeclared-for-test"]
    assert result.exit_code == 1 and "declares no kind" in result.stderr
    assert ran == []
