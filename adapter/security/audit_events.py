"""The audit trail as FHIR R4 ``AuditEvent`` resources (FHIR R4 auditevent.html; the UK Core
AuditEvent profile vendored in ``schemas/uk-core``, which constrains R4 only by making ``agent``
must-support).

One ``AuditRecord`` is one AuditEvent:
- ``type`` from the HL7 audit-event-type code system (``rest`` for RESTful interactions) or
  DICOM (DCM 110106 Export, 110113 Security Alert, 110101 Audit Log Used, 110114 User
  Authentication, 110100 Application Activity); ``subtype`` the FHIR restful-interaction code
  when there is one, and always the gateway's own action code (lossless: ``update-unchanged``,
  ``history``, and what a read delivered: ``read-head``, ``read-not-modified``,
  ``read-refused``, ``read-failed``);
- ``outcome`` 0 for success (a HEAD or a 304 too), 4 for a refused read, 8 for a failed one;
- ``action`` C/R/U/D/E as auditevent.html defines them (a search is E: "perform a
  query/search operation"; DICOM's Export message is R);
- ``agent``: the calling client (a Device, requestor, with the purpose of use and, for a
  break-glass access, v3-ActReason ``BTG``) and the organisation responsible for it;
- ``source``: this gateway (security-source-type 4, Application Server);
- ``entity``: the child (Patient, object-role 1) and the resource read or written; an override
  is labelled on the child's entity (v3-Confidentiality R and the detail ``override``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from adapter.models import AuditRecord
from adapter.models.canonical import as_utc
from adapter.security.audit import DISCLOSURES, DUPLICATE, QUALIFIERS
from adapter.systems import CONFIDENTIALITY, ODS_CODE, UKCORE_PROFILE_BASE, OwnSystems

PROFILE: Final = f"{UKCORE_PROFILE_BASE}UKCore-AuditEvent"
DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION: Final = "http://hl7.org/fhir/restful-interaction"
ACT_REASON: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
OBJECT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/object-role"
ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SOURCE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"
GSS_RE: Final = re.compile(r"E\d{8}")

Code = tuple[str, str, str]  # system, code, display
REST: Final[Code] = (AUDIT_EVENT_TYPE, "rest", "RESTful Operation")
EXPORT: Final[Code] = (DCM, "110106", "Export")
ACTIVITY: Final[Code] = (DCM, "110100", "Application Activity")


@dataclass(frozen=True)
class EventKind:
    """How one audit action appears as an AuditEvent."""

    type: Code
    interaction: str | None  # http://hl7.org/fhir/restful-interaction
    action: str  # C | R | U | D | E


EVENT_KINDS: Final = {
    "read": EventKind(REST, "read", "R"),
    "vread": EventKind(REST, "vread", "R"),
    "history": EventKind(REST, "history-instance", "R"),
    "search": EventKind(REST, "search-type", "E"),
    "create": EventKind(REST, "create", "C"),
    "update": EventKind(REST, "update", "U"),
    "update-unchanged": EventKind(REST, "update", "U"),
    "delete": EventKind(REST, "delete", "D"),
    "purge": EventKind(REST, "delete", "D"),
    "export": EventKind(EXPORT, "operation", "R"),
    "notify": EventKind(EXPORT, None, "R"),
    "alert": EventKind((DCM, "110113", "Security Alert"), None, "E"),
    "token": EventKind((DCM, "110114", "User Authentication"), None, "E"),
    "audit-read": EventKind((DCM, "110101", "Audit Log Used"), None, "R"),
    # A refused write whose 409 named the child's entry: what the caller learnt is read.
    DUPLICATE: EventKind(REST, None, "R"),
}
# A disclosure that delivered no data (HEAD, 304) or was refused or failed is the same kind of
# event as the disclosure, told apart by its outcome and its gateway action code
# (``adapter.security.audit``: ``read-head``, ``read-not-modified``, ``read-refused``, ...).
EVENT_KINDS.update({f"{action}-{qualifier}": EVENT_KINDS[action]
                    for action in DISCLOSURES for qualifier in QUALIFIERS})
# An action this table does not know (added by a later module) is still shown, generically.
OTHER: Final = EventKind(ACTIVITY, None, "E")


def coding(code: Code) -> dict[str, str]:
    """Return a FHIR Coding."""
    return {"system": code[0], "code": code[1], "display": code[2]}


def kind_of(action: str) -> EventKind:
    """Return how ``action`` appears as an AuditEvent."""
    return EVENT_KINDS.get(action, OTHER)


def instant(record: AuditRecord) -> str:
    """Return when ``record`` was written, as a FHIR instant."""
    moment = as_utc(record.recorded) or record.recorded
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def organisation_identifier(code: str, own: OwnSystems) -> dict[str, str]:
    """Return the identifier of an organisation code: a GSS code, else an ODS code."""
    return {"system": own.gss_code if GSS_RE.fullmatch(code) else ODS_CODE, "value": code}


def purpose(text: str | None, override: bool) -> list[dict[str, Any]]:
    """Return purposeOfUse: the caller's header (a v3-ActReason code when it is one), and BTG
    ("break the glass") for an override."""
    out: list[dict[str, Any]] = []
    if text:
        concept: dict[str, Any] = {"text": text}
        if re.fullmatch(r"[A-Z]{2,12}", text):
            concept["coding"] = [{"system": ACT_REASON, "code": text}]
        out.append(concept)
    if override:
        out.append({"coding": [{"system": ACT_REASON, "code": "BTG",
                                "display": "break the glass"}]})
    return out


def agents(record: AuditRecord, own: OwnSystems) -> list[dict[str, Any]]:
    """Return the requesting client and the organisation responsible for it."""
    client: dict[str, Any] = {
        "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
        "who": {"type": "Device", "identifier": {"system": own.id_system("client"),
                                                 "value": record.client_id},
                "display": record.client_id},
        "requestor": True,
    }
    uses = purpose(record.purpose_of_use, record.override)
    if uses:
        client["purposeOfUse"] = uses
    out = [client]
    if record.organisation_code and record.organisation_code != "-":
        out.append({
            "type": {"coding": [{"system": PARTICIPATION_TYPE, "code": "RESP",
                                 "display": "responsible party"}]},
            "who": {"type": "Organization", "display": record.organisation_code,
                    "identifier": organisation_identifier(record.organisation_code, own)},
            "requestor": False})
    return out


def entities(record: AuditRecord) -> list[dict[str, Any]]:
    """Return the child (Patient) and the resource the event concerns."""
    out: list[dict[str, Any]] = []
    if record.child_ref:
        child: dict[str, Any] = {
            "what": {"reference": f"Patient/{record.child_ref}"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}}
        if record.override:
            child["securityLabel"] = [{"system": CONFIDENTIALITY, "code": "R",
                                       "display": "restricted"}]
            child["detail"] = [{"type": "override", "valueString": "true"}]
        out.append(child)
    if record.resource_type and record.resource_id and not (
            record.resource_type == "Patient" and record.resource_id == record.child_ref):
        out.append({"what": {"reference": f"{record.resource_type}/{record.resource_id}"},
                    "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                    "role": {"system": OBJECT_ROLE, "code": "4",
                             "display": "Domain Resource"}})
    return out


def audit_event(record: AuditRecord, own: OwnSystems, site: str) -> dict[str, Any]:
    """Return ``record`` as a FHIR R4 AuditEvent (UK Core AuditEvent profile)."""
    kind = kind_of(record.action)
    subtype = [{"system": own.code_system("audit-action"), "code": record.action}]
    if kind.interaction:
        subtype.insert(0, {"system": RESTFUL_INTERACTION, "code": kind.interaction})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "id": str(record.id),
        "meta": {"versionId": "1", "lastUpdated": instant(record), "profile": [PROFILE]},
        "type": coding(kind.type), "subtype": subtype, "action": kind.action,
        "recorded": instant(record), "outcome": record.outcome,
    }
    if record.detail:
        event["outcomeDesc"] = record.detail
    if record.purpose_of_use:
        event["purposeOfEvent"] = purpose(record.purpose_of_use, False)
    event["agent"] = agents(record, own)
    event["source"] = {"site": site, "observer": {"display": "ContactPoint Gateway"},
                       "type": [{"system": SOURCE_TYPE, "code": "4",
                                 "display": "Application Server"}]}
    if found := entities(record):
        event["entity"] = found
    return event
