"""A real, off-the-shelf FHIR client against the gateway served on 127.0.0.1: the npm package
fhir-kit-client (pinned in tests/clients/package.json, installed by ``make test`` with
``npm ci``) drives an authority's system's day — metadata, conditional create (If-None-Exist),
read, vread, If-Match update and a stale one (412), search with paging by its ``next`` links,
history, a transaction with ``urn:uuid`` references, a batch and a delete — and each step's
outcome is checked against FHIR R4 http.html, on SQLite and on PostgreSQL."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.serving import make_server

from adapter.db import Database
from adapter.identifiers import make_test_nhs_number
from adapter.models import Organisation
from tests.security.helpers import get_token, register

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "fhir_kit_client.mjs"
NHS = "https://fhir.nhs.uk/Id/nhs-number"


@pytest.fixture
def served(app: Flask, demo: Database) -> Iterator[str]:
    """The gateway on the demo directory, served by werkzeug on a free port of 127.0.0.1 in a
    thread; its base URL (tokens are issued for, and checked at, this address)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app.config["PUBLIC_URL"] = base
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()
    thread.join(timeout=10)


def _authority(db: Database) -> str:
    """Return the GSS code of the first demo authority."""
    with db.sessions() as session:
        code = session.scalar(select(Organisation.gss_code).where(
            Organisation.type == "local-authority").order_by(Organisation.id))
    assert code is not None
    return code


def _get(client: FlaskClient, path: str, headers: dict[str, str]) -> Any:
    """Return the JSON answer of a GET that must succeed."""
    response = client.get(path, headers=headers)
    assert response.status_code == 200, (path, response.data[:300])
    return response.json


