"""The disclosure policy on transient canonical records (no database): an earlier version is
judged by the child's current state as well as its own, whichever is stricter
(docs/domain.md "Shielding", "Sensitive services", "Other organisations' numbers")."""

from __future__ import annotations

from adapter.models import Carer, Child, ChildName, Involvement, LocalIdentifier, Organisation
from adapter.security.caller import Caller
from adapter.security.policy import disclose_child

OWN = "E06900001"


def caller(*rights: str, organisation: str = OWN) -> Caller:
    """Return a caller with ``rights``."""
    return Caller("test", organisation, [], frozenset(rights))


def involvement(code: str, role: str, sensitive: bool = False) -> Involvement:
    """Return an involvement of the organisation with ODS code ``code``."""
    return Involvement(role=role, sensitive=sensitive, phone="01632 960400",
                       organisation=Organisation(name=f"Service {code}", ods_code=code),
                       practitioner=None, period_start=None)


def child(shielded: bool, involvements: list[Involvement]) -> Child:
    """Return a transient child with an address, a carer's telephone and a local id."""
    record = Child(resource_id="p1", contactpoint_id="CP0000000001", shielded=shielded,
                   nhs_number="9999876552", address_postcode="YY8 8BW", gender="2",
                   record_status="live", version=1)
    record.managing_organisation = Organisation(name="Authority", gss_code=OWN)
    record.names = [ChildName(position=0, family="Canary", given=["Ada"])]
    record.carers = [Carer(position=0, family="Canary", given=["Bea"], phone="01632 960401")]
    record.involvements = involvements
    record.local_identifiers = [LocalIdentifier(
        value="CASE1", organisation=Organisation(name="Other", gss_code="E08900002"))]
    return record


def test_an_earlier_version_of_a_child_shielded_now_is_the_shielded_view() -> None:
    """Unshielded then, shielded now: without the right only names, gender, birth date and
    ContactPoint ID remain, labelled shielded and redacted; with it, all, as an override."""
    then, now = child(False, [involvement("Y1", "education")]), child(True, [])
    seen = disclose_child(then, caller(), now)
    assert seen.redacted and seen.child.shielded and not seen.override
    assert (seen.child.nhs_number, seen.child.address_postcode, seen.child.involvements,
            seen.child.local_identifiers) == (None, None, [], [])
    assert [c.phone for c in seen.child.carers] == [None]
    assert [n.family for n in seen.child.names] == ["Canary"]
    full = disclose_child(then, caller("shielded"), now)
    assert full.override and full.child.nhs_number == "9999876552"
    assert disclose_child(then, caller()).child.nhs_number == "9999876552"  # judged alone


def test_an_organisation_sensitive_now_is_withheld_from_earlier_versions() -> None:
    """An ordinary involvement then, of an organisation that is a sensitive service now, is
    withheld from the earlier version without the right; one the current entry still shows
    as an ordinary involvement is not."""
    school = involvement("Y2", "education")
    then = child(False, [involvement("Y1", "early-help"), school])
    now = child(False, [involvement("Y1", "substance-misuse", sensitive=True),
                        involvement("Y2", "education")])
    seen = disclose_child(then, caller(), now)
    assert seen.redacted
    assert [i.organisation.ods_code for i in seen.child.involvements] == ["Y2"]
    assert len(disclose_child(then, caller("sensitive"), now).child.involvements) == 2


def test_other_organisations_local_ids_are_withheld_in_every_version() -> None:
    """A local id is shown only to its own organisation's callers, in any version."""
    then, now = child(False, []), child(False, [])
    assert disclose_child(then, caller("shielded", "sensitive"), now).child.local_identifiers \
        == []
    other = disclose_child(then, caller(organisation="E08900002"), now)
    assert [li.value for li in other.child.local_identifiers] == ["CASE1"]
