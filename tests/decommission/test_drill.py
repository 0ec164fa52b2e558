"""The full decommissioning drill, on SQLite and PostgreSQL: demo data,
four systems that received different children (three of them subscribers), plan, run-down
(writes refused everywhere, reads, exports and re-keying allowed), switch-off (reads refused,
purge Tasks naming exactly each system's children), two acknowledge, one rejects, one stays
silent and is escalated, destruction, a certificate that verifies — and no canary left in the
database files, with every step in the audit trail."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
from fhir.resources.R4B.plandefinition import PlanDefinition as PlanDefinitionModel
from fhir.resources.R4B.task import Task as TaskModel
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import select, text

from adapter.db import Database
from adapter.directory.schema import DECOMMISSION_XSD, load_schema
from adapter.fhir.conformance import OWN_DEFINITIONS, Validator, has_errors
from adapter.fhir.profiles import DefinitionRegistry
from adapter.models import AuditRecord
from adapter.security.access import access_of
from tests.conftest import CONFORMANCE, _pg_admin_conninfo
from tests.decommission.drill import (
    Drill,
    export_as_la_four,
    export_as_operator,
    export_folder,
    found_canaries,
    read_as_sub_b,
    start,
)
from tests.decommission.test_certificate_recipe import recipe
from tests.decommission.test_certificate_recipe import run as run_recipe
from tests.notify.helpers import dispatch
from tests.notify.receivers import Receiver

PLAN = ("plan", "--last-use", "2099-08-05", "--switch-off", "2099-08-06",
        "--escalate-days", "0")


def write_routes(app: Flask) -> list[tuple[str, str]]:
    """Return (path, method) of every route declared ``write``, with sample values."""
    found = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            access = access_of(rule.endpoint)
            if access is not None and access.kind == "write":
                path = rule.rule.replace("<", "").replace(">", "")
                for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                    found.append((path, method))
    return found


def check_run_down(drill: Drill) -> None:
    """Writes refused everywhere (409 with the timetable); reads and metadata answer."""
    routes = write_routes(drill.app)
    assert len(routes) >= 8
    for path, method in routes:
        response = drill.client.open(path, method=method, data=b"{}",
                                     headers={**drill.headers["la-one"], **{
                                         "Content-Type": "application/fhir+json"}})
        assert response.status_code == 409, (path, method, response.data[:200])
        issue = response.json["issue"][0]
        assert issue["code"] == "business-rule" and "run-down" in issue["diagnostics"]
        assert "switch-off at 6 August 2099 12:00 BST" in issue["diagnostics"]
    assert drill.client.get("/healthz").json["phase"] == "run-down"
    assert "phase: run-down" in drill.client.get("/fhir/metadata").json["description"]
    from adapter.cli import demo_data_command

    result = drill.runner.invoke(demo_data_command, ["--children", "1", "--quiet"])
    assert result.exit_code != 0 and "run-down" in result.output


def rekey_as_sub_c(drill: Drill) -> None:
    """sub-c (the authority's eCAF system) fetches its re-keying mapping in both forms."""
    xml = drill.get("sub-c", "/directory/assessments/rekey")
    assert xml.status_code == 200, xml.data[:300]
    root = etree.fromstring(xml.data)
    load_schema(DECOMMISSION_XSD).assertValid(root)
    fhir = drill.get("sub-c", "/fhir/CareTeam/$rekey?_count=1000")
    assert fhir.status_code == 200, fhir.json
    patients = {p["valueReference"]["reference"].split("/")[1]
                for item in fhir.json.get("parameter", []) if item["name"] == "rekey"
                for p in item["part"] if p["name"] == "patient"}
    records = root.findall("{urn:contactpoint-gateway:directory:1}Rekey")
    assert len(records) == len([i for i in fhir.json["parameter"] if i["name"] == "rekey"]) > 0
    drill.received["sub-c"] = patients


def tasks_by_client(drill: Drill) -> dict[str, dict[str, Any]]:
    """Return every purge Task (as the admin sees them) by the client id it names."""
    bundle = drill.get("admin", "/fhir/Task?_count=100").json
    from adapter.models import PurgeTask

    with drill.db.sessions() as session:
        owners = dict(session.execute(select(PurgeTask.resource_id, PurgeTask.client_id)).all())
    return {owners[e["resource"]["id"]]: e["resource"] for e in bundle.get("entry", [])}


def named(drill: Drill, who: str, task: dict[str, Any]) -> set[str]:
    """Return the children a Task names: inline, or in its NDJSON list (read as its owner)."""
    refs = {i["valueReference"]["reference"].split("/")[1] for i in task["input"]
            if "valueReference" in i}
    for item in task["input"]:
        if "valueAttachment" in item:
            url = item["valueAttachment"]["url"].replace("http://localhost", "")
            response = drill.get(who, url)
            assert response.status_code == 200 and \
                response.mimetype == "application/fhir+ndjson"
            refs |= {orjson.loads(line)["id"] for line in response.data.splitlines()}
    return refs


def check_switched_off(drill: Drill) -> dict[str, dict[str, Any]]:
    """Reads refused; one Task per holder naming exactly its children, sent to subscribers."""
    for who, path in (("sub-b", f"/fhir/Patient/{drill.canary_ids[0]}"),
                      ("la-four", "/fhir/$export?_type=Patient"),
                      ("sub-c", "/directory/assessments/rekey"),
                      ("la-one", "/fhir/Patient?family=Zan")):
        response = drill.get(who, path, headers={"Prefer": "respond-async"})
        assert response.status_code == 410, (path, response.data[:200])
    tasks = tasks_by_client(drill)
    assert set(tasks) == {"sub-a", "sub-b", "sub-c", "la-four"}
    for who, task in tasks.items():
        assert named(drill, who, task) == drill.received[who], who
        assert task["status"] == "requested" and task["intent"] == "order"
        assert task["restriction"]["period"]["end"].startswith("2099-10-06T11:00:00")
    assert any("valueAttachment" in i for i in tasks["la-four"]["input"])
    check_conformance(drill, list(tasks.values()))
    dispatch(drill.app)
    for who in ("sub-a", "sub-b", "sub-c"):
        delivered = [orjson.loads(r.body) for r in drill.receiver.bodies(f"/{who}/purge")]
        ids = {e["resource"]["id"] for b in delivered for e in b.get("entry", [])[1:]
               if "resource" in e}
        assert ids == {tasks[who]["id"]}, who
    return tasks


def check_conformance(drill: Drill, tasks: list[dict[str, Any]]) -> None:
    """Tasks are valid R4 and UK Core Tasks; the plan a valid PlanDefinition; each declared
    search parameter of both finds its sample."""
    validator = Validator(DefinitionRegistry([OWN_DEFINITIONS, CONFORMANCE / "uk-core"]))
    for task in tasks:
        TaskModel.model_validate(task)
        assert not has_errors(validator.check(task)), validator.check(task)
    plan = drill.get("sub-a", "/fhir/PlanDefinition/decommission-plan").json
    PlanDefinitionModel.model_validate(plan)
    xml = drill.get("sub-a", "/fhir/PlanDefinition/decommission-plan?_format=xml")
    assert xml.status_code == 406
    statement = drill.client.get("/fhir/metadata").json
    declared = {r["type"]: r for r in statement["rest"][0]["resource"]}
    samples = {"Task": tasks[0], "PlanDefinition": plan}
    values = {"_id": lambda r: r["id"], "status": lambda r: r["status"],
              "code": lambda r: f"{r['code']['coding'][0]['system']}|purge"}
    for kind, sample in samples.items():
        for param in declared[kind]["searchParam"]:
            for fmt in ("json", "xml") if kind == "Task" else ("json",):
                url = f"/fhir/{kind}?{param['name']}={values[param['name']](sample)}&_format={fmt}"
                response = drill.get("admin", url)
                assert response.status_code == 200 and sample["id"].encode() in response.data, url


def answer(drill: Drill, who: str, task: dict[str, Any], status: str,
           **extra: Any) -> Any:
    """Update a Task's status as ``who``; return the response."""
    return drill.put(who, f"/fhir/Task/{task['id']}", {**task, "status": status, **extra})


def acknowledge(drill: Drill, tasks: dict[str, dict[str, Any]]) -> None:
    """sub-a and sub-b complete, sub-c rejects; others' Tasks are out of reach."""
    base = "https://fhir.contactpoint-gateway.example.org/CodeSystem/decommission"
    other = tasks["sub-b"]
    assert drill.get("sub-a", f"/fhir/Task/{other['id']}").status_code == 404
    assert answer(drill, "sub-a", other, "accepted").status_code == 404
    assert answer(drill, "admin", other, "accepted").status_code == 403
    for who in ("sub-a", "sub-b"):
        task = tasks[who]
        assert answer(drill, who, task, "accepted").status_code == 200
        bare = answer(drill, who, task, "completed")
        assert bare.status_code == 422 and "purge-count" in bare.json["issue"][0]["diagnostics"]
        output = [{"type": {"coding": [{"system": base, "code": "purge-count"}]},
                   "valueUnsignedInt": len(drill.received[who])}]
        done = answer(drill, who, task, "completed", output=output)
        assert done.status_code == 200 and done.json["status"] == "completed", done.json
        assert answer(drill, who, task, "accepted").status_code == 409
    assert answer(drill, "sub-c", tasks["sub-c"], "rejected").status_code == 422
    rejected = answer(drill, "sub-c", tasks["sub-c"], "rejected",
                      statusReason={"text": "Our eCAF records must be kept under statute"})
    assert rejected.status_code == 200 and rejected.json["status"] == "rejected"


def check_reminders_and_escalation(drill: Drill) -> None:
    """Only the silent system is reminded; the escalation lists it (and the rejection)."""
    reminded = drill.cli("remind", "--now")
    assert reminded.exit_code == 0 and "1 reminders sent" in reminded.output, reminded.output
    escalated = drill.cli("escalation")
    assert escalated.exit_code == 0, escalated.output
    lines = escalated.output.splitlines()
    assert lines[0].split()[:2] == ["SYSTEM", "ORGANISATION"] and "2 escalated" in lines[-1]
    assert {line.split()[0] for line in lines[1:-1]} == {"la-four", "sub-c"}
    status = orjson.loads(drill.cli("status", "--json").output)
    assert {t["client_id"]: t["shown"] for t in status["tasks"] if t["escalated"]} == {
        "la-four": "silent", "sub-c": "rejected"}
    board = drill.get("admin", "/admin/decommission")
    assert board.status_code == 200 and board.mimetype == "text/html"
    page = board.data.decode()
    assert "Switched off" in page and "la-four" in page and "silent" in page


def database_bytes(drill: Drill) -> bytes:
    """Return the raw bytes of the database: the SQLite file and its WAL, or a pg_dump."""
    if drill.db.is_sqlite:
        path = Path(str(drill.db.engine.url.database))
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    with drill.db.engine.connect() as connection:
        schema = connection.execute(text("SELECT current_schema()")).scalar_one()
    conninfo = _pg_admin_conninfo(str(drill.db.url))
    dump = subprocess.run(["pg_dump", "--no-owner", "-n", schema, "-d", conninfo],
                          capture_output=True, check=True)
    return dump.stdout


def destroy_and_verify(drill: Drill, tmp_path: Path) -> None:
    """Destroy (refused before destroy-by without the override), then verify."""
    assert drill.cli("destroy").exit_code != 0
    early = drill.cli("destroy", "--yes")
    assert early.exit_code != 0 and "--override REASON" in early.output
    assert "destroy-by is 6 October 2099 12:00 BST" in early.output
    assert found_canaries(database_bytes(drill))  # the search would find them
    assert any(export_folder(drill.app).rglob("*.ndjson"))
    done = drill.cli("destroy", "--yes", "--override", "drill: destroy-by is in 2099")
    assert done.exit_code == 0, done.output
    assert found_canaries(database_bytes(drill)) == []
    assert not list(export_folder(drill.app).rglob("*"))
    folder = Path(drill.app.config["INSTANCE_PATH"]) / "decommission"
    for name in ("certificate.json", "certificate.xml"):
        checked = drill.cli("verify-certificate", str(folder / name), "--jwks",
                            str(folder / "jwks.json"))
        assert checked.exit_code == 0, checked.output
        assert "signature verifies" in checked.output and "records match" in checked.output
        independent = run_recipe(recipe(tmp_path), folder / name, folder / "jwks.json")
        assert independent.returncode == 0, independent.stderr
    document = orjson.loads((folder / "certificate.json").read_bytes())
    document["certificate"]["tables"][0]["after"] += 1
    forged = tmp_path / "forged.json"
    forged.write_bytes(orjson.dumps(document))
    assert drill.cli("verify-certificate", str(forged)).exit_code != 0
    xml = (folder / "certificate.xml").read_bytes().replace(b"<Status>rejected<",
                                                            b"<Status>completed<")
    (tmp_path / "forged.xml").write_bytes(xml)
    assert drill.cli("verify-certificate", str(tmp_path / "forged.xml")).exit_code != 0
    certificate = document["certificate"]
    acks = {a["client"]: a["shown"] for a in certificate["acknowledgements"]}
    assert acks == {"sub-a": "completed", "sub-b": "completed", "sub-c": "rejected",
                    "la-four": "silent"}
    tables = {t["name"]: (t["before"], t["after"]) for t in certificate["tables"]}
    assert tables["child"][0] > 0 and tables["child"][1] == 0
    assert certificate["destruction"]["override"]["reason"] == "drill: destroy-by is in 2099"
    check_final_notice(drill, certificate)
    exports = certificate["destruction"]["operatorExports"]
    assert exports["exports"] == 1 and exports["filesRemoved"] >= 2
    assert exports["filesMissing"] == 0 and exports["folders"][0].endswith("operator-export")
    assert tables["record_version"][1] == tables["delivery_ledger"][1] == 0


def check_final_notice(drill: Drill, certificate: dict[str, Any]) -> None:
    """The destruction was announced to every decommission-notice subscriber before the
    subscriptions ended, and the certificate lists each delivery."""
    from adapter.models import Subscription

    for who in ("sub-a", "sub-b", "sub-c"):
        last = orjson.loads(drill.receiver.bodies(f"/{who}/notice")[-1].body)
        plan = last["entry"][1]["resource"]
        assert plan["resourceType"] == "PlanDefinition" and plan["status"] == "retired"
        assert plan["useContext"][0]["valueCodeableConcept"]["coding"][0]["code"] == "destroyed"
    notice = certificate["finalNotice"]
    assert sorted((n["client"], n["delivered"]) for n in notice) == [
        ("sub-a", True), ("sub-b", True), ("sub-c", True)]
    assert all(n["at"] and n["channel"] == "rest-hook" for n in notice)
    with drill.db.sessions() as session:
        assert set(session.scalars(select(Subscription.status))) == {"off"}


def check_audit_trail(drill: Drill) -> None:
    """Every transition, instruction, acknowledgement and the destruction are recorded; no
    child's reference is left in clear."""
    with drill.db.sessions() as session:
        records = list(session.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    actions = [r.action for r in records]
    assert actions.count("decommission-plan") == 1
    phases = [r.detail for r in records if r.action == "decommission-phase"]
    assert phases == ["live -> run-down", "run-down -> switched-off",
                      "switched-off -> destroyed"]
    assert actions.count("purge-instruct") == 4
    acks = [r.detail for r in records if r.action == "purge-ack"]
    assert len(acks) == 5 and sum("completed" in a for a in acks) == 2
    assert actions.count("purge-remind") == 1 and actions.count("purge-escalate") == 2
    assert actions.count("decommission-destroy") == 1
    refs = [r.child_ref for r in records if r.child_ref is not None]
    assert refs and all(ref.startswith("hmac:") for ref in refs)


def check_after(drill: Drill) -> None:
    """After destruction: metadata and health say so; only metadata answers."""
    statement = drill.client.get("/fhir/metadata").json
    assert statement["status"] == "retired" and "phase: destroyed" in statement["description"]
    assert drill.client.get("/healthz").json["phase"] == "destroyed"
    tasks = drill.get("sub-a", "/fhir/Task")
    assert tasks.status_code == 410
    plan = drill.get("sub-a", "/fhir/PlanDefinition/decommission-plan")
    assert plan.status_code == 200 and plan.json["status"] == "retired"
    assert drill.client.get("/decommission/certificate.json").status_code == 200
    assert drill.client.get("/decommission/certificate.xml").status_code == 200
    assert drill.client.get("/decommission/jwks.json").status_code == 200
    board = drill.get("admin", "/admin/decommission")
    assert board.status_code == 200
    page = board.data.decode()
    assert "Destroyed" in page and "delivered to 3 of 3 subscriptions" in page
    assert "2 of 4 systems had not completed by the destruction" in page
    assert "Nobody to escalate" not in page


def test_full_drill(app: Flask, client: FlaskClient, db: Database, receiver: Receiver,
                    tmp_path: Path) -> None:
    """The drill, end to end."""
    drill = start(app, client, db, receiver)
    planned = drill.cli(*PLAN)
    assert planned.exit_code == 0, planned.output
    waiting = drill.cli("advance")  # not due until 2099: nothing to do is no failure
    assert waiting.exit_code == 0 and waiting.output.startswith("nothing due"), waiting.output
    assert drill.cli("advance", "--now").output.strip() == "live -> run-down"
    check_run_down(drill)
    read_as_sub_b(drill)
    export_as_la_four(drill)
    operator = export_as_operator(drill)
    rekey_as_sub_c(drill)
    assert drill.ledger() == {k: v for k, v in drill.received.items()}  # no operator holding
    switched = drill.cli("advance", "--now")
    assert "4 purge tasks issued" in switched.output, switched.output
    tasks = check_switched_off(drill)
    acknowledge(drill, tasks)
    check_reminders_and_escalation(drill)
    destroy_and_verify(drill, tmp_path)
    assert not operator.exists()
    check_audit_trail(drill)
    check_after(drill)
