"""No route answers 500 to malformed bodies, headers or parameters: a
hypothesis-driven test throws garbage at every route of the app, with a valid token."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import Callers

# Path segments as a client can send them (no "/", "?" or "#", which end a path).
SEGMENT = st.one_of(st.text(min_size=1, max_size=12).filter(lambda s: not set(s) & set("/?#")),
                    st.sampled_from(["0", "-1", "x" * 80, "%00", "..", "$validate",
                                     "_history", "CP003NQK8NU"]))
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                       max_size=40)
CONTENT_TYPES = st.sampled_from(["application/fhir+json", "application/fhir+xml",
                                 "application/json", "application/xml", "text/xml",
                                 "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data", "", "application/fhir+json; charset=x"])
BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"{}", b"[]", b"null", b'{"resourceType": 5}',
                     b'{"resourceType": "Patient", "id": {"x": 1}}',
                     b'{"resourceType": "Bundle", "type": "transaction", "entry": [{}]}',
                     b'{"resourceType": "Bundle", "type": "batch", "entry": "x"}',
                     b"<Patient xmlns='http://hl7.org/fhir'><id value='1'/></Patient>",
                     b"<?xml version='1.0'?><x/>", b"<a><b></a>",
                     b'{"resourceType": "Patient", "birthDate": "2015-13-45"}']),
    st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                 | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                 max_leaves=10).map(lambda v: __import__("orjson").dumps(v)),
)
QUERY = st.lists(st.tuples(st.sampled_from(["_count", "_format", "_elements", "_include",
                                            "_revinclude", "_summary", "_cursor", "identifier",
                                            "birthdate", "family", "gender", "_lastUpdated",
                                            "patient", "status", "_type", "_since", "x"]),
                           HEADER_VALUE), max_size=4)
HEADERS = st.dictionaries(st.sampled_from(["Accept", "If-Match", "If-None-Match", "Prefer",
                                           "If-Modified-Since", "If-None-Exist",
                                           "X-Purpose-Of-Use"]), HEADER_VALUE, max_size=3)


def routes(app: Flask) -> list[tuple[str, str]]:
    """Return (rule, method) for every route of the app."""
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, method))
    return sorted(out)


def fill(rule: str, segments: list[str]) -> str:
    """Return ``rule`` with its variables replaced by ``segments``."""
    parts = iter(segments)
    return re.sub(r"<[^>]+>", lambda _m: next(parts, "x"), rule)


def test_no_route_answers_500(app: Flask, client: FlaskClient, callers: Callers) -> None:
    """Every route, every method: garbage in, a 4xx (or success) out — never a 5xx."""
    table = routes(app)
    assert len(table) >= 10

    @settings(max_examples=max(150, 8 * len(table)), deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(st.sampled_from(table), st.lists(SEGMENT, min_size=3, max_size=3), QUERY, HEADERS,
           CONTENT_TYPES, BODIES, st.booleans())
    def throw(route: tuple[str, str], segments: list[str], query: list[tuple[str, str]],
              headers: dict[str, str], content_type: str, body: bytes, auth: bool) -> None:
        rule, method = route
        sent: dict[str, Any] = {**headers, **(callers.admin if auth else {})}
        if content_type:
            sent["Content-Type"] = content_type
        response = client.open(fill(rule, segments), method=method, query_string=query,
                               headers=sent, data=body)
        assert response.status_code < 500, (rule, method, response.data[:300])
        if response.status_code >= 400 and not rule.startswith("/auth/"):
            assert b"OperationOutcome" in response.data, (rule, method, response.data[:200])

    throw()
