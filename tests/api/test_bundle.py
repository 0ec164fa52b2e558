"""POST /fhir: transaction (all or nothing) and batch (each entry on its own) Bundles."""

from __future__ import annotations

import copy
from typing import Any

from flask.testing import FlaskClient

from adapter import systems
from adapter.db import Database
from tests.api.conftest import Callers, fresh_nhs_number
from tests.api.test_patient import own_patient


def _put(resource: dict[str, Any]) -> dict[str, Any]:
    """Return a PUT entry for ``resource``."""
    return {"resource": resource,
            "request": {"method": "PUT", "url": f"Patient/{resource['id']}"}}


def _two_updates(client: FlaskClient, callers: Callers) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a valid and an invalid update of two entries."""
    bundle = client.get("/fhir/Patient?_count=60", headers=callers.admin).json
    own = [e["resource"] for e in bundle["entry"]
           if e["resource"]["managingOrganization"]["identifier"]["value"] == callers.authority
           and "R" not in {s["code"] for s in e["resource"]["meta"].get("security", [])}]
    good, bad = copy.deepcopy(own[0]), copy.deepcopy(own[1])
    good["gender"] = "unknown" if good["gender"] != "unknown" else "female"
    bad["birthDate"] = "not-a-date"
    return good, bad


def test_transaction_with_an_invalid_entry_changes_nothing(client: FlaskClient,
                                                           callers: Callers) -> None:
    """One invalid entry fails the whole transaction; the good one is not applied."""
    good, bad = _two_updates(client, callers)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [_put(good), _put(bad)]}
    response = client.post("/fhir", json=bundle, headers=callers.admin)
    assert response.status_code == 422
    assert response.json["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    after = client.get(f"/fhir/Patient/{good['id']}", headers=callers.admin).json
    assert after["meta"]["versionId"] == good["meta"]["versionId"]


def test_batch_applies_good_entries_and_reports_the_bad(client: FlaskClient,
                                                        callers: Callers) -> None:
    """A batch applies each valid entry and reports each invalid one with its position."""
    good, bad = _two_updates(client, callers)
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [_put(good), _put(bad)]}
    response = client.post("/fhir", json=bundle, headers=callers.admin)
    assert response.status_code == 200
    body = response.json
    assert body["type"] == "batch-response"
    first, second = body["entry"]
    assert first["response"]["status"] == "200 OK"
    assert first["response"]["location"].startswith("http://localhost/fhir/Patient/")
    assert second["response"]["status"] == "422"
    assert "entry 1" in second["response"]["outcome"]["issue"][0]["diagnostics"]
    after = client.get(f"/fhir/Patient/{good['id']}", headers=callers.admin).json
    assert after["gender"] == good["gender"]


def test_transaction_resolves_urn_uuid_and_reads(client: FlaskClient, callers: Callers,
                                                 demo: Database) -> None:
    """A POST with a urn:uuid fullUrl is created; a GET in the same Bundle is answered."""
    patient = own_patient(client, callers)
    for key in ("id", "meta"):
        patient.pop(key)
    # Another child: one live entry per NHS number (tests/api/test_patient_rules.py).
    patient["identifier"] = [{"system": systems.NHS_NUMBER, "value": fresh_nhs_number(demo)}]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0f9a2b36-7d41-4c8e-9c0e-1d5b8f7a6e21", "resource": patient,
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient?_count=1"}},
    ]}
    response = client.post("/fhir", json=bundle, headers=callers.admin)
    assert response.status_code == 200, response.json
    created, search = response.json["entry"]
    assert created["response"]["status"] == "201 Created"
    assert created["response"]["etag"] == 'W/"1"'
    assert search["resource"]["type"] == "searchset"


def test_bundle_of_wrong_type_is_refused(client: FlaskClient, callers: Callers) -> None:
    """Only transaction and batch Bundles are accepted."""
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"},
                           headers=callers.admin)
    assert response.status_code == 400
    assert response.json["issue"][0]["expression"] == ["Bundle.type"]
