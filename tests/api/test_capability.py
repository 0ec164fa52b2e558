"""The CapabilityStatement promises only what works: every declared search parameter finds a
known resource, and every declared interaction answers, in JSON and in XML."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from lxml import etree

from adapter.registry import PUBLISHED_TYPES
from tests.api.conftest import Callers

Resource = dict[str, Any]
FHIR = "{http://hl7.org/fhir}"


def _identifier(system_suffix: str) -> Callable[[Resource], str]:
    """Return a function giving ``system|value`` of the identifier whose system ends so."""
    def value(resource: Resource) -> str:
        found = next(i for i in resource["identifier"] if i["system"].endswith(system_suffix))
        return f"{found['system']}|{found['value']}"
    return value


def _reference_id(key: str) -> Callable[[Resource], str]:
    """Return a function giving the logical id a reference element points at."""
    def value(resource: Resource) -> str:
        ref = resource[key]
        ref = ref[0] if isinstance(ref, list) else ref
        return str(ref["reference"]).rsplit("/", 1)[-1]
    return value


# (resource type, parameter) -> the query value that must find the sample resource.
SEARCH_EXAMPLES: dict[tuple[str, str], Callable[[Resource], str]] = {
    ("Patient", "_id"): lambda r: r["id"],
    ("Patient", "_lastUpdated"): lambda r: "le" + r["meta"]["lastUpdated"],
    ("Patient", "identifier"): _identifier("contactpoint-id"),
    ("Patient", "family"): lambda r: r["name"][0]["family"][:3],
    ("Patient", "given"): lambda r: r["name"][0]["given"][0],
    ("Patient", "name"): lambda r: r["name"][0]["family"],
    ("Patient", "birthdate"): lambda r: "eq" + r["birthDate"],
    ("Patient", "gender"): lambda r: r["gender"],
    ("Patient", "address-postalcode"): lambda r: r["address"][0]["postalCode"][:4],
    ("Patient", "organization"): _reference_id("managingOrganization"),
}
SEARCH_EXAMPLES.update({
    ("AuditEvent", "_id"): lambda r: r["id"],
    ("AuditEvent", "patient"): lambda r: next(e["what"]["reference"] for e in r["entity"]
                                              if e["what"]["reference"].startswith("Patient/")),
    ("AuditEvent", "agent"): lambda r: r["agent"][0]["who"]["identifier"]["value"],
    ("AuditEvent", "date"): lambda r: "eq" + r["recorded"],
    ("AuditEvent", "type"): lambda r: f"{r['type']['system']}|{r['type']['code']}",
    ("AuditEvent", "subtype"): lambda r: r["subtype"][0]["code"],
    ("AuditEvent", "action"): lambda r: r["action"],
    ("AuditEvent", "outcome"): lambda r: r["outcome"],
})
SEARCH_EXAMPLES.update({
    ("CareTeam", "_id"): lambda r: r["id"],
    ("CareTeam", "_lastUpdated"): lambda r: "le" + r["meta"]["lastUpdated"],
    ("CareTeam", "patient"): _reference_id("subject"),
    ("CareTeam", "subject"): _reference_id("subject"),
    ("CareTeam", "status"): lambda r: r["status"],
    ("CareTeam", "category"): lambda r: "{system}|{code}".format(**r["category"][0]["coding"][0]),
    ("CareTeam", "identifier"): _identifier("ecaf-assessment"),
    ("CareTeam", "participant"): lambda r: r["participant"][0]["member"]["reference"],
    ("PractitionerRole", "_id"): lambda r: r["id"],
    ("PractitionerRole", "practitioner"): _reference_id("practitioner"),
    ("PractitionerRole", "organization"): _reference_id("organization"),
    ("PractitionerRole", "role"): lambda r: r["code"][0]["coding"][-1]["code"],
    ("Organization", "_id"): lambda r: r["id"],
    ("Organization", "identifier"): lambda r: "{system}|{value}".format(**r["identifier"][0]),
    ("Organization", "name"): lambda r: r["name"][:4],
    ("Organization", "type"): lambda r: "{system}|{code}".format(**r["type"][0]["coding"][0]),
    ("Practitioner", "_id"): lambda r: r["id"],
    ("Practitioner", "identifier"): lambda r: "{system}|{value}".format(**r["identifier"][0]),
    ("Practitioner", "name"): lambda r: r["name"][0]["family"][:3],
})
SEARCH_EXAMPLES.update({
    ("Subscription", "_id"): lambda r: r["id"],
    ("Subscription", "status"): lambda r: r["status"],
    ("Subscription", "url"): lambda r: r["channel"]["endpoint"],
    ("Subscription", "type"): lambda r: r["channel"]["type"],
})
# Types that have resources only once a decommissioning plan exists: their declared search
# parameters and reads are exercised with real ones by tests/decommission/test_drill.py.
TESTED_IN_THE_DRILL = frozenset({"Task", "PlanDefinition"})
# Searches that narrow a type's sample to one holding every element its examples read.
SAMPLE_QUERIES = {"CareTeam": "category=ecaf-tac&", "PractitionerRole": "role=social-worker&"}
for _published in PUBLISHED_TYPES:
    SEARCH_EXAMPLES[(_published, "_id")] = lambda r: str(r["id"])
    SEARCH_EXAMPLES[(_published, "url")] = lambda r: str(r["url"])
    SEARCH_EXAMPLES[(_published, "name")] = lambda r: str(r["name"])[:4]


def sample(client: FlaskClient, callers: Callers, resource_type: str) -> Resource:
    """Return a resource of ``resource_type`` that has every element the examples read."""
    if resource_type == "AuditEvent":  # the trail holds what was read: read a child first
        client.get("/fhir/Patient?_count=1", headers=callers.admin)
    if resource_type == "Subscription":  # subscriptions are the clients' own: make one
        from tests.notify.helpers import subscription

        client.post("/fhir/Subscription", json=subscription(
            "decommission-notice", "https://receiver.example.org/hook"),
            headers={**callers.admin, "Content-Type": "application/fhir+json"})
    query = SAMPLE_QUERIES.get(resource_type, "")
    bundle = client.get(f"/fhir/{resource_type}?{query}_count=50", headers=callers.admin).json
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        if resource_type == "PractitionerRole" and "practitioner" not in resource:
            continue
        if resource_type == "AuditEvent" and "entity" not in resource:
            continue
        if resource_type != "Patient" or ("address" in resource and "meta" in resource
                                          and "R" not in {s["code"] for s in
                                                          resource["meta"].get("security", [])}):
            return resource  # type: ignore[no-any-return]
    raise AssertionError(f"no sample {resource_type}")


def ids_in(body: bytes, fmt: str) -> set[str]:
    """Return the ids of the match entries of a searchset in JSON or XML."""
    if fmt == "json":
        import orjson

        bundle = orjson.loads(body)
        return {e["resource"]["id"] for e in bundle.get("entry", [])
                if e.get("search", {}).get("mode") == "match"}
    root = etree.fromstring(body)
    return {e.find(f"{FHIR}resource/*/{FHIR}id").get("value")
            for e in root.iter(f"{FHIR}entry")
            if e.find(f"{FHIR}search/{FHIR}mode").get("value") == "match"}


def declared(client: FlaskClient) -> list[dict[str, Any]]:
    """Return the CapabilityStatement's resources."""
    statement = client.get("/fhir/metadata").json
    resources: list[dict[str, Any]] = statement["rest"][0]["resource"]
    return resources


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_every_declared_search_parameter_works(client: FlaskClient, callers: Callers,
                                               fmt: str) -> None:
    """Each searchParam finds the sample resource it was derived from."""
    tested = 0
    for resource in declared(client):
        if "search-type" not in {i["code"] for i in resource.get("interaction", [])} \
                or resource["type"] in TESTED_IN_THE_DRILL:
            continue
        target = sample(client, callers, resource["type"])
        for param in resource.get("searchParam", []):
            key = (resource["type"], param["name"])
            assert key in SEARCH_EXAMPLES, f"{key} is declared but has no test"
            value = quote(SEARCH_EXAMPLES[key](target), safe="|:")
            url = f"/fhir/{resource['type']}?{param['name']}={value}&_count=1000&_format={fmt}"
            response = client.get(url, headers=callers.admin)
            assert response.status_code == 200, (key, response.data[:300])
            assert target["id"] in ids_in(response.data, fmt), key
            tested += 1
    assert tested >= len([k for k in SEARCH_EXAMPLES if k[0] == "Patient"])


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_every_declared_read_interaction_answers(client: FlaskClient, callers: Callers,
                                                 fmt: str) -> None:
    """read, vread and history-instance answer 200 for a sample of each type."""
    for resource in declared(client):
        codes = {i["code"] for i in resource.get("interaction", [])}
        if "read" not in codes or resource["type"] in TESTED_IN_THE_DRILL:
            continue
        target = sample(client, callers, resource["type"])
        base = f"/fhir/{resource['type']}/{target['id']}"
        paths = [base]
        if "vread" in codes:
            paths.append(f"{base}/_history/{target['meta']['versionId']}")
        if "history-instance" in codes:
            paths.append(f"{base}/_history")
        for path in paths:
            response = client.get(f"{path}?_format={fmt}", headers=callers.admin)
            assert response.status_code == 200, (path, response.data[:300])
            assert response.mimetype == f"application/fhir+{fmt}"
