"""The light records of a read (``adapter.store.rows``): a child with several names, carers,
involvements (one of them a sensitive service) and local identifiers of two authorities maps
to the same Patient from them as from its ORM records, for callers with and without each
right, shielded or not; and a read, a current vread and a search page of Patients hydrate no
ORM record of an entry. On SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, select

from adapter.db import Database
from adapter.identifiers import allocate_contactpoint_id
from adapter.mapping import fhir as mapping
from adapter.models import Carer, Child, ChildName, Involvement, LocalIdentifier, Organisation
from adapter.models.canonical import canonical_dump, organisation_dump
from adapter.models.rows import ChildRow
from adapter.security.caller import Caller
from adapter.security.policy import disclose_child
from adapter.store.children import child_query
from adapter.store.rows import entries_rows, entry_rows, joined_rows, listed_rows
from tests.api.conftest import Callers
from tests.security.canaries import involvement, organisation, update_child, write_versions

BASE = "https://gateway.example.org"
RIGHTS = [frozenset(), frozenset({"shielded"}), frozenset({"sensitive"}),
          frozenset({"shielded", "sensitive", "admin"})]
ENTRY_RECORDS = (Child, ChildName, Carer, Involvement, LocalIdentifier)


def rich_versions(db: Database, authority: str, other: str) -> list[dict[str, Any]]:
    """Return an entry of ``authority`` with two names, three carers, four involvements (a
    sensitive one among them) and a local identifier of each authority, then the same
    entry shielded."""
    with db.sessions() as session:
        template = session.scalar(
            child_query().join(Child.managing_organisation)
            .where(Organisation.gss_code == authority, Child.shielded.is_(False),
                   Child.address_status == "current").order_by(Child.id).limit(1))
        own, second = (session.scalar(select(Organisation).where(Organisation.gss_code == code))
                       for code in (authority, other))
        assert template is not None and own is not None and second is not None
        data = canonical_dump(template, meta=False)
        own_org, other_org = organisation_dump(own), organisation_dump(second)
    data.update(contactpoint_id=allocate_contactpoint_id(), nhs_number=None,
                nhs_number_status=None, upn=None, shielded=False)
    name = data["names"][0]
    data["names"] = [{**name, "use": "current"},
                     {**name, "use": "former", "family": "Formerly", "period_start": None,
                      "period_end": None}]
    carer = data["carers"][0]
    data["carers"] = [{**carer, "given": ["First"]}, {**carer, "given": ["Second"]},
                      {**carer, "given": ["Third"], "phone": "01632 960499"}]
    gp = organisation("Rows Moor Surgery", "gp-practice", "01632 960490", ods_code="Y99960")
    school = organisation("Rows Vale School", "school", "01632 960491", urn="999960")
    clinic = organisation("Rows Clinic", "nhs-trust", "01632 960492", ods_code="Y99961")
    social = organisation("Rows social care", "social-care", "01632 960493", ods_code="Y99962")
    data["involvements"] = [
        involvement("gp", gp, "01632 960490"), involvement("education", school, "01632 960491"),
        involvement("sexual-health", clinic, "01632 960492", sensitive=True,
                    consent="significant-harm"),
        involvement("social-worker", social, "01632 960493")]
    data["local_identifiers"] = [{"organisation": own_org, "value": "ROWS-OWN-1"},
                                 {"organisation": other_org, "value": "ROWS-OTHER-1"}]
    shielded = copy.deepcopy(data)
    shielded["shielded"] = True
    return [data, shielded]


@dataclass(frozen=True)
class Rich:
    """The rich entry as stored (not shielded) and its next version (shielded)."""

    resource_id: str
    shielded: dict[str, Any]


@pytest.fixture
def rich_entry(demo: Database, callers: Callers, other_authority: str) -> Rich:
    """Store the rich entry's first version (not shielded)."""
    first, shielded = rich_versions(demo, callers.authority, other_authority)
    resource_id, _cpid = write_versions(demo, [first])
    return Rich(resource_id, shielded)


@pytest.fixture
def rich(rich_entry: Rich) -> str:
    """Return the Patient id of the rich entry."""
    return rich_entry.resource_id


def callers_of(authority: str, other: str) -> Iterator[Caller]:
    """Yield callers of both authorities with each combination of rights."""
    for code in (authority, other):
        for rights in RIGHTS:
            yield Caller(f"rows-{code}-{'-'.join(sorted(rights))}", code, [], rights)


def patient(child: Any, caller: Caller) -> dict[str, Any]:
    """Return the Patient ``caller`` may see of ``child`` (ORM or light records)."""
    disclosure = disclose_child(child, caller)
    return mapping.child_to_patient(disclosure.child, redacted=disclosure.redacted, base=BASE)


def assert_same_patients(db: Database, resource_id: str, authority: str, other: str) -> None:
    """Assert the ORM and light records of the entry map alike for every caller."""
    with db.sessions() as session:
        stored = session.scalars(child_query().where(Child.resource_id == resource_id)).one()
        for caller in callers_of(authority, other):
            light = entry_rows(session, resource_id, caller)
            assert isinstance(light, ChildRow)
            assert patient(light, caller) == patient(stored, caller), caller.client_id
        admin = Caller("rows-admin", authority, [], RIGHTS[-1])
        for load in (entries_rows, joined_rows, listed_rows):
            (page_entry,) = load(session, [stored.id])
            assert patient(page_entry, admin) == patient(stored, admin), load.__name__


