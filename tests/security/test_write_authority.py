"""The write-authority matrix (adapter/security/policy/authority.py): an authority's system
cannot change another organisation's record (another authority, a GP practice, a school, an
NHS trust) nor a practitioner employed elsewhere, nor another authority's children, through
any write path: FHIR create and update (also conditional), transaction and batch Bundles,
directory XML (``POST /directory/entries`` and ``/directory/assessments``) and the ``import``
command ``--as`` a client. Each attempt is refused (per record, with a reason) and changes
nothing; its own records and plain references to shared records still work.

The write routes come from the app's URL map: a new one fails
``test_every_write_route_is_in_the_matrix`` until it has an attempt here.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import select

from adapter import systems
from adapter.db import Database
from adapter.directory.reader import iter_assessment_data, iter_entry_data
from adapter.directory.schema import NS
from adapter.directory.writer import write_assessments_data, write_entries_data
from adapter.identifiers import make_contactpoint_id
from adapter.models import Base
from adapter.security.caller import Caller
from adapter.security.policy import Described, shared_refusal
from tests.fhir.fixtures import (
    CAMHS,
    GP,
    LA,
    OTHER_LA,
    SCHOOL_URN,
    Env,
    callers,
    seed,
)
from tests.security.helpers import invoke
from tests.security.routes import declared_routes

FHIR_JSON: Final = {"Content-Type": "application/fhir+json"}
XML: Final = {"Content-Type": "application/xml"}
# The tables of children and of the shared records they name: "changes nothing" is every row
# of each, column by column.
DATA_TABLES: Final = ("organisation", "practitioner", "child", "child_name", "carer",
                      "involvement", "local_identifier", "assessment", "team_member")
# Write routes that write neither a child's data nor a shared record: a Subscription is the
# calling client's own record (adapter/notify: only its owner reads or changes it).
NOT_SHARED: Final = frozenset({("POST", "/fhir/Subscription"),
                               ("PUT", "/fhir/Subscription/<resource_id>"),
                               ("DELETE", "/fhir/Subscription/<resource_id>")})


@pytest.fixture
def env(app: Flask, client: FlaskClient, db: Database) -> Env:
    """The seeded directory of the FHIR API tests and its callers (``la`` is an authority's
    system with no rights; ``admin`` the national directory team)."""
    return Env(client, db, seed(db), callers(app, client))


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Return every row of the data tables, in id order."""
    with db.engine.connect() as connection:
        return {name: [tuple(row) for row in connection.execute(
            select(Base.metadata.tables[name]).order_by(Base.metadata.tables[name].c.id))]
            for name in DATA_TABLES}


def row_of(db: Database, table: str, **where: Any) -> dict[str, Any]:
    """Return one row of ``table`` as a dict."""
    target = Base.metadata.tables[table]
    with db.engine.connect() as connection:
        return dict(connection.execute(select(target).filter_by(**where)).mappings().one())


def read(env: Env, path: str) -> dict[str, Any]:
    """Return a FHIR resource as the national team reads it (the body an attempt changes)."""
    response = env.client.get(path, headers=env.who.admin)
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.json
    body.pop("meta", None)
    return body


def ods(code: str) -> str:
    """Return a conditional-update query naming an organisation by ODS code."""
    return f"identifier={systems.ODS_CODE}|{code}"


# --- the attempts: one per write route (and more), each by an authority's system ----------

@dataclass(frozen=True)
class Attempt:
    """One write an authority's system may not make, and the route it goes through."""

    name: str
    method: str
    rule: str
    send: Callable[[Env], Any]


def _changed_gp(env: Env) -> dict[str, Any]:
    body = read(env, f"/fhir/Organization/{env.world.orgs[GP]}")
    body["name"] = "Renamed Surgery"
    body["telecom"] = [{"system": "phone", "value": "0113 496 0111"}]
    return body


def _changed_camhs_worker(env: Env) -> dict[str, Any]:
    body = read(env, f"/fhir/Practitioner/{env.world.people['C1']}")
    body["name"] = [{"family": "Changedname", "given": ["Changed"]}]
    return body