def _templates(client: FlaskClient, headers: dict[str, str],
               authority: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a Patient and an eCAF CareTeam as the authority's system would send them, made
    from one of its children and one of its assessments as the gateway gives them (no id, no
    meta, an assessment id the directory does not hold, the lead's role contained)."""
    bundle = _get(client, "/fhir/CareTeam?category=ecaf-tac&_include=CareTeam:subject"
                          "&_count=200", headers)
    children = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "Patient"}
    team, child = next(
        (e["resource"], children[e["resource"]["subject"]["reference"].split("/")[1]])
        for e in bundle["entry"] if e["resource"]["resourceType"] == "CareTeam"
        and e["resource"]["subject"]["reference"].split("/")[1] in children
        and children[e["resource"]["subject"]["reference"].split("/")[1]]
        ["managingOrganization"]["identifier"]["value"] == authority)
    patient = copy.deepcopy(child)
    for key in ("id", "meta", "identifier"):
        patient.pop(key, None)
    team = copy.deepcopy(team)
    for key in ("id", "meta", "subject"):
        team.pop(key)
    assessment = team["identifier"][0]["value"]
    team["identifier"][0]["value"] = assessment[:9] + "9990001"
    lead = team["participant"][0]
    role = _get(client, f"/fhir/{lead['member']['reference']}", headers)
    role.pop("meta")
    role["id"] = "lead"
    lead["member"] = {"reference": "#lead"}
    team["participant"], team["contained"] = [lead], [role]
    return patient, team


def run_client(tmp_path: Path, given: dict[str, Any]) -> dict[str, Any]:
    """Run the fhir-kit-client script with ``given``; return its steps' outcomes."""
    node = shutil.which("node")
    assert node, "Node.js is needed (README: what make test installs)"
    assert (HERE / "node_modules" / "fhir-kit-client").is_dir(), \
        "run `make test` (or `npm ci --prefix tests/clients`) to install fhir-kit-client"
    (tmp_path / "input.json").write_text(json.dumps(given), encoding="utf-8")
    done = subprocess.run([node, str(SCRIPT), str(tmp_path / "input.json")], cwd=HERE,
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    steps: dict[str, Any] = json.loads(done.stdout)
    return steps


def test_an_authority_system_on_fhir_kit_client(app: Flask, demo: Database, served: str,
                                                tmp_path: Path) -> None:
    """Each step answers as FHIR R4 http.html says, to the client as it is used."""
    authority = _authority(demo)
    client = app.test_client()
    who = register(app, "la-case-system", organisation=authority)  # no rights: an authority
    token = get_token(client, who)
    patient, team = _templates(client, {"Authorization": f"Bearer {token}"}, authority)
    serial = 2 * (uuid.uuid4().int % 400_000) + 1  # odd: the demo's numbers are even
    nhs = [make_test_nhs_number(serial), make_test_nhs_number(serial + 2)]
    steps = run_client(tmp_path, {"base": served, "token": token, "patient": patient,
                                  "nhsSystem": NHS, "nhsNumbers": nhs, "team": team})
    failed = {name: step for name, step in steps.items() if "error" in step
              and name != "staleUpdate"}
    assert not failed, failed

    metadata = steps["metadata"]
    assert metadata["status"] == 200 and metadata["fhirVersion"] == "4.0.1"
    assert {"transaction", "batch"} <= set(metadata["interactions"])

    # create (conditional, nothing matches): 201 with Location and ETag; the body, if any,
    # is the resource (http.html#ops: an OperationOutcome only when asked for).
    create = steps["create"]
    assert create["status"] == 201
    assert create["location"] == f"{served}/fhir/Patient/{create['id']}/_history/1"
    assert create["etag"] == 'W/"1"'
    assert create["resourceType"] in ("Patient", None)
    assert create["bodyId"] in (create["id"], None)
    created = create["id"]

    assert steps["read"] == {**steps["read"], "status": 200, "id": created, "versionId": "1",
                             "nhs": [nhs[0]]}
    assert steps["read"]["contentType"].startswith("application/fhir+json")
    assert steps["vread"]["status"] == 200 and steps["vread"]["versionId"] == "1"

    # conditional create that matches one: 200, nothing created (http.html#ccreate)
    again = steps["conditionalCreateAgain"]
    assert again["status"] == 200 and again["resourceType"] in ("Patient", None)
    assert again["bodyId"] in (created, None)
    assert again["matches"] == [created]

    update = steps["update"]
    assert update["status"] == 200 and update["etag"] == 'W/"2"'
    assert update["resourceType"] in ("Patient", None)
    assert update["versionId"] == "2" and update["gender"] == update["wanted"]

    stale = steps["staleUpdate"]  # If-Match of a version no longer current (http.html#concurrency)
    assert stale["status"] == 412, stale
    assert stale["body"]["resourceType"] == "OperationOutcome"
    assert steps["afterStale"]["versionId"] == "2"

    paging = steps["searchPaging"]
    assert paging["status"] == 200 and paging["pages"] >= 3
    assert len(paging["ids"]) == len(set(paging["ids"])) and created in paging["ids"]
    assert paging["pages"] == -(-len(paging["ids"]) // 7)

    history = steps["history"]
    assert history["status"] == 200 and history["type"] == "history"
    assert history["versions"] == ["2", "1"] and history["methods"] == ["PUT", "POST"]

    # transaction posted to "[base]/" (the client's own URL): urn:uuid resolved, 201 per create
    transaction = steps["transaction"]
    assert transaction["status"] == 200 and transaction["type"] == "transaction-response"
    assert [s.split()[0] for s in transaction["statuses"]] == ["201", "201"]
    assert transaction["subject"] == f"Patient/{transaction['patientId']}"

    batch = steps["batch"]
    assert batch["status"] == 200 and batch["type"] == "batch-response"
    assert [s.split()[0] for s in batch["statuses"]] == ["200", "200", "404"]
    assert batch["readId"] == created and batch["searchTotal"] == 1

    delete = steps["delete"]
    assert delete["status"] == 204 and delete["readAfter"] == 410
