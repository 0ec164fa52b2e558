"""eCAF re-keying (docs/domain.md "eCAF assessment references"): before switch-off an
eCAF system fetches, for its assessment references, the identifiers of each child that survive
the ContactPoint ID (NHS number, UPN, its own organisation's local ids), so that its records stay
linked once ContactPoint IDs disappear.

"Its" assessment references are those whose lead organisation or whose child's managing
authority is the caller's organisation (every one for an admin). What each record shows passes
the one disclosure policy (``disclose_child``): a shielded child's NHS number and UPN are
withheld from a caller without the shielding right, other organisations' local ids always are;
the record then says it was redacted. Every record is audited and entered in the delivery ledger
(the caller now holds the child's identifiers, so its purge Task will name the child).

The FHIR form is ``GET /fhir/CareTeam/$rekey``: a ``Parameters`` resource with one ``rekey``
parameter per assessment (parts ``careTeam``, ``assessment``, ``patient``, ``identifier``...,
``redacted``) and, when more follow, a ``next`` parameter with the URL of the next page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Final

from lxml import etree
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, joinedload, selectinload

from adapter.db import Database
from adapter.directory.schema import NS, q
from adapter.directory.writer import NSMAP, header_element, organisation_element, xml_bool
from adapter.models import Assessment, Child, LocalIdentifier, Organisation
from adapter.models.canonical import organisation_dump
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import disclose_child, organisation_code
from adapter.systems import (
    NHS_NUMBER,
    NHS_NUMBER_VERIFICATION_CS,
    NHS_NUMBER_VERIFICATION_EXT,
    OwnSystems,
)

PAGE: Final = 500


@dataclass
class Rekey:
    """One assessment reference and its child's surviving identifiers, as disclosed."""

    careteam_id: str
    assessment_id: str
    child_ref: str
    contactpoint_id: str
    nhs_number: str | None
    nhs_number_status: str | None
    upn: str | None
    local_ids: list[LocalIdentifier] = field(default_factory=list)
    redacted: bool = False


def _theirs(caller: Caller) -> Any:
    """Return the condition selecting the caller's assessment references."""
    if caller.has_right("admin"):
        return Assessment.id.is_not(None)
    lead = select(Organisation.id).where(or_(
        Organisation.ods_code == caller.organisation_code,
        Organisation.gss_code == caller.organisation_code,
        Organisation.urn == caller.organisation_code)).scalar_subquery()
    return or_(Assessment.lead_organisation_id.in_(lead),
               Assessment.child.has(Child.managing_organisation_id.in_(lead)))


def _record(assessment: Assessment, caller: Caller) -> Rekey:
    """Return the re-keying record of one assessment as ``caller`` may see it."""
    disclosure = disclose_child(assessment.child, caller)
    child = disclosure.child
    return Rekey(assessment.resource_id, assessment.assessment_id, child.resource_id,
                 child.contactpoint_id, child.nhs_number, child.nhs_number_status, child.upn,
                 list(child.local_identifiers), disclosure.redacted)


def rekey_page(session: Session, caller: Caller, after: int,
               limit: int = PAGE) -> tuple[list[Rekey], int | None]:
    """Return up to ``limit`` records after internal assessment id ``after`` (audited and
    entered in the ledger), and the id to continue after (None: no more)."""
    query = (select(Assessment).where(_theirs(caller), Assessment.id > after)
             .options(joinedload(Assessment.child).options(
                 joinedload(Child.managing_organisation),
                 selectinload(Child.local_identifiers), selectinload(Child.involvements),
                 selectinload(Child.names), selectinload(Child.carers)))
             .order_by(Assessment.id).limit(limit + 1))
    assessments = list(session.scalars(query).unique())
    more = len(assessments) > limit
    assessments = assessments[:limit]
    records = [_record(a, caller) for a in assessments]
    for record in records:
        audit.record(session, "rekey", resource_type="CareTeam", resource_id=record.careteam_id,
                     child_ref=record.child_ref, caller=caller)
    ledger.record_deliveries(session, caller.client_id, [r.child_ref for r in records], "rekey")
    return records, (assessments[-1].id if more else None)


def iter_rekeys(db: Database, caller: Caller) -> Iterator[Rekey]:
    """Yield every record of ``caller``, one transaction per page (streamed)."""
    after: int | None = 0
    while after is not None:
        with db.write_transaction() as session:
            records, after = rekey_page(session, caller, after)
        yield from records


