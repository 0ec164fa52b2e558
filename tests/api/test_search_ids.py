"""A Patient search's own statements (adapter/fhir/patient_search.py): the select of the
matching ids alone, run on the session's connection, and the page links of its Bundle
(adapter/fhir/bundle.py ``page_links``)."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from adapter import systems
from adapter.db import Database
from adapter.fhir.bundle import page_links
from adapter.fhir.patient_search import PATIENT_PARAMS, patient_select
from adapter.fhir.providers.patient import PatientProvider
from adapter.fhir.search import SearchRequest, parse_search
from adapter.http import settings_of
from adapter.models import Child
from adapter.security.caller import Caller
from adapter.security.scopes import parse_scopes

ADMIN = Caller("search-ids", "E09000001", parse_scopes("system/*.cruds"),
               frozenset({"admin", "shielded"}))


def _search(query: str, count: int = 20) -> SearchRequest:
    """Return the parsed Patient search of ``query`` (``name=value`` pairs joined by ``&``)."""
    args = MultiDict([tuple(pair.split("=", 1)) for pair in query.split("&")])
    return SearchRequest(criteria=parse_search(args, PATIENT_PARAMS).criteria, count=count)


def test_the_select_of_a_search_names_only_the_ids(app: Flask) -> None:
    """The select carries no ORM entity nor loader option: only ``child.id`` is read."""
    with app.test_request_context("/fhir/Patient"):
        statement = patient_select(_search("identifier=CP0000000AA"), ADMIN,
                                   systems.DEFAULT_CANONICAL_BASE)
    assert [str(column) for column in statement.selected_columns] == ["child.id"]
    assert not statement._with_options  # noqa: SLF001 - no loader options to build or cache
    sql = str(statement.compile())
    assert sql.startswith("SELECT child.id \nFROM child \nWHERE")
    assert "JOIN" not in sql


def test_a_walked_family_search_still_joins_the_names(app: Flask) -> None:
    """A family-name prefix keeps its walk of the names' index (docs/scale.md "Search")."""
    with app.test_request_context("/fhir/Patient"):
        statement = patient_select(_search("family=Smith"), ADMIN,
                                   systems.DEFAULT_CANONICAL_BASE)
    sql = str(statement.compile())
    assert sql.startswith("SELECT child.id \nFROM child JOIN child_name AS family_name")


def test_a_search_sees_the_changes_its_transaction_has_not_flushed(app: Flask,
                                                                    demo: Database) -> None:
    """The ids are read on the session's connection after its pending changes are flushed,
    as an ORM query would autoflush them: a conditional update in a transaction Bundle sees
    what the Bundle's earlier entries wrote."""
    provider = PatientProvider(settings_of(app))
    with app.test_request_context("/fhir/Patient"), demo.sessions() as session:
        # closed with its changes uncommitted: nothing is kept
        child = session.scalars(select(Child).where(Child.record_status == "live")
                                .order_by(Child.id).limit(1)).one()
        child.upn = "Z999999999999"
        found = provider.search(session, _search(
            f"identifier={systems.DEFAULT_CANONICAL_BASE}/Id/upn|z999999999999"), ADMIN)
        assert [m["id"] for m in found.matches] == [child.resource_id]
        assert provider.count(session, _search("identifier=Z999999999999"), ADMIN) == 1


def test_page_links_encode_the_applied_parameters_then_the_cursor(app: Flask) -> None:
    """``self`` keeps the page's own cursor, ``next`` the next one, both after the applied
    parameters (the ignored ones left out), each encoded as ``urlencode`` writes them."""
    query = "/fhir/Patient?family=O%27B+x&foo=1&_count=2&_cursor=Mw&identifier=a%7Cb"
    with app.test_request_context(query):
        links = page_links("Patient", "Ng", ["foo"])
    base = f"{settings_of(app).public_base}/fhir/Patient"
    assert links == [
        {"relation": "self",
         "url": f"{base}?family=O%27B+x&_count=2&identifier=a%7Cb&_cursor=Mw"},
        {"relation": "next",
         "url": f"{base}?family=O%27B+x&_count=2&identifier=a%7Cb&_cursor=Ng"}]


def test_page_links_without_applied_parameters(app: Flask) -> None:
    """No parameter applied: no ``?`` on self; the cursor alone after it on next."""
    with app.test_request_context("/fhir/Patient?_cursor="):
        links = page_links("Patient", "MTA")
    base = f"{settings_of(app).public_base}/fhir/Patient"
    assert links == [{"relation": "self", "url": base},
                     {"relation": "next", "url": f"{base}?_cursor=MTA"}]
