"""Inbound FHIR: validation errors point at the element, foreign UK Core shapes are read, what
is not kept is listed, identifiers are checked without echoing them, and the base is the one
the caller passes."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter import settings as gateway_settings
from adapter import systems
from adapter.errors import Invalid
from adapter.mapping import fhir
from tests import strategies
from tests.mapping.helpers import BASE, publish_child, with_ids

OWN = systems.OwnSystems(BASE)
LA = {"reference": "Organization/la-1",
      "identifier": {"system": OWN.gss_code, "value": "E08000001"}, "display": "A Council"}


def pds_patient(**extra: Any) -> dict[str, Any]:
    """A Patient shaped like one from PDS (England), with elements the directory does not hold."""
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": "9000000009",
        "meta": {"versionId": "2", "security": [
            {"system": systems.CONFIDENTIALITY, "code": "U", "display": "unrestricted"}]},
        "identifier": [{"system": systems.NHS_NUMBER, "value": "9000000009", "extension": [{
            "url": systems.NHS_NUMBER_VERIFICATION_EXT, "valueCodeableConcept": {"coding": [{
                "system": systems.NHS_NUMBER_VERIFICATION_CS_PDS, "version": "1.0.0",
                "code": "01", "display": "Number present and verified"}]}}]}],
        "name": [{"use": "usual", "period": {"start": "2010-10-22"}, "given": ["Jane"],
                  "family": "Smith", "prefix": ["Miss"], "suffix": ["MBE"]}],
        "gender": "female", "birthDate": "2010-10-22",
        "address": [{"use": "home", "line": ["1 Trevelyan Square", "Boar Lane", "Leeds"],
                     "postalCode": "LS1 6AE", "period": {"start": "2020-01-01"},
                     "extension": [{"url": "https://fhir.hl7.org.uk/StructureDefinition/"
                                           "Extension-UKCore-AddressKey", "extension": [
                         {"url": "type", "valueCodeableConcept": {"coding": [{
                             "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-AddressKeyType",
                             "code": "PAF"}]}},
                         {"url": "value", "valueString": "12345678"}]}]},
                    {"use": "temp", "line": ["2 Other Road"], "postalCode": "LS2 7AA"}],
        "telecom": [{"system": "phone", "value": "01632960587", "use": "home"}],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "v3-MaritalStatus", "code": "U"}]},
        "generalPractitioner": [{"type": "Organization", "identifier": {
            "system": systems.ODS_CODE, "value": "Y12345"}}],
        "managingOrganization": LA,
    }
    patient.update(extra)
    return patient


def test_a_pds_patient_is_read_and_what_is_not_kept_is_listed() -> None:
    """PDS's verification code system is re-coded; elements not held are listed, not kept."""
    child, ignored = fhir.patient_to_child(pds_patient(), base=BASE)
    assert (child.nhs_number, child.nhs_number_status) == ("9000000009", "01")
    assert [(n.use, n.title, n.given, n.family, n.family_norm) for n in child.names] == [
        ("current", "Miss", ["Jane"], "Smith", "smith")]
    assert (child.gender, child.birth_date) == ("2", dt.date(2010, 10, 22))
    assert (child.address_status, child.address_paon, child.address_street,
            child.address_locality, child.address_postcode, child.address_start) == (
        "current", "1 Trevelyan Square", "Boar Lane", "Leeds", "LS1 6AE", dt.date(2020, 1, 1))
    assert child.contactpoint_id is None and child.shielded is False
    assert [(i.role, i.organisation.ods_code) for i in child.involvements] == [("gp", "Y12345")]
    assert child.managing_organisation.gss_code == "E08000001"
    assert ignored == ["Patient.address[0].extension[0]", "Patient.address[1]",
                       "Patient.maritalStatus", "Patient.name[0].suffix", "Patient.telecom"]


