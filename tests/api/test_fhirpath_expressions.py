"""Every OperationOutcome ``expression`` the gateway emits is a FHIRPath path (R4
operationoutcome.html), checked with a real FHIRPath parser (tests/fhirpath.py): statically,
each expression the code writes as a literal or f-string; dynamically, each one of the answers
to requests along the error paths (bodies, searches, headers, Bundles, FHIR XML, $validate).
A request parameter or header is named in ``location`` ("http." + its name), an element of a
directory XML document by its XPath in ``location``: neither is FHIRPath."""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from adapter.errors import issue, placed
from tests.api.conftest import Callers
from tests.conftest import REPO
from tests.fhirpath import check_path
from tests.security.test_door import BAD, new_patient

Node = ast.expr


@pytest.mark.parametrize("text", ["search parameters", "If-Match", "Patient.text.div",
                                  "Patient..name", "address-postalcode", "Patient.name[x]",
                                  "Patient.name[0] = 1"])
def test_the_check_refuses_what_is_not_a_path(text: str) -> None:
    """The check can fail: each of these is not a FHIRPath element path."""
    with pytest.raises(ValueError, match=r"."):
        check_path(text)


@pytest.mark.parametrize(("where", "key", "value"), [
    ("Patient.name[0].family", "expression", "Patient.name[0].family"),
    ("Patient.text.div", "expression", "Patient.text.`div`"),
    ("Patient.foo-bar[1]", "expression", "Patient.`foo-bar`[1]"),
    ("Bundle.entry[2].request.ifMatch", "expression", "Bundle.entry[2].request.ifMatch"),
    ("Patient.extension[0].value.ofType(string)", "expression",
     "Patient.extension[0].value.ofType(string)"),
    ("_count", "location", "http._count"), ("If-Match", "location", "http.If-Match"),
    ("address-postalcode", "location", "http.address-postalcode"),
    ("DirectoryEntry/ManagingAuthority", "location", "DirectoryEntry/ManagingAuthority")])
def test_where_each_issue_says_it(where: str, key: str, value: str) -> None:
    """A path into a resource is FHIRPath in ``expression`` (delimited where a name is no
    identifier); parameters, headers and directory XML paths are ``location``."""
    made = issue("error", "invalid", "x", where)
    assert made[key] == [value] and ({"expression", "location"} - {key}).isdisjoint(made)
    if key == "expression":
        check_path(value)
        assert placed(value) == (key, value)  # read back and given again: unchanged


