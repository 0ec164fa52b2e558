"""A postcode search matches children by postcode prefix (spaces ignored) through one alias of
the children kept for the process (adapter/fhir/patient_search.py ``_postcode_condition``):
the same alias serves several postcode values in one criterion (OR) and several criteria (AND)
in one statement, each as its own subquery, and every request finds what the stored postcodes
say."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.models import Child
from tests.api.conftest import Callers
from tests.api.test_family_walk import every_page


def stored_postcodes(demo: Database) -> dict[str, str]:
    """Return each live child's FHIR id and compact postcode."""
    with demo.sessions() as session:
        rows = session.execute(select(Child.resource_id, Child.address_postcode).where(
            Child.record_status == "live", Child.address_postcode.is_not(None)))
        return {rid: postcode.replace(" ", "").upper() for rid, postcode in rows}


def test_postcode_values_and_criteria_share_one_alias(demo: Database, client: FlaskClient,
                                                      callers: Callers) -> None:
    """Two outward codes OR-ed, an outward code AND-ed with a whole postcode, and the same
    searches again (the alias kept from the first): each finds exactly the stored matches."""
    postcodes = stored_postcodes(demo)
    outward = sorted({p[:-3] for p in postcodes.values()})
    first = outward[0]
    second = next(o for o in outward if not o.startswith(first) and not first.startswith(o))
    whole = next(p for p in sorted(postcodes.values()) if p.startswith(first))

    def found(query: str) -> set[str]:
        return {p["id"] for p in every_page(client, callers.admin, f"{query}&_count=50")}

    for _ in range(2):
        assert found(f"address-postalcode={first},{second}") == {
            rid for rid, p in postcodes.items() if p.startswith((first, second))}
        assert found(f"address-postalcode={first}&address-postalcode={whole}") == {
            rid for rid, p in postcodes.items() if p.startswith(whole)}
        assert found(f"address-postalcode={second}&address-postalcode={whole}") == set()
