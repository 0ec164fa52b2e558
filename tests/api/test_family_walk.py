"""A family-name prefix of three letters or more walks ``ix_child_name_family_walk`` in child
id order (adapter/fhir/patient_search.py ``_walk_family_names``, migration 0016): it finds the
same children as the general name match, each once, across every page and in the count."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.models import ChildName
from adapter.models.canonical import normalise_name
from tests.api.conftest import Callers


def every_page(client: FlaskClient, headers: dict[str, str], query: str) -> list[dict]:
    """Return the Patients of every page of a search, following its next links."""
    found: list[dict] = []
    url: str | None = f"/fhir/Patient?{query}"
    while url:
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        bundle = answer.get_json()
        found += [e["resource"] for e in bundle.get("entry", [])
                  if e.get("search", {}).get("mode") == "match"]
        link = next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)
        url = None if link is None else "/fhir/Patient?" + urlsplit(link).query
    return found


def count(client: FlaskClient, headers: dict[str, str], query: str) -> int:
    """Return the ``_summary=count`` total of a search."""
    answer = client.get(f"/fhir/Patient?{query}&_summary=count", headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return int(answer.get_json()["total"])


def give_second_name(demo: Database, prefix_of: str) -> None:
    """Give the child holding the family name ``prefix_of`` a former name with the same first
    letters, so that two of its names match a prefix."""
    with demo.sessions() as session:
        name = session.scalars(select(ChildName).where(
            ChildName.family_norm == prefix_of).order_by(ChildName.id)).first()
        assert name is not None
        former = f"{name.family}ington"
        session.add(ChildName(child_id=name.child_id, position=99, use="former", family=former,
                              family_norm=normalise_name(former), given=[]))
        session.commit()


def test_family_prefix_pages_match_the_general_match(demo: Database, client: FlaskClient,
                                                    callers: Callers) -> None:
    """Every page of a prefix of three letters or more, followed to its end, holds exactly the
    children the two-letter prefix (the general match) finds whose names start with it, in id
    order and each once; the count agrees."""
    with demo.sessions() as session:
        families = sorted(set(session.scalars(select(ChildName.family_norm))))
    give_second_name(demo, families[0])
    for family in (families[0], families[len(families) // 2], families[-1]):
        for prefix in (family[:3], family[:4]):
            general = every_page(client, callers.admin, f"family={prefix[:2]}&_count=50")
            expected = [p["id"] for p in general
                        if any(normalise_name(n.get("family", "")).startswith(prefix)
                               for n in p.get("name", []))]
            walked = every_page(client, callers.admin, f"family={prefix}&_count=2")
            assert [p["id"] for p in walked] == expected, prefix
            assert count(client, callers.admin, f"family={prefix}") == len(expected)
