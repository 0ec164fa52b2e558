"""Search modifiers: every (parameter, modifier) pair the CapabilityStatement declares filters
correctly against the demo directory, and any other modifier is refused (``handling=strict``)
or reported as ignored (``lenient``) — never applied as if it were absent."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from adapter.db import Database
from adapter.fhir.search import TYPE_MODIFIERS
from adapter.models import Child
from tests.api.conftest import Callers
from tests.api.test_capability import SEARCH_EXAMPLES, declared, sample

Resource = dict[str, Any]
MODIFIERS_RE = re.compile(r"Modifiers: (.+)\.$")
# Bare reference values (an id without its type): the type they point at.
REFERENCE_TARGETS = {("Patient", "organization"): "Organization",
                     ("CareTeam", "patient"): "Patient", ("CareTeam", "subject"): "Patient",
                     ("PractitionerRole", "practitioner"): "Practitioner",
                     ("PractitionerRole", "organization"): "Organization"}
# (type, string parameter) -> the whole value the sample holds (the examples use prefixes).
FULL_VALUES: dict[tuple[str, str], Callable[[Resource], str]] = {
    ("Patient", "family"): lambda r: r["name"][0]["family"],
    ("Patient", "given"): lambda r: r["name"][0]["given"][0],
    ("Patient", "name"): lambda r: r["name"][0]["family"],
    ("Organization", "name"): lambda r: r["name"],
    ("Practitioner", "name"): lambda r: r["name"][0]["family"],
}


def modifiers_of(param: dict[str, Any]) -> list[str]:
    """Return the modifiers a CapabilityStatement searchParam declares."""
    found = MODIFIERS_RE.search(param.get("documentation", ""))
    return [m.strip().lstrip(":") for m in found.group(1).split(",")] if found else []


class Searcher:
    """Runs searches as the administrator and returns every matching id (all pages)."""

    def __init__(self, client: FlaskClient, callers: Callers) -> None:
        self.client, self.headers = client, callers.admin
        # The audit trail grows with every search: compare AuditEvents before this second.
        frozen = dt.datetime.now(dt.UTC)
        self.extra = {"AuditEvent": "date=lt" + quote(frozen.strftime("%Y-%m-%dT%H:%M:%SZ"))}

    def ids(self, resource_type: str, query: str) -> set[str]:
        """Return the ids of every match of ``query``, failing on an ignored parameter."""
        parts = [p for p in (query, self.extra.get(resource_type, ""), "_count=1000") if p]
        url: str | None = f"/fhir/{resource_type}?{'&'.join(parts)}"
        found: set[str] = set()
        while url:
            response = self.client.get(url, headers={**self.headers,
                                                     "Prefer": "handling=strict"})
            assert response.status_code == 200, (url, response.data[:300])
            bundle = response.json
            found |= {e["resource"]["id"] for e in bundle.get("entry", [])
                      if e["search"]["mode"] == "match"}
            url = next((_path(link["url"]) for link in bundle["link"]
                        if link["relation"] == "next"), None)
        return found

    def read(self, reference: str) -> Resource:
        """Return the resource ``Type/id`` refers to."""
        response = self.client.get(f"/fhir/{reference}", headers=self.headers)
        assert response.status_code == 200, reference
        return response.json  # type: ignore[no-any-return]


def _path(url: str) -> str:
    """Return the path and query of an absolute link."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def check_not(s: Searcher, kind: str, name: str, target: Resource) -> None:
    """``:not`` finds exactly the resources the plain search does not (FHIR R4
    search.html#token), and the plain search finds the sample."""
    value = quote(SEARCH_EXAMPLES[(kind, name)](target), safe="|:")
    matched = s.ids(kind, f"{name}={value}")
    negated = s.ids(kind, f"{name}:not={value}")
    assert target["id"] in matched, (kind, name)
    assert not matched & negated, (kind, name)
    assert matched | negated == s.ids(kind, ""), (kind, name)


def check_exact(s: Searcher, kind: str, name: str, target: Resource) -> None:
    """``:exact`` finds the whole value, case-sensitively, and not a prefix of it."""
    full = FULL_VALUES[(kind, name)](target)
    exact = s.ids(kind, f"{name}:exact={quote(full)}")
    assert target["id"] in exact and exact <= s.ids(kind, f"{name}={quote(full)}"), (kind, name)
    assert target["id"] not in s.ids(kind, f"{name}:exact={quote(full[:-1])}"), (kind, name)
    if full.swapcase() != full:
        assert target["id"] not in s.ids(kind, f"{name}:exact={quote(full.swapcase())}")


def check_contains(s: Searcher, kind: str, name: str, target: Resource) -> None:
    """``:contains`` finds a part from the middle of the value, and whatever starts with it."""
    middle = FULL_VALUES[(kind, name)](target)[1:-1]
    contains = s.ids(kind, f"{name}:contains={quote(middle)}")
    assert target["id"] in contains, (kind, name, middle)
    assert s.ids(kind, f"{name}={quote(middle)}") <= contains, (kind, name)