# --- directory XML ----------------------------------------------------------------------------

def rekey_element(record: Rekey) -> etree._Element:
    """Return one ``Rekey`` element (schemas/xml/decommission.xsd)."""
    element = etree.Element(q("Rekey"), nsmap=NSMAP)
    if record.redacted:
        element.set("redacted", xml_bool(True))
    etree.SubElement(element, q("AssessmentId")).text = record.assessment_id
    etree.SubElement(element, q("ContactPointId")).text = record.contactpoint_id
    if record.nhs_number:
        nhs = etree.SubElement(element, q("NhsNumber"))
        nhs.text = record.nhs_number
        if record.nhs_number_status:
            nhs.set("verificationStatus", record.nhs_number_status)
    if record.upn:
        etree.SubElement(element, q("UniquePupilNumber")).text = record.upn
    for local in record.local_ids:
        item = etree.SubElement(element, q("LocalIdentifier"))
        organisation_element(item, "Organisation", organisation_dump(local.organisation))
        etree.SubElement(item, q("Value")).text = local.value
    return element


def rekey_chunks(records: Iterator[Rekey]) -> Iterator[bytes]:
    """Yield a ``RekeyMappings`` document of ``records`` piece by piece (streamed: each record
    is serialised on its own, declaring the namespace again, which XML allows)."""
    yield (b'<?xml version="1.0" encoding="UTF-8"?>\n'
           + f'<RekeyMappings xmlns="{NS}">\n'.encode())
    header = header_element("contactpoint-gateway", dt.datetime.now(dt.UTC))
    yield etree.tostring(header, pretty_print=True)
    for record in records:
        yield etree.tostring(rekey_element(record), pretty_print=True)
    yield b"</RekeyMappings>\n"


def write_rekeys(records: Iterator[Rekey], stream: IO[bytes]) -> None:
    """Write a ``RekeyMappings`` document of ``records`` to ``stream``."""
    for chunk in rekey_chunks(records):
        stream.write(chunk)


# --- FHIR Parameters ------------------------------------------------------------------------

def _identifiers(record: Rekey, own: OwnSystems) -> list[dict[str, Any]]:
    """Return the child's disclosed identifiers as FHIR Identifiers."""
    found: list[dict[str, Any]] = [{"system": own.contactpoint_id,
                                    "value": record.contactpoint_id}]
    if record.nhs_number:
        nhs: dict[str, Any] = {"system": NHS_NUMBER, "value": record.nhs_number}
        if record.nhs_number_status:
            nhs["extension"] = [{"url": NHS_NUMBER_VERIFICATION_EXT, "valueCodeableConcept": {
                "coding": [{"system": NHS_NUMBER_VERIFICATION_CS,
                            "code": record.nhs_number_status}]}}]
        found.append(nhs)
    if record.upn:
        found.append({"system": own.upn, "value": record.upn})
    for local in record.local_ids:
        code = organisation_code(local.organisation) or "unknown"
        found.append({"system": own.local_id(code), "value": local.value})
    return found


def rekey_parameter(record: Rekey, own: OwnSystems) -> dict[str, Any]:
    """Return one ``rekey`` parameter of the ``$rekey`` result."""
    parts: list[dict[str, Any]] = [
        {"name": "careTeam", "valueReference": {"reference": f"CareTeam/{record.careteam_id}"}},
        {"name": "assessment", "valueIdentifier": {"system": own.ecaf_assessment,
                                                   "value": record.assessment_id}},
        {"name": "patient", "valueReference": {"reference": f"Patient/{record.child_ref}"}}]
    parts += [{"name": "identifier", "valueIdentifier": i} for i in _identifiers(record, own)]
    parts.append({"name": "redacted", "valueBoolean": record.redacted})
    return {"name": "rekey", "part": parts}


def rekey_parameters(records: list[Rekey], own: OwnSystems,
                     next_url: str | None) -> dict[str, Any]:
    """Return one page of the ``$rekey`` result as a Parameters resource."""
    parameters = [rekey_parameter(r, own) for r in records]
    if next_url:
        parameters.append({"name": "next", "valueUri": next_url})
    result: dict[str, Any] = {"resourceType": "Parameters"}
    if parameters:
        result["parameter"] = parameters
    return result