def _other_child(env: Env) -> dict[str, Any]:
    body = read(env, f"/fhir/Patient/{env.world.other}")
    body["name"][0]["family"] = "Changedname"
    return body


def _school_changed_team(env: Env) -> dict[str, Any]:
    """The authority's own child's team with the school's involvement ended."""
    body = env.client.get(f"/fhir/CareTeam/{env.world.team}", headers=env.who.la).json
    body.pop("meta", None)
    school = env.world.roles["school"]
    for participant in body["participant"]:
        if participant["member"].get("reference") == f"PractitionerRole/{school}":
            participant["period"] = {**participant.get("period", {}), "end": "2025-07-31"}
            return dict(body)
    raise AssertionError("the team has no school participant")


def _put(path: str, body: Callable[[Env], dict[str, Any]]) -> Callable[[Env], Any]:
    return lambda env: env.client.put(path.format(w=env.world), json=body(env),
                                      headers={**env.who.la, **FHIR_JSON})


def _post(path: str, body: Callable[[Env], dict[str, Any]],
          who: str = "la") -> Callable[[Env], Any]:
    def send(env: Env) -> Any:
        resource = body(env)
        resource.pop("id", None)
        return env.client.post(path, json=resource,
                               headers={**getattr(env.who, who), **FHIR_JSON})
    return send


def _new_gp_worker(env: Env) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "identifier": [{
        "system": f"{env.client.application.config['CANONICAL_BASE']}/Id/local/{GP}",
        "value": "GP9"}], "name": [{"family": "Doctor", "given": ["Dana"]}]}


def _other_authority(env: Env) -> dict[str, Any]:
    body = read(env, f"/fhir/Organization/{env.world.orgs[OTHER_LA]}")
    body["telecom"] = [{"system": "phone", "value": "0113 496 0222"}]
    return body


def _delete(path: str, who: str = "la") -> Callable[[Env], Any]:
    return lambda env: env.client.delete(path.format(w=env.world),
                                         headers=getattr(env.who, who))


FHIR_ATTEMPTS: Final = (
    Attempt("update a GP practice", "PUT", "/fhir/Organization/<resource_id>",
            lambda env: env.client.put(f"/fhir/Organization/{env.world.orgs[GP]}",
                                       json=_changed_gp(env), headers={**env.who.la,
                                                                       **FHIR_JSON})),
    Attempt("conditionally update a GP practice", "PUT", "/fhir/Organization",
            lambda env: env.client.put(f"/fhir/Organization?{ods(GP)}", json={
                k: v for k, v in _changed_gp(env).items() if k != "id"},
                headers={**env.who.la, **FHIR_JSON})),
    Attempt("create another authority's record", "POST", "/fhir/Organization",
            _post("/fhir/Organization", _other_authority)),
    Attempt("update a practitioner employed elsewhere", "PUT",
            "/fhir/Practitioner/<resource_id>",
            lambda env: env.client.put(f"/fhir/Practitioner/{env.world.people['C1']}",
                                       json=_changed_camhs_worker(env),
                                       headers={**env.who.la, **FHIR_JSON})),
    Attempt("conditionally update a practitioner employed elsewhere", "PUT", "/fhir/Practitioner",
            lambda env: env.client.put(
                "/fhir/Practitioner?identifier=" + _changed_camhs_worker(env)["identifier"][0][
                    "system"] + "|C1", json={k: v for k, v in _changed_camhs_worker(env).items()
                                            if k != "id"},
                headers={**env.who.la, **FHIR_JSON})),
    Attempt("create a practitioner employed elsewhere", "POST", "/fhir/Practitioner",
            _post("/fhir/Practitioner", _new_gp_worker)),
    Attempt("update another authority's child", "PUT", "/fhir/Patient/<resource_id>",
            _put("/fhir/Patient/{w.other}", _other_child)),
    Attempt("conditionally update another authority's child", "PUT", "/fhir/Patient",
            lambda env: env.client.put(
                "/fhir/Patient?identifier=" + f"{env.client.application.config['CANONICAL_BASE']}"
                f"/Id/contactpoint-id|{make_contactpoint_id(3)}",
                json={k: v for k, v in _other_child(env).items() if k != "id"},
                headers={**env.who.la, **FHIR_JSON})),
    Attempt("create a child managed by another authority", "POST", "/fhir/Patient",
            _post("/fhir/Patient", _other_child)),
    Attempt("change the school's involvement on its own child", "PUT",
            "/fhir/CareTeam/<resource_id>",
            _put("/fhir/CareTeam/{w.team}", _school_changed_team)),
    Attempt("set another authority's child's team", "POST", "/fhir/CareTeam",
            _post("/fhir/CareTeam", lambda env: env.client.get(
                f"/fhir/CareTeam/{env.world.other_team}", headers=env.who.admin).json)),
    Attempt("conditionally update another organisation's eCAF team", "PUT", "/fhir/CareTeam",
            lambda env: env.client.put(
                "/fhir/CareTeam?identifier=" + f"{env.client.application.config['CANONICAL_BASE']}"
                f"/Id/ecaf-assessment|{env.world.ecaf_id}",
                json={k: v for k, v in read(env, f"/fhir/CareTeam/{env.world.ecaf}").items()
                      if k != "id"}, headers={**env.who.other_la, **FHIR_JSON})),
    Attempt("delete another organisation's eCAF team", "DELETE", "/fhir/CareTeam/<resource_id>",
            _delete("/fhir/CareTeam/{w.ecaf}", "other_la")),
    Attempt("end a GP practice's involvement", "DELETE", "/fhir/PractitionerRole/<resource_id>",
            lambda env: env.client.delete(f"/fhir/PractitionerRole/{env.world.roles['gp']}",
                                          headers=env.who.la)),
)


