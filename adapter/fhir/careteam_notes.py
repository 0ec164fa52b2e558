"""What a CareTeam write keeps in another form than it was sent, told to its writer as
"Changed:" notes (``adapter.fhir.announce``): the mapping lists what it does not keep at all;
these are the elements it reads but the directory decides — a team's status and managing
organisation, and participants' members, which are always the PractitionerRoles of the
involvements or team members they describe (FHIR R4 careteam.html, ctm-1). The notes compare
the CareTeam sent with the one written (as the writer may see it) and repeat no value but
codes and the directory's own resource ids."""

from __future__ import annotations

from typing import Any, Final

from adapter.fhir.announce import changed
from adapter.mapping.datatypes import reference_type

TEAM_STATUS_WHY: Final = ("a child's team has the status of the child's directory entry (active "
                          "while it is live); the entry's status is the Patient's to change")
ECAF_STATUS_WHY: Final = ("an eCAF team's status follows its assessment status (extension "
                          "AssessmentStatus, ConceptMap assessment-status)")


def careteam_changes(sent: dict[str, Any], written: dict[str, Any], ecaf: bool,
                     already: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the "Changed:" notes of a CareTeam write: ``sent`` as the writer sent it,
    ``written`` as the writer now reads it; none about an element ``already`` noted (the
    mapping's "Not kept")."""
    notes = _status(sent, written, ecaf)
    if not ecaf:
        notes += _managing(sent, written)
    notes += _subject_display(sent, written)
    notes += _members(sent, written)
    noted = {e for note in already for e in note.get("expression") or []}
    return [n for n in notes if not set(n["expression"]) & noted]


def _status(sent: dict[str, Any], written: dict[str, Any], ecaf: bool) -> list[dict[str, Any]]:
    """Return the note of a status kept as another code."""
    asked, kept = sent.get("status"), written.get("status")
    if not isinstance(asked, str) or asked == kept:
        return []
    return [changed("CareTeam.status", ECAF_STATUS_WHY if ecaf else TEAM_STATUS_WHY, asked,
                    str(kept))]


def _target(reference: Any) -> str | None:
    """Return ``Type/id`` of a literal reference (relative or absolute), else None."""
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    parts = reference["reference"].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def _same_organisation(asked: Any, kept: dict[str, Any]) -> bool:
    """Return True when the reference ``asked`` names the organisation ``kept`` refers to
    (by literal reference, else by identifier)."""
    if not isinstance(asked, dict):
        return False
    if _target(asked) is not None:
        return _target(asked) == _target(kept)
    wanted, have = asked.get("identifier"), kept.get("identifier")
    if not isinstance(wanted, dict) or not isinstance(have, dict):
        return False
    return bool(wanted.get("value")) and wanted.get("value") == have.get("value") \
        and wanted.get("system") in (None, have.get("system"))


def _managing(sent: dict[str, Any], written: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the notes of managing organisations other than the child's authority."""
    kept = [r for r in written.get("managingOrganization") or [] if isinstance(r, dict)]
    authority = _target(kept[0]) if kept else None
    why = "a child's team is managed by the child's managing authority" + \
        (f", {authority}" if authority else "")
    return [changed(f"CareTeam.managingOrganization[{index}]", why)
            for index, asked in enumerate(sent.get("managingOrganization") or [])
            if not any(_same_organisation(asked, k) for k in kept)]


def _subject_display(sent: dict[str, Any], written: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the note of a subject display other than the child's name (not repeated)."""
    asked = (sent.get("subject") or {}).get("display") \
        if isinstance(sent.get("subject"), dict) else None
    kept = (written.get("subject") or {}).get("display")
    if asked is None or asked == kept:
        return []
    return [changed("CareTeam.subject.display", "the directory writes the child's current name")]


def _members(sent: dict[str, Any], written: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the notes of participants whose member is kept in another form."""
    displays = {_target(p.get("member")): (p.get("member") or {}).get("display")
                for p in written.get("participant") or [] if isinstance(p, dict)}
    notes = []
    for index, participant in enumerate(sent.get("participant") or []):
        if not isinstance(participant, dict):
            continue
        where = f"CareTeam.participant[{index}]"
        member = participant.get("member")
        notes += _member(where, member, displays)
        if isinstance(participant.get("onBehalfOf"), dict):
            notes.append(changed(f"{where}.onBehalfOf", "kept as the organization of the "
                                 "member's PractitionerRole (FHIR R4 ctm-1)"))
    return notes


def _member(where: str, member: Any, displays: dict[str | None, Any]) -> list[dict[str, Any]]:
    """Return the note of one participant's member kept in another form."""
    if not isinstance(member, dict):
        return []
    reference = member.get("reference")
    if isinstance(reference, str) and reference.startswith("#"):
        return [changed(f"{where}.member", "kept as the PractitionerRole of the involvement "
                        "it describes (the contained resource is not kept as such; the "
                        "CareTeam written refers to the PractitionerRole by its id)")]
    target = _target(member)
    if target is None or reference_type(member) != "PractitionerRole":
        if target is None and "display" not in member:
            return []
        return [changed(f"{where}.member", "a member is kept as the PractitionerRole of the "
                        "practitioner's involvement with the child (FHIR R4 ctm-1)")]
    if "display" in member and target in displays and displays[target] != member["display"]:
        return [changed(f"{where}.member.display",
                        "the directory writes the display of the PractitionerRole")]
    return []