@pytest.mark.parametrize("code", ["01", "number-present-and-verified"])
def test_pds_verification_codes_both_forms(code: str) -> None:
    """PDS sends numeric or textual codes under its own system: both become England's 01."""
    patient = pds_patient()
    coding = patient["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]
    coding["code"] = code
    assert fhir.patient_to_child(patient, base=BASE)[0].nhs_number_status == "01"


def test_an_unknown_verification_code_is_not_kept_and_said() -> None:
    """A status of neither system (e.g. Welsh) is dropped and listed."""
    patient = pds_patient()
    coding = patient["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]
    coding["code"] = "number-present-and-traced-using-welsh-nhs-ar"
    child, ignored = fhir.patient_to_child(patient, base=BASE)
    assert child.nhs_number_status is None
    assert "Patient.identifier[0].extension[0].valueCodeableConcept" in ignored


@pytest.mark.parametrize(("change", "expression"), [
    ({"birthDate": "2010-13-45"}, "Patient.birthDate"),
    ({"birthDate": None}, "Patient.birthDate"),
    ({"gender": "girl"}, "Patient.gender"),
    ({"identifier": [{"system": systems.NHS_NUMBER, "value": "9000000001"}]},
     "Patient.identifier[0].value"),
    ({"identifier": [{"system": OWN.contactpoint_id, "value": "CP00000000X"}]},
     "Patient.identifier[0].value"),
    ({"name": [{"family": "x" * 36}]}, "Patient.name[0].family"),
    ({"name": [{"given": ["No family"]}]}, "Patient.name[0].family"),
    ({"managingOrganization": {"reference": "Practitioner/1"}},
     "Patient.managingOrganization"),
    ({"managingOrganization": {"display": "somewhere"}}, "Patient.managingOrganization"),
    ({"address": [{"postalCode": "NOT A CODE"}]}, "Patient.address"),
    ({"unknownElement": 1}, "Patient.unknownElement"),
])
def test_invalid_elements_are_named_and_never_echoed(change: dict[str, Any],
                                                     expression: str) -> None:
    """Each error is an Invalid whose expression names the element; values are not echoed."""
    patient = pds_patient()
    for key, value in change.items():
        if value is None:
            patient.pop(key)
        else:
            patient[key] = value
    with pytest.raises(Invalid) as caught:
        fhir.patient_to_child(patient, base=BASE)
    assert caught.value.expression == expression
    for value in ("9000000001", "CP00000000X", "girl", "NOT A CODE"):
        assert value not in caught.value.message


def test_a_patient_without_managing_organization_maps_to_no_authority() -> None:
    """The mapping leaves the managing authority unset: whether the writer's own authority
    manages the entry or the write is refused is the service's and the policy's decision
    (adapter.store.children, adapter.security.policy.authority)."""
    patient = pds_patient()
    patient.pop("managingOrganization")
    child, _ignored = fhir.patient_to_child(patient, base=BASE)
    assert child.managing_organisation is None


def test_wrong_resource_type_is_invalid() -> None:
    """A CareTeam is not a Patient."""
    with pytest.raises(Invalid) as caught:
        fhir.patient_to_child({"resourceType": "CareTeam"}, base=BASE)
    assert caught.value.expression == "Patient"


@pytest.mark.parametrize(("address", "status"), [
    ({"use": "home", "line": ["1 High St"]}, "current"),
    ({"use": "old", "line": ["1 High St"]}, "last-known"),
    (None, "none-known"),
])
def test_address_status_without_our_extension(address: dict[str, Any] | None,
                                              status: str) -> None:
    """Without the AddressStatus extension the address decides; no address: none known."""
    patient = pds_patient()
    patient.pop("address")
    if address:
        patient["address"] = [address]
    assert fhir.patient_to_child(patient, base=BASE)[0].address_status == status


@pytest.mark.parametrize(("lines", "parts"), [
    (["10"], {"address_paon": "10"}),
    (["10", "High St"], {"address_paon": "10", "address_street": "High St"}),
    (["Flat 1", "10", "High St", "Headingley"],
     {"address_saon": "Flat 1", "address_paon": "10", "address_street": "High St",
      "address_locality": "Headingley"}),
])
def test_unlabelled_lines_are_read_by_count(lines: list[str], parts: dict[str, str]) -> None:
    """Lines without our BS7666 part label fill PAON, street, locality (SAON with four)."""
    patient = pds_patient(address=[{"line": lines}])
    child = fhir.patient_to_child(patient, base=BASE)[0]
    for key in ("address_saon", "address_paon", "address_street", "address_locality"):
        assert getattr(child, key) == parts.get(key)


def test_gender_absent_is_not_known_and_labels_round_trip() -> None:
    """No gender is 'not known' (X); a restricted label is a shielded child."""
    patient = pds_patient()
    patient.pop("gender")
    patient["meta"]["security"][0]["code"] = "R"
    child, ignored = fhir.patient_to_child(patient, base=BASE)
    assert (child.gender, child.shielded) == ("X", True)
    assert not [path for path in ignored if path.startswith("Patient.meta")]


@settings(max_examples=5, deadline=None)
@given(strategies.children())
def test_redacted_and_shielded_labels(child: Any) -> None:
    """meta.security: R for a shielded child, REDACTED when the policy removed elements."""
    with_ids(child)
    child.shielded = True
    labels = fhir.child_to_patient(child, redacted=True, base=BASE)["meta"]["security"]
    assert [(label["system"], label["code"]) for label in labels] == [
        (systems.CONFIDENTIALITY, "R"), (systems.OBSERVATION_VALUE, "REDACTED")]
    child.shielded = False
    assert "security" not in fhir.child_to_patient(child, base=BASE)["meta"]


@pytest.mark.parametrize("reference", [
    {"reference": "https://other.example/fhir/Organization/abc"},
    {"reference": "urn:uuid:6f1d4a52-4f0e-5d0b-9a7c-2c1f3e0b8d41",
     "identifier": {"system": systems.ODS_CODE, "value": "RX1"}},
    {"reference": "Organization/abc/_history/3"},
])
def test_reference_forms(reference: dict[str, Any]) -> None:
    """Absolute, versioned and urn:uuid (with identifier) references are read."""
    org = fhir.patient_to_child(pds_patient(managingOrganization=reference), base=BASE)[0] \
        .managing_organisation
    assert (org.resource_id, org.ods_code) in {("abc", None), (None, "RX1")}


@settings(max_examples=5, deadline=None)
@given(strategies.children(min_involvements=1))
def test_careteam_elements_not_held_are_listed(child: Any) -> None:
    """A CareTeam's name, note and a further participant role are listed, not kept."""
    with_ids(child)
    team = copy.deepcopy(fhir.child_to_careteam(child, base=BASE))
    team["name"] = "Team around the child"
    team["note"] = [{"text": "case notes are never stored"}]
    roles = team["participant"][0]["role"]
    roles.insert(1, {"text": "extra role"})
    involvements, ignored = fhir.careteam_to_involvements(team, base=BASE)
    assert [i.role for i in involvements] == [i.role for i in child.involvements]
    assert [i.lead_professional for i in involvements] == [
        i.lead_professional for i in child.involvements]
    assert ignored == ["CareTeam.name", "CareTeam.note", "CareTeam.participant[0].role[1]"]


@settings(max_examples=3, deadline=None)
@given(strategies.children())
def test_base_comes_from_the_settings_and_is_required(child: Any) -> None:
    """The caller passes the configured base (``Settings.canonical_base``); an empty one is
    refused."""
    with_ids(child)
    base = gateway_settings.load({"CANONICAL_BASE": "https://directory.example.gov.uk/fhir/"},
                                 environ={}).canonical_base
    patient = fhir.child_to_patient(child, base=base)
    assert patient["meta"]["profile"] == [
        "https://directory.example.gov.uk/fhir/StructureDefinition/ContactPointGateway-Patient"]
    assert BASE not in str(patient)
    assert fhir.patient_to_child(patient, base=base)[0].contactpoint_id == child.contactpoint_id
    with pytest.raises(LookupError):
        fhir.child_to_patient(child, base="")


@settings(max_examples=50, deadline=None)
@given(strategies.children())
def test_outputs_are_fresh_objects(child: Any) -> None:
    """Two outputs share no mutable object (a caller may edit one, e.g. to redact it)."""
    with_ids(child)
    first, second = publish_child(child), publish_child(child)
    assert first.patient == second.patient
    assert not _shared(first.patient, second.patient)


def _shared(a: Any, b: Any) -> bool:
    """Return whether two JSON trees share a dict or list object."""
    if isinstance(a, dict | list) and a is b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return any(_shared(a[k], b.get(k)) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return any(_shared(x, y) for x, y in zip(a, b, strict=False))
    return False


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    | st.sampled_from(["Organization/x", "PractitionerRole/y", "9000000009", "2020-01-01",
                       systems.NHS_NUMBER, systems.ODS_CODE, OWN.gss_code, "home", "old"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from([
        "identifier", "name", "address", "extension", "system", "value", "url", "line",
        "_line", "reference", "coding", "code", "given", "family", "period", "start",
        "valueCode", "use", "telecom", "relationship", "role", "member", "onBehalfOf"]),
        inner, max_size=4), max_leaves=12)
PATIENT_KEYS = ["identifier", "name", "address", "contact", "extension", "gender", "birthDate",
                "managingOrganization", "generalPractitioner", "meta", "telecom", "active"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATIENT_KEYS), JSON)
def test_garbage_is_invalid_never_a_crash(key: str, garbage: Any) -> None:
    """Any JSON in any element of a Patient is mapped or refused with Invalid."""
    patient = pds_patient()
    patient[key] = garbage
    try:
        fhir.patient_to_child(patient, base=BASE)
    except Invalid as exc:
        assert exc.expression


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["participant", "subject", "category", "status", "extension",
                        "identifier", "managingOrganization", "period"]), JSON)
def test_garbage_careteam_is_invalid_never_a_crash(key: str, garbage: Any) -> None:
    """Any JSON in any element of a CareTeam is mapped or refused with Invalid."""
    team = {"resourceType": "CareTeam", "subject": {"reference": "Patient/p"},
            "identifier": [{"system": OWN.ecaf_assessment, "value": "A1"}],
            "participant": [{"role": [{"coding": [{"system": OWN.code_system("team-role"),
                                                   "code": "lead-professional"}]}],
                             "onBehalfOf": LA}]}
    team[key] = garbage
    for read in (fhir.careteam_to_involvements, fhir.careteam_to_assessment):
        try:
            read(team, base=BASE)
        except Invalid as exc:
            assert exc.expression