def test_fhir_writes_of_another_organisations_record_are_refused(env: Env) -> None:
    """Each FHIR write of another organisation's record (or child, or involvement) is 403
    with an OperationOutcome, and every row stays as it was (one seeded directory for all:
    none of them changes it)."""
    before = snapshot(env.db)
    for attempt in FHIR_ATTEMPTS:
        response = attempt.send(env)
        assert response.status_code == 403, (attempt.name, response.json)
        assert response.json["resourceType"] == "OperationOutcome", attempt.name
        assert response.json["issue"][0]["code"] == "forbidden", attempt.name
        assert snapshot(env.db) == before, attempt.name


def test_fhir_own_records_and_references_still_work(env: Env) -> None:
    """The authority changes its own record, its own practitioner and its own child (whose
    Patient refers to the GP practice): 200, and the shared records it refers to stay."""
    own = read(env, f"/fhir/Organization/{env.world.orgs[LA]}")
    own["telecom"] = [{"system": "phone", "value": "0113 496 0333"}]
    assert env.client.put(f"/fhir/Organization/{own['id']}", json=own,
                          headers={**env.who.la, **FHIR_JSON}).status_code == 200
    worker = read(env, f"/fhir/Practitioner/{env.world.people['SW1']}")
    worker["name"] = [{"family": "Worker-Smith", "given": ["Sam"]}]
    assert env.client.put(f"/fhir/Practitioner/{worker['id']}", json=worker,
                          headers={**env.who.la, **FHIR_JSON}).status_code == 200
    gp_before = row_of(env.db, "organisation", ods_code=GP)
    child = read(env, f"/fhir/Patient/{env.world.child}")
    child["name"][0]["family"] = "Lovelace-Byron"
    # Plain literal references (FHIR R4 references.html) to the shared records it names.
    child["managingOrganization"] = {"reference": f"Organization/{env.world.orgs[LA]}"}
    child["generalPractitioner"] = [{"reference": f"Organization/{env.world.orgs[GP]}"}]
    response = env.client.put(f"/fhir/Patient/{child['id']}", json=child,
                              headers={**env.who.la, **FHIR_JSON})
    assert response.status_code == 200, response.json
    assert row_of(env.db, "organisation", gss_code=LA)["phone"] == "0113 496 0333"
    assert row_of(env.db, "practitioner", local_id="SW1")["family"] == "Worker-Smith"
    assert row_of(env.db, "organisation", ods_code=GP) == gp_before
    assert response.json["managingOrganization"]["identifier"]["value"] == LA
    assert [gp["reference"] for gp in response.json["generalPractitioner"]] == [
        f"Organization/{env.world.orgs[GP]}"]
    child["name"][0]["family"] = "Lovelace-King"  # the national team, by the same references
    response = env.client.put(f"/fhir/Patient/{child['id']}", json=child,
                              headers={**env.who.admin, **FHIR_JSON})
    assert response.status_code == 200, response.json