def test_light_records_map_as_the_orm_records(demo: Database, callers: Callers,
                                              other_authority: str, rich_entry: Rich) -> None:
    """Every list, its order and its redaction: the same Patient from either load, for
    callers with and without the rights, before and after the entry is shielded."""
    rich = rich_entry.resource_id
    with demo.sessions() as session:
        stored = session.scalars(child_query().where(Child.resource_id == rich)).one()
        assert (len(stored.names), len(stored.carers), len(stored.involvements),
                len(stored.local_identifiers)) == (2, 3, 4, 2)
    assert_same_patients(demo, rich, callers.authority, other_authority)
    update_child(demo, rich, rich_entry.shielded)
    assert_same_patients(demo, rich, callers.authority, other_authority)


def test_redaction_is_applied_to_the_light_records(demo: Database, callers: Callers,
                                                   other_authority: str, rich: str) -> None:
    """Without the sensitive right the clinic is withheld and the Patient labelled REDACTED;
    another authority's caller sees only its own local identifier; the shared records
    themselves are left whole for the next caller."""
    plain = Caller("rows-plain", other_authority, [], frozenset())
    with demo.sessions() as session:
        light = entry_rows(session, rich, plain)
        assert light is not None
        disclosure = disclose_child(light, plain)
        assert disclosure.redacted and not disclosure.override
        assert [i.role for i in disclosure.child.involvements] == \
            ["gp", "education", "social-worker"]
        assert [li.value for li in disclosure.child.local_identifiers] == ["ROWS-OTHER-1"]
        assert len(light.involvements) == 4 and len(light.local_identifiers) == 2
        resource = patient(light, plain)
        assert "ROWS-OWN-1" not in str(resource) and "Rows Clinic" not in str(resource)
        assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "REDACTED"} in [
            {k: s[k] for k in ("system", "code")} for s in resource["meta"]["security"]]


def test_archived_entries_are_light_records_for_administrators_only(
        demo: Database, rich: str) -> None:
    """An archived entry is not found for an ordinary caller (docs/domain.md "Retention")."""
    with demo.write_transaction() as session:
        child = session.scalars(child_query().where(Child.resource_id == rich)).one()
        child.record_status = "archived"
    with demo.sessions() as session:
        assert entry_rows(session, rich, Caller("rows-plain", "X", [], frozenset())) is None
        admin = entry_rows(session, rich, Caller("rows-admin", "X", [], frozenset({"admin"})))
        assert admin is not None and admin.record_status == "archived"


@pytest.fixture
def entry_loads() -> Iterator[Counter[str]]:
    """Count the ORM records of entries hydrated while the test runs."""
    loaded: Counter[str] = Counter()

    def count(target: Any, _context: Any) -> None:
        loaded[type(target).__name__] += 1

    for cls in ENTRY_RECORDS:
        event.listen(cls, "load", count)
    yield loaded
    for cls in ENTRY_RECORDS:
        event.remove(cls, "load", count)


def test_reads_and_pages_hydrate_no_entry(client: FlaskClient, callers: Callers, rich: str,
                                          entry_loads: Counter[str]) -> None:
    """A read, the current version's vread, a search page (JSON and XML) load the entries
    as light records: no ORM record of an entry is made."""
    read = client.get(f"/fhir/Patient/{rich}", headers=callers.la)
    assert read.status_code == 200 and read.json["id"] == rich
    version = read.json["meta"]["versionId"]
    vread = client.get(f"/fhir/Patient/{rich}/_history/{version}", headers=callers.admin)
    assert vread.status_code == 200 and vread.json["id"] == rich
    page = client.get("/fhir/Patient?_count=50", headers=callers.admin)
    assert page.status_code == 200 and rich in {e["resource"]["id"] for e in page.json["entry"]}
    xml = client.get(f"/fhir/Patient/{rich}?_format=xml", headers=callers.la)
    assert xml.status_code == 200 and rich.encode() in xml.data
    assert not entry_loads, entry_loads


def test_revinclude_still_loads_its_careteams(client: FlaskClient, callers: Callers, rich: str,
                                              entry_loads: Counter[str]) -> None:
    """The control: ``_revinclude`` renders the CareTeams from ORM records (so the counter
    counts), and the page still holds the Patient."""
    page = client.get(f"/fhir/Patient?_id={rich}&_revinclude=CareTeam:subject",
                      headers=callers.admin)
    assert page.status_code == 200
    types = [e["resource"]["resourceType"] for e in page.json["entry"]]
    assert types[0] == "Patient" and "CareTeam" in types
    assert entry_loads["Child"] >= 1


@pytest.mark.parametrize("load", [entries_rows, joined_rows, listed_rows])
def test_a_page_is_each_entry_as_read_alone(demo: Database, load: Any) -> None:
    """A page of entries holds each entry as a read of it alone holds it, in id order,
    whatever order the ids came in, the given names decoded; its organisations are one record
    per organisation, as the ORM's identity map has them: read by the joined SELECT and by
    one SELECT per table alike (``entries_rows`` chooses by the page's size)."""
    admin = Caller("rows-admin", "X", [], RIGHTS[-1])
    with demo.sessions() as session:
        ids = list(session.scalars(select(Child.id).order_by(Child.id.desc())))
        assert len(ids) > 1
        page = load(session, ids)
        assert [entry.id for entry in page] == sorted(ids)
        for entry in page:
            alone = entry_rows(session, entry.resource_id, admin)
            assert alone is not None
            assert patient(entry, admin) == patient(alone, admin)
            assert all(isinstance(name.given, list) for name in entry.names)
            assert all(isinstance(carer.given, list) for carer in entry.carers)
        authorities = {entry.managing_organisation_id for entry in page}
        assert len({id(entry.managing_organisation) for entry in page}) == len(authorities)