def _sample(node: Node) -> str | None:
    """Return the text an expression argument gives (a placeholder of an f-string as a name:
    ``Patient`` at the start, an index after "[", ``x`` elsewhere); None for a variable."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if not isinstance(node, ast.JoinedStr):
        return None
    text = ""
    for part in node.values:
        if isinstance(part, ast.Constant):
            text += str(part.value)
        else:
            text += "0" if text.endswith("[") else ("Patient" if not text else "x")
    return text


def written_expressions() -> Iterator[tuple[str, str]]:
    """Yield (file:line, text) of each expression the gateway's code writes literally: the
    ``expression=`` of an error or issue, the 4th argument of ``issue()``, the 3rd of the
    conformance checker's ``Issue()``."""
    for path in sorted((REPO / "adapter").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            found = [k.value for k in node.keywords if k.arg == "expression"]
            if name == "issue" and len(node.args) >= 4:
                found.append(node.args[3])
            if name == "Issue" and len(node.args) >= 3:
                found.append(node.args[2])
            for value in found:
                text = _sample(value)
                if text:
                    yield f"{path.relative_to(REPO)}:{node.lineno}", text


def test_every_expression_written_in_the_code_is_fhirpath() -> None:
    """Each literal expression of the code, placed as ``issue()`` places it, is either a
    FHIRPath path or a ``location``."""
    written = list(written_expressions())
    assert len(written) > 100
    bad = []
    for where, text in written:
        key, value = placed(text)
        if key == "expression":
            try:
                check_path(value)
            except ValueError as exc:
                bad.append(f"{where}: {value} ({exc})")
    assert not bad


def expressions_in(body: Any) -> Iterator[str]:
    """Yield every ``issue.expression`` in an answer (an OperationOutcome, or a Bundle whose
    entries carry outcomes)."""
    if isinstance(body, dict):
        if body.get("resourceType") == "OperationOutcome":
            for item in body.get("issue", []):
                yield from item.get("expression", [])
        for value in body.values():
            yield from expressions_in(value)
    elif isinstance(body, list):
        for value in body:
            yield from expressions_in(value)


def _error_requests(client: FlaskClient, callers: Callers) -> Iterator[dict[str, Any]]:
    """Yield requests along the error paths (keyword arguments of ``client.open``)."""
    patient = new_patient(client, callers)
    fhir = {**callers.la, "Content-Type": "application/fhir+json"}
    for _name, change, _status, _expression in BAD:
        bad = copy.deepcopy(patient)
        change(bad)
        yield {"method": "POST", "path": "/fhir/Patient", "json": bad, "headers": fhir}
        yield {"method": "POST", "path": "/fhir/Patient/$validate", "json": bad,
               "headers": fhir}
        yield {"method": "POST", "path": "/fhir", "headers": fhir, "json": {
            "resourceType": "Bundle", "type": "batch", "entry": [
                {"resource": bad, "request": {"method": "POST", "url": "Patient"}}]}}
    odd = {**patient, "text": {"status": "generated", "div": ""}, "foo": 1,
           "extension": [{"url": "https://example.org/unknown", "valueString": "x"}]}
    yield {"method": "POST", "path": "/fhir/Patient/$validate", "json": odd, "headers": fhir}
    yield {"method": "POST", "path": "/fhir/Patient", "json": odd, "headers": fhir}
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><name><family value="A"/>'
           b'<foo-bar value="x"/></name></Patient>')
    yield {"method": "POST", "path": "/fhir/Patient", "data": xml,
           "headers": {**callers.la, "Content-Type": "application/fhir+xml"}}
    for query in ("_count=abc", "birthdate=yesterday", "gender:foo=male", "organization=x/y",
                  "_cursor=garbage", "unknown=1"):
        yield {"method": "GET", "path": f"/fhir/Patient?{query}",
               "headers": {**callers.la, "Prefer": "handling=strict"}}
    yield {"method": "PUT", "path": "/fhir/Patient/x1", "json": patient,
           "headers": {**fhir, "If-Match": "garbage"}}
    yield {"method": "POST", "path": "/fhir/Patient", "json": patient,
           "headers": {**fhir, "If-None-Exist": "nothing=1"}}
    yield {"method": "PUT", "path": "/fhir/Patient?nothing=1", "json": patient, "headers": fhir}
    yield {"method": "POST", "path": "/fhir", "headers": fhir, "json": {
        "resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient, "request": {"method": "POST", "url": "Patient",
                                              "ifNoneExist": "nothing=1"}}]}}
    yield {"method": "POST", "path": "/fhir", "headers": fhir, "json": {
        "resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": patient, "request": {"method": "PUT", "url": "Patient/x1",
                                              "ifMatch": "garbage"}},
            {"request": {"method": "GET", "url": "Nothing/1"}},
            {"request": {"method": "PATCH", "url": "Patient/x1"}},
            {"resource": {"resourceType": "CareTeam"}, "request": {"method": "POST",
                                                                 "url": "CareTeam"}}]}}
    yield {"method": "POST", "path": "/fhir", "headers": fhir,
           "json": {"resourceType": "Bundle", "type": "collection"}}
    yield {"method": "POST", "path": "/fhir/Subscription", "headers": fhir,
           "json": {"resourceType": "Subscription", "status": "requested",
                    "criteria": "nothing", "reason": "x", "channel": {"type": "rest-hook"}}}
    yield {"method": "POST", "path": "/fhir/CareTeam", "headers": fhir,
           "json": {"resourceType": "CareTeam", "subject": {"reference": "Patient/x1"}}}


def test_every_expression_of_an_error_answer_is_fhirpath(client: FlaskClient,
                                                         callers: Callers) -> None:
    """Along the error paths, each ``expression`` answered is a FHIRPath path."""
    seen: dict[str, str] = {}
    answered = 0
    for request in _error_requests(client, callers):
        path = request.pop("path")
        response = client.open(path, **request)
        assert response.status_code < 500, (path, response.data[:300])
        answered += 1
        for expression in expressions_in(response.json):
            seen.setdefault(expression, f"{request['method']} {path}")
    assert answered > 40 and len(seen) > 20, seen
    bad = []
    for expression, where in sorted(seen.items()):
        try:
            check_path(expression)
        except ValueError as exc:
            bad.append(f"{where}: {expression} ({exc})")
    assert not bad