# --- transaction and batch Bundles ---------------------------------------------------------

def _bundle(env: Env, kind: str) -> dict[str, Any]:
    """A Bundle changing the authority's own practitioner and a GP practice's record."""
    worker = read(env, f"/fhir/Practitioner/{env.world.people['SW1']}")
    worker["telecom"] = [{"system": "phone", "value": "0113 496 0444"}]
    gp = _changed_gp(env)
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"resource": worker, "request": {"method": "PUT", "url": f"Practitioner/{worker['id']}"}},
        {"resource": gp, "request": {"method": "PUT", "url": f"Organization/{gp['id']}"}},
    ]}


BUNDLE_ROUTE: Final = ("POST", "/fhir")


def test_a_transaction_changing_a_shared_record_is_refused_whole(env: Env) -> None:
    """A transaction with a change to a GP practice's record is 403 (the entry named) and
    applies nothing, not even its own practitioner's change (FHIR R4 http.html#transaction)."""
    before = snapshot(env.db)
    response = env.client.post("/fhir", json=_bundle(env, "transaction"),
                               headers={**env.who.la, **FHIR_JSON})
    assert response.status_code == 403, response.json
    assert response.json["resourceType"] == "OperationOutcome"
    assert snapshot(env.db) == before


def test_a_batch_refuses_the_shared_record_entry_only(env: Env) -> None:
    """In a batch the GP practice's entry is 403 and changes nothing; the authority's own
    practitioner's entry is applied."""
    gp_before = row_of(env.db, "organisation", ods_code=GP)
    response = env.client.post("/fhir", json=_bundle(env, "batch"),
                               headers={**env.who.la, **FHIR_JSON})
    assert response.status_code == 200, response.json
    statuses = [entry["response"]["status"] for entry in response.json["entry"]]
    assert statuses[0].startswith("200") and statuses[1].startswith("403"), statuses
    assert row_of(env.db, "organisation", ods_code=GP) == gp_before
    assert row_of(env.db, "practitioner", local_id="SW1")["phone"] == "0113 496 0444"


# --- directory XML ---------------------------------------------------------------------------

def exported_entry(env: Env) -> dict[str, Any]:
    """Return the authority's own child's entry as its system reads it (directory XML)."""
    response = env.client.get(f"/directory/entries/{make_contactpoint_id(1)}",
                              headers=env.who.la)
    assert response.status_code == 200, response.data[:300]
    _position, _line, data = next(iter_entry_data(io.BytesIO(response.data)))
    assert isinstance(data, dict)
    return data


def stored_organisation(env: Env, **key: str) -> dict[str, Any]:
    """Return a stored organisation as a directory record describes it."""
    from adapter.models.canonical import ORGANISATION_FIELDS

    row = row_of(env.db, "organisation", **key)
    return {name: row[name] for name in ORGANISATION_FIELDS}


def stored_practitioner(env: Env, local_id: str, employer: dict[str, Any]) -> dict[str, Any]:
    """Return a stored practitioner as a directory record describes them."""
    from adapter.models.canonical import PRACTITIONER_FIELDS

    row = row_of(env.db, "practitioner", local_id=local_id)
    return {**{name: row[name] for name in PRACTITIONER_FIELDS}, "organisation": employer}