def check_identifier(s: Searcher, kind: str, name: str, target: Resource) -> None:
    """``:identifier`` finds the sample by the identifier of what it references, and nothing
    by an identifier no resource has."""
    value = SEARCH_EXAMPLES[(kind, name)](target)
    reference = value if "/" in value else f"{REFERENCE_TARGETS[(kind, name)]}/{value}"
    referenced = s.read(reference)
    if referenced["resourceType"] == "PractitionerRole":  # identified by its practitioner
        referenced = s.read(referenced["practitioner"]["reference"])
    identifier = referenced["identifier"][0]
    token = quote(f"{identifier['system']}|{identifier['value']}", safe="|:")
    assert target["id"] in s.ids(kind, f"{name}:identifier={token}"), (kind, name)
    unknown = quote(f"{identifier['system']}|NO-SUCH-IDENTIFIER", safe="|:")
    assert s.ids(kind, f"{name}:identifier={unknown}") == set(), (kind, name)


CHECKS: dict[str, Callable[[Searcher, str, str, Resource], None]] = {
    "not": check_not, "exact": check_exact, "contains": check_contains,
    "identifier": check_identifier,
}


def test_every_declared_modifier_filters_correctly(client: FlaskClient,
                                                   callers: Callers) -> None:
    """Each (parameter, modifier) pair of the CapabilityStatement is checked against the
    known data set; a declared pair without a check fails the test."""
    resources = [r for r in declared(client)
                 if any(modifiers_of(p) for p in r.get("searchParam", []))]
    targets = {r["type"]: sample(client, callers, r["type"]) for r in resources}
    time.sleep(1.05)  # the AuditEvent sample is older than the second searches compare before
    searcher = Searcher(client, callers)
    checked = set()
    for resource in resources:
        params = [p for p in resource.get("searchParam", []) if modifiers_of(p)]
        target = targets[resource["type"]]
        for param in params:
            for modifier in modifiers_of(param):
                assert modifier in CHECKS, f"{resource['type']}.{param['name']}:{modifier}"
                CHECKS[modifier](searcher, resource["type"], param["name"], target)
                checked.add((resource["type"], param["name"], modifier))
    assert {("Patient", "gender", "not"), ("Patient", "family", "exact"),
            ("Patient", "organization", "identifier")} <= checked


def test_gender_not_male_returns_every_child_but_the_males(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """``gender:not=male``: no male, and every other child — female, other and unknown (the
    directory records a gender for every child: "unknown" is its missing value)."""
    with demo.sessions.begin() as session:
        others = list(session.scalars(select(Child.id).where(Child.gender == "2").limit(2)))
        session.execute(update(Child).where(Child.id == others[0]).values(gender="9"))
        session.execute(update(Child).where(Child.id == others[1]).values(gender="X"))
        males = set(session.scalars(select(Child.resource_id).where(Child.gender == "1")))
        odd = set(session.scalars(select(Child.resource_id).where(Child.id.in_(others))))
    searcher = Searcher(client, callers)
    everyone = searcher.ids("Patient", "")
    not_male = searcher.ids("Patient", "gender:not=male")
    assert males and not_male == everyone - males and odd <= not_male
    assert searcher.ids("Patient", "gender:not=male,female") == odd | (
        everyone - males - searcher.ids("Patient", "gender=female"))
    bundle = client.get("/fhir/Patient?gender:not=male&_count=1000", headers=callers.la).json
    assert bundle["entry"] and all(e["resource"].get("gender") != "male"
                                   for e in bundle["entry"])


def undeclared(param: dict[str, Any]) -> list[str]:
    """Return modifiers FHIR allows for the parameter's type that it does not declare, and
    one FHIR does not define at all."""
    return sorted(TYPE_MODIFIERS[param["type"]] - set(modifiers_of(param))) + ["bogus"]


@pytest.mark.parametrize("handling", ["strict", "lenient"])
def test_any_other_modifier_is_refused_or_reported_never_applied(
        client: FlaskClient, callers: Callers, handling: str) -> None:
    """strict: 400 OperationOutcome naming the parameter; lenient: the search answers as if
    the parameter were absent, says so in an ``outcome`` entry and leaves it out of ``self``."""
    headers = {**callers.admin, "Prefer": f"handling={handling}"}
    for resource in declared(client):
        kind = resource["type"]
        if "search-type" not in {i["code"] for i in resource.get("interaction", [])}:
            continue
        unfiltered = ids_of(client.get(f"/fhir/{kind}?_count=1000", headers=headers).json)
        for param in resource.get("searchParam", []):
            for modifier in undeclared(param)[:1] + ["bogus"]:
                key = f"{param['name']}:{modifier}"
                response = client.get(f"/fhir/{kind}?{key}=x&_count=1000", headers=headers)
                if handling == "strict":
                    assert response.status_code == 400, (kind, key)
                    assert response.json["resourceType"] == "OperationOutcome"
                    assert key in response.json["issue"][0]["diagnostics"]
                    continue
                assert response.status_code == 200, (kind, key, response.data[:300])
                bundle = response.json
                outcomes = [e["resource"] for e in bundle.get("entry", [])
                            if e["search"]["mode"] == "outcome"]
                assert outcomes and key in outcomes[0]["issue"][0]["diagnostics"], (kind, key)
                self_link = next(li["url"] for li in bundle["link"] if li["relation"] == "self")
                applied = {k.partition(":")[0] for k in parse_qs(urlsplit(self_link).query)}
                assert param["name"] not in applied, (kind, key, self_link)
                if kind != "AuditEvent":  # (the trail grows with every search)
                    assert ids_of(bundle) == unfiltered, (kind, key)


def ids_of(bundle: dict[str, Any]) -> set[str]:
    """Return the ids of a searchset's matches."""
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match"}