def with_involvement(data: dict[str, Any], role: str, org: dict[str, Any],
                     person: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a copy of an entry with one more involvement."""
    changed = copy.deepcopy(data)
    template = copy.deepcopy(changed["involvements"][0])
    template.update(role=role, organisation=org, practitioner=person, lead_professional=False,
                    caf_completed=False, phone=None, email=None)
    changed["involvements"].append(template)
    return changed


def gp_renamed(data: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of an entry whose GP practice has another name and telephone."""
    changed = copy.deepcopy(data)
    for involvement in changed["involvements"]:
        if involvement["organisation"]["ods_code"] == GP:
            involvement["organisation"].update(name="Renamed Surgery", phone="0113 496 0111")
            return changed
    raise AssertionError("the entry has no GP practice")


def entries_document(records: list[dict[str, Any]]) -> bytes:
    """Return a DirectoryEntries batch of canonical entry dicts."""
    stream = io.BytesIO()
    write_entries_data(records, stream)
    return stream.getvalue()


def report_records(body: bytes) -> list[tuple[str, str | None, str | None]]:
    """Return (status, reason, expression) of each record of an import report."""
    root = etree.fromstring(body)
    return [(record.findtext(f"{{{NS}}}Status") or "", record.findtext(f"{{{NS}}}Reason"),
             record.find(f"{{{NS}}}Reason").get("expression")
             if record.find(f"{{{NS}}}Reason") is not None else None)
            for record in root.iter(f"{{{NS}}}Record")]


def refused_entries(env: Env) -> tuple[list[dict[str, Any]], list[str]]:
    """Return variants of the authority's own child's entry each changing a shared record
    it does not own, and the path each is refused at."""
    data = exported_entry(env)
    other_la = stored_organisation(env, gss_code=OTHER_LA)
    camhs = stored_organisation(env, ods_code=CAMHS)
    renamed = {**stored_practitioner(env, "C1", camhs), "family": "Changedname"}
    count = len(data["involvements"])
    return ([gp_renamed(data),
             with_involvement(data, "youth-offending", {**other_la, "phone": "0113 496 0222"}),
             with_involvement(data, "health-visitor", camhs, renamed)],
            [f"DirectoryEntry/Involvement[{n}]/Organisation" for n in
             [_gp_position(data), count + 1]] + [f"DirectoryEntry/Involvement[{count + 1}]"
                                                 "/Practitioner"])


def _gp_position(data: dict[str, Any]) -> int:
    """Return the 1-based position of the GP practice's involvement."""
    return next(index for index, involvement in enumerate(data["involvements"], start=1)
                if involvement["organisation"]["ods_code"] == GP)


DIRECTORY_ROUTES: Final = (("POST", "/directory/entries"), ("POST", "/directory/assessments"))


def test_an_entry_cannot_rewrite_the_shared_records_it_names(env: Env) -> None:
    """The authority posts its own child's entry naming another authority with changed
    contact details, its GP practice with changed details, a practitioner employed by an NHS
    trust with a changed name: each record is rejected with the path and a reason, and no
    row changes."""
    variants, paths = refused_entries(env)
    before = snapshot(env.db)
    response = env.client.post("/directory/entries", data=entries_document(variants),
                               headers={**env.who.la, **XML})
    assert response.status_code == 200, response.data[:300]
    outcomes = report_records(response.data)
    assert [status for status, _reason, _path in outcomes] == ["rejected"] * 3
    assert [path for _status, _reason, path in outcomes] == paths
    assert all(reason and reason.startswith("not your record: ") for _s, reason, _p in outcomes)
    assert snapshot(env.db) == before


def test_an_entry_may_refer_to_shared_records_and_change_its_own(env: Env) -> None:
    """Naming the other authority and the NHS trust's practitioner as the directory holds
    them, renaming its own social worker and changing its own contact details: updated; the
    shared records stay."""
    data = exported_entry(env)
    camhs = stored_organisation(env, ods_code=CAMHS)
    data = with_involvement(data, "youth-offending", stored_organisation(env, gss_code=OTHER_LA))
    data = with_involvement(data, "health-visitor", camhs, stored_practitioner(env, "C1", camhs))
    own = [data["managing_organisation"], *(i["organisation"] for i in data["involvements"]),
           *(i["practitioner"]["organisation"] for i in data["involvements"] if i["practitioner"])]
    for org in own:
        if org["gss_code"] == LA:  # one description of an organisation per record
            org["phone"] = "0113 496 0555"
    for involvement in data["involvements"]:
        if involvement["practitioner"] and involvement["practitioner"]["local_id"] == "SW1":
            involvement["practitioner"]["family"] = "Worker-Jones"
    shared = {(column, code): row_of(env.db, "organisation", **{column: code})
              for column, code in (("ods_code", GP), ("gss_code", OTHER_LA), ("ods_code", CAMHS))}
    c1 = row_of(env.db, "practitioner", local_id="C1")
    response = env.client.post("/directory/entries", data=entries_document([data]),
                               headers={**env.who.la, **XML})
    assert [status for status, _r, _p in report_records(response.data)] == ["updated"], \
        report_records(response.data)
    assert all(row_of(env.db, "organisation", **{column: code}) == row
               for (column, code), row in shared.items())
    assert row_of(env.db, "practitioner", local_id="C1") == c1
    assert row_of(env.db, "practitioner", local_id="SW1")["family"] == "Worker-Jones"
    assert row_of(env.db, "organisation", gss_code=LA)["phone"] == "0113 496 0555"


def exported_assessment(env: Env) -> dict[str, Any]:
    """Return the authority's eCAF assessment reference as its system reads it."""
    response = env.client.get(f"/directory/assessments/{env.world.ecaf_id}", headers=env.who.la)
    assert response.status_code == 200, response.data[:300]
    _position, _line, data = next(iter_assessment_data(io.BytesIO(response.data)))
    assert isinstance(data, dict)
    return data


def renamed_school_reference(env: Env) -> bytes:
    """Return a batch of the authority's assessment reference naming the school otherwise."""
    data = exported_assessment(env)
    for member in data["members"]:
        if member["organisation"]["urn"] == SCHOOL_URN:
            member["organisation"]["name"] = "Renamed Academy"
    stream = io.BytesIO()
    write_assessments_data([data], stream)
    return stream.getvalue()


def test_an_assessment_reference_cannot_rewrite_a_school(env: Env) -> None:
    """An assessment reference naming the school with another name is rejected at that
    member's path and changes nothing; naming it as the directory holds it, it applies."""
    data = exported_assessment(env)
    data["phone"] = row_of(env.db, "assessment", assessment_id=env.world.ecaf_id)["phone"]
    changed = copy.deepcopy(data)
    position = next(index for index, member in enumerate(changed["members"], start=1)
                    if member["organisation"]["urn"] == SCHOOL_URN)
    changed["members"][position - 1]["organisation"]["name"] = "Renamed Academy"
    before = snapshot(env.db)
    for record, expected in ((changed, ("rejected", f"AssessmentReference/TeamMember[{position}]"
                                                    "/Organisation")), (data, ("unchanged", None))):
        stream = io.BytesIO()
        write_assessments_data([record], stream)
        response = env.client.post("/directory/assessments", data=stream.getvalue(),
                                   headers={**env.who.la, **XML})
        status, _reason, path = report_records(response.data)[0]
        assert (status, path) == expected
    assert snapshot(env.db) == before


# --- the import command ----------------------------------------------------------------------

def test_cli_import_as_an_authority_is_refused_per_record(env: Env, app: Flask,
                                                          tmp_path: Path) -> None:
    """``import --as`` the authority's client: directory XML entries and assessment
    references, a FHIR transaction and NDJSON resources changing shared records are rejected
    (exit code 1, the reason printed) and change nothing; the operator (the national
    directory team, without ``--as``) may change them."""
    variants, _paths = refused_entries(env)
    batch = tmp_path / "entries.xml"
    batch.write_bytes(entries_document(variants))
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(orjson.dumps(_bundle(env, "transaction")))
    resources = tmp_path / "resources.ndjson"
    resources.write_bytes(orjson.dumps(_changed_gp(env)) + b"\n"
                          + orjson.dumps(_changed_camhs_worker(env)) + b"\n")
    references = tmp_path / "references.xml"
    references.write_bytes(renamed_school_reference(env))
    before = snapshot(env.db)
    for path in (batch, bundle, resources, references):
        result = invoke(app, "import", str(path), "--as", "la", "--quiet")
        assert result.exit_code == 1, result.output
        assert snapshot(env.db) == before, path.name
    assert "not your record: " in invoke(app, "import", str(batch), "--as", "la",
                                         "--quiet").output
    single = tmp_path / "gp-renamed.xml"
    single.write_bytes(entries_document(variants[:1]))
    operator = invoke(app, "import", str(single), "--quiet")
    assert operator.exit_code == 0, operator.output
    assert row_of(env.db, "organisation", ods_code=GP)["name"] == "Renamed Surgery"


# --- every write route is in the matrix --------------------------------------------------------

def test_every_write_route_is_in_the_matrix(app: Flask) -> None:
    """The write routes of the URL map are exactly those the matrix attempts, and the
    Subscription routes that write no shared record or child (a new write route fails here
    until it has an attempt)."""
    writes = {(route.method, route.rule) for route in declared_routes(app)
              if route.access is not None and route.access.kind == "write"}
    covered = {(attempt.method, attempt.rule) for attempt in FHIR_ATTEMPTS}
    covered |= {BUNDLE_ROUTE, *DIRECTORY_ROUTES}
    assert writes == covered | NOT_SHARED


# --- the policy's decisions on descriptions of shared records ----------------------------------

class Held:
    """Stored shared records held in memory, by ODS code and (employer ODS code, staff id)."""

    def __init__(self, orgs: list[dict[str, Any]], people: list[dict[str, Any]]) -> None:
        self.orgs = {org["ods_code"]: org for org in orgs}
        self.people = {(p["organisation"]["ods_code"], p["local_id"]): p for p in people}

    def organisation(self, described: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return self.orgs.get(described["ods_code"])

    def practitioner(self, described: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return self.people.get((described["organisation"]["ods_code"], described["local_id"]))


def _caller(organisation: str, *rights: str) -> Caller:
    return Caller("test", organisation, [], frozenset(rights))


def test_the_policy_on_descriptions_of_shared_records() -> None:
    """A detail left out is no change for an organisation (it is kept) but is one for a
    practitioner (every detail is taken); the owner and an administrator may change them; a
    record not held yet is introduced; the refusal names the code and the path."""
    from adapter.models.canonical import ORGANISATION_FIELDS, PRACTITIONER_FIELDS

    gp = {**dict.fromkeys(ORGANISATION_FIELDS), "name": "Oak Surgery", "type": "gp-practice",
          "ods_code": GP, "phone": "0113 496 0001"}
    doctor = {**dict.fromkeys(PRACTITIONER_FIELDS), "local_id": "D1", "family": "Doe",
              "given": ["Jo"], "phone": "0113 496 0002", "organisation": gp}
    held = Held([gp], [doctor])
    la = _caller(LA)

    def refusal(kind: str, data: dict[str, Any], caller: Caller = la) -> Any:
        return shared_refusal([Described("Here", kind, data)], held, caller)

    assert refusal("organisation", {**gp, "phone": None}) is None
    assert refusal("practitioner", dict(doctor)) is None
    refused = refusal("organisation", {**gp, "name": "Renamed"})
    assert refused is not None and refused.expression == "Here" and GP in refused.message
    assert refused.status == 403
    assert refusal("practitioner", {**doctor, "phone": None}) is not None
    assert refusal("organisation", {**gp, "name": "Renamed"}, _caller(GP)) is None
    assert refusal("practitioner", {**doctor, "family": "Roe"}, _caller(LA, "admin")) is None
    assert refusal("organisation", {**gp, "ods_code": "A81002", "name": "New"}) is None
