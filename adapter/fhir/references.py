"""Inbound references: one checker for every element the gateway reads a Reference from, used
by every write (REST create and update, transaction and batch entries) and by ``$validate``.

FHIR R4 references.html#Reference allows a literal reference (relative ``Type/id``, absolute
URL, contained ``#id``, or inside a transaction ``urn:uuid:``) and/or a logical one
(``identifier``). This server reads:

- ``Type/id`` (optionally ``/_history/n``): an id this server issued; the resource must be
  stored here;
- ``<GATEWAY_PUBLIC_URL>/fhir/Type/id``: the same (rewritten to ``Type/id`` before mapping);
- an absolute URL of another server: not followed; with an ``identifier`` beside it the
  identifier is used (and the URL reported as not kept), without one it is refused;
- ``identifier`` only: resolved by the natural key, as the mapping reads it;
- ``#id``: only where the element reads contained resources (a CareTeam participant's member,
  ``adapter.mapping.participants``), and it must name one;
- ``urn:uuid:`` / ``urn:oid:``: only inside a transaction, where it is replaced by the id of the
  entry whose ``fullUrl`` it is (``adapter.fhir.transaction``); one left over names nothing.

Every refusal is 422 with the element's FHIRPath as ``expression``; messages never echo a URL
or search given by the caller (it may carry a child's identifiers), only ``Type/id``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from adapter.errors import Invalid, issue
from adapter.mapping.datatypes import read_organisation, read_patient, read_practitioner
from adapter.mapping.transforms import Env
from adapter.models import Assessment, Child, Involvement, TeamMember
from adapter.security.caller import Caller
from adapter.security.policy.disclosure import visible_to
from adapter.settings import Settings
from adapter.systems import OwnSystems

# FHIR R4 datatypes.html#id: [A-Za-z0-9\-\.]{1,64}; references.html: [Type]/[id], optionally
# /_history/[vid], relative to the service base or absolute.
_ID: Final = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE: Final = re.compile(rf"([A-Z][A-Za-z]+)/({_ID})(?:/_history/{_ID})?")
_ABSOLUTE: Final = re.compile(rf"(https?://[^\s?#]+?)/([A-Z][A-Za-z]+)/({_ID})(?:/_history/{_ID})?")
_URN: Final = ("urn:uuid:", "urn:oid:")
ORGANIZATION: Final = ("Organization",)


@dataclass(frozen=True)
class Site:
    """An element the gateway reads a Reference from: its path below the resource (``*``: each
    item of a list), the resource types it may name, and whether ``#id`` is read there."""

    path: tuple[str, ...]
    targets: tuple[str, ...]
    contained: bool = False
    authority: bool = False  # names a local authority (docs/domain.md "The directory entry")


# What each inbound type's mapping reads as a Reference (mappings/*.toml, transforms in
# adapter.mapping.datatypes). Identifier.assigner is not read (the organisation of a local
# identifier comes from its system), so it is not a site.
SITES: Final[dict[str, tuple[Site, ...]]] = {
    "Patient": (
        Site(("managingOrganization",), ORGANIZATION, authority=True),
        Site(("generalPractitioner", "*"), ORGANIZATION),
    ),
    "CareTeam": (
        Site(("subject",), ("Patient",)),
        Site(("participant", "*", "member"), ("PractitionerRole", "Practitioner"), True),
        Site(("participant", "*", "onBehalfOf"), ORGANIZATION),
        # A team is managed by its child's managing authority whatever another system names
        # here (a GP practice, a trust): the organisation must exist, and the write says the
        # value was changed (adapter/fhir/careteam_notes.py) rather than refusing it.
        Site(("managingOrganization", "*"), ORGANIZATION),
        Site(("contained", "*", "organization"), ORGANIZATION),
        Site(("contained", "*", "practitioner"), ("Practitioner",)),
    ),
    "PractitionerRole": (
        Site(("practitioner",), ("Practitioner",)),
        Site(("organization",), ORGANIZATION),
    ),
}


@dataclass
class Found:
    """One Reference of an inbound resource: where it is, and the element's site."""

    expression: str
    reference: dict[str, Any]
    site: Site


def references_of(resource_type: str, resource: Any) -> Iterator[Found]:
    """Yield every Reference (a JSON object) at the sites of ``resource_type``."""
    for site in SITES.get(resource_type, ()):
        yield from _walk(resource, site.path, resource_type, site)


def _walk(value: Any, path: tuple[str, ...], where: str, site: Site) -> Iterator[Found]:
    """Yield the objects at ``path`` below ``value`` (``where``: its FHIRPath)."""
    if not path:
        if isinstance(value, dict):
            yield Found(where, value, site)
        return
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield from _walk(item, rest, f"{where}[{index}]", site)
        return
    if isinstance(value, dict) and head in value:
        yield from _walk(value[head], rest, f"{where}.{head}", site)


def _targets_text(site: Site) -> str:
    """Return the types an element may name, for a message ("Organization", "A or B")."""
    return " or ".join(site.targets)


# --- the form of a literal reference -------------------------------------------------------

def normalise(resource_type: str, resource: Any, settings: Settings) -> list[dict[str, Any]]:
    """Check the form of every literal reference ``resource`` carries at the sites the gateway
    reads, rewriting (in place, before the mapping reads it) an absolute URL of this server
    (under the settings' public FHIR base) to ``Type/id`` and dropping the URL of another
    server that stands beside an identifier. Returns the issues: an error per reference the
    gateway cannot follow, and the information that another server's URL was not kept.
    """
    base = settings.public_fhir_base
    contained = _contained_ids(resource)
    issues: list[dict[str, Any]] = []
    for found in references_of(resource_type, resource):
        issues.extend(_check_form(found, base, contained))
    return issues


def _contained_ids(resource: Any) -> set[str]:
    """Return the ids of the resources ``resource`` contains."""
    items = resource.get("contained") if isinstance(resource, dict) else None
    return {str(item["id"]) for item in items or []
            if isinstance(item, dict) and isinstance(item.get("id"), str)}


def _check_form(found: Found, base: str | None, contained: set[str]) -> list[dict[str, Any]]:
    """Return the issues of one Reference's literal ``reference`` (none: it can be followed)."""
    literal = found.reference.get("reference")
    where, site = found.expression, found.site
    if not isinstance(literal, str):  # identifier only, or a value the model refuses
        stated = found.reference.get("type")
        kind = stated.rsplit("/", 1)[-1] if isinstance(stated, str) else None
        if kind and kind not in site.targets:
            return [_error(where, f"{where}: Reference.type says {kind[:64]}, but only "
                           f"{_targets_text(site)} may be referenced here.", "value")]
        return []
    if literal.startswith("#"):
        return _contained_form(literal, where, site, contained)
    if literal.startswith(_URN):
        return [_error(where, f"{where}: a urn:uuid or urn:oid reference names an entry of a "
                       "transaction Bundle (its fullUrl), and this one names none: refer to "
                       f"the {_targets_text(site)} as '{site.targets[0]}/<id>' of this server, "
                       "or by its identifier, or send both in one transaction.")]
    relative = _RELATIVE.fullmatch(literal)
    if relative is not None:
        return _type_form(relative.group(1), relative.group(2), found)
    absolute = _ABSOLUTE.fullmatch(literal)
    if absolute is not None:
        return _absolute_form(absolute, base, found)
    return [_error(where, f"{where}: the reference is not a FHIR literal reference this "
                   f"server can follow: give '{site.targets[0]}/<id>' (an id of this server), "
                   "its absolute URL on this server, or an identifier (FHIR R4 "
                   "references.html#Reference); searches (conditional references) are not "
                   "resolved.")]


def _contained_form(literal: str, where: str, site: Site,
                    contained: set[str]) -> list[dict[str, Any]]:
    """Return the issues of a ``#id`` reference at ``site``."""
    if not site.contained:
        return [_error(where, f"{where}: a contained resource (#id) is not read here: refer "
                       f"to the {_targets_text(site)} stored on this server "
                       f"('{site.targets[0]}/<id>') or by its identifier.")]
    if literal[1:] not in contained:
        return [_error(where, f"{where}: no resource in this resource's contained has the id "
                       "this reference names (FHIR R4 references.html#contained).")]
    return []


def _type_form(kind: str, rid: str, found: Found) -> list[dict[str, Any]]:
    """Return the issues of a reference to ``kind``/``rid``: a type the element cannot name,
    or a ``Reference.type`` that says another."""
    where, site = found.expression, found.site
    if kind not in site.targets:
        return [_error(where, f"{where}: {kind}/{rid} refers to a {kind}, but only "
                       f"{_targets_text(site)} may be referenced here.", "value")]
    stated = found.reference.get("type")
    if isinstance(stated, str) and stated.rsplit("/", 1)[-1] != kind:
        return [_error(where, f"{where}: Reference.type says {stated.rsplit('/', 1)[-1]}, "
                       f"but the reference is to a {kind}: make them agree.", "value")]
    return []


def _absolute_form(match: re.Match[str], base: str | None, found: Found) -> list[dict[str, Any]]:
    """Return the issues of an absolute reference: this server's is rewritten to ``Type/id``;
    another server's is dropped when an identifier stands beside it, else refused."""
    server, kind, rid = match.group(1), match.group(2), match.group(3)
    reference, where = found.reference, found.expression
    if base is not None and server.rstrip("/").lower() == base.lower():
        reference["reference"] = match.group(0)[len(server) + 1:]
        return _type_form(kind, rid, found)
    if reference.get("identifier"):
        del reference["reference"]
        return [issue("information", "informational",
                      f"Not kept: {where}.reference (a URL on another server is not followed; "
                      "the identifier beside it is used).", f"{where}.reference")]
    return [_error(where, f"{where}: the reference is a URL on another server, which this "
                   f"server does not follow: refer to the {_targets_text(found.site)} stored "
                   f"here ('{found.site.targets[0]}/<id>' or "
                   f"{base or '<this server>'}/{found.site.targets[0]}/<id>), or give its "
                   "identifier.")]


def _error(where: str, message: str, code: str = "invalid") -> dict[str, Any]:
    """Return an error issue at ``where``."""
    return issue("error", code, message, where)


# --- resolving against what is stored -------------------------------------------------------

def unresolved(session: Session, resource_type: str, resource: Any, caller: Caller,
               settings: Settings) -> list[dict[str, Any]]:
    """Return an error per Reference (already normalised) naming nothing stored here (or
    nothing ``caller`` may see): the literal id, or the natural key of an identifier (read
    under the settings' canonical base), by the same functions the writes resolve them with."""
    env = Env(OwnSystems(settings.canonical_base))
    issues: list[dict[str, Any]] = []
    for found in references_of(resource_type, resource):
        try:
            _resolve(session, env, found, caller)
        except Invalid as exc:
            issues.append(_error(found.expression, exc.message))
    return issues


def resolve_role_aliases(session: Session, resource_type: str, resource: Any,
                         caller: Caller) -> list[dict[str, Any]]:
    """Rewrite (in place, before the mapping reads it) every ``PractitionerRole/<id>`` that
    names a role by an earlier id (``adapter.store.aliases``: the ids migration 0014
    replaced) to the role's id now, so that an id once published keeps working for writers as
    it does for readers (a read of it is redirected). Returns an information issue per
    reference rewritten. A role the caller may not see is left as named: the write answers
    as for an unknown role.
    """
    from adapter.store.practitioner_roles import current_role_id

    issues: list[dict[str, Any]] = []
    for found in references_of(resource_type, resource):
        literal = found.reference.get("reference")
        if not isinstance(literal, str) or "PractitionerRole" not in found.site.targets:
            continue
        match = _RELATIVE.fullmatch(literal)
        if match is None or match.group(1) != "PractitionerRole":
            continue
        old_id = match.group(2)
        new_id = current_role_id(session, old_id, caller)
        if new_id is None:
            continue
        found.reference["reference"] = literal[:match.start(2)] + new_id + literal[match.end(2):]
        issues.append(issue("information", "informational",
                            f"{found.expression}: PractitionerRole/{old_id} is an earlier id "
                            f"of PractitionerRole/{new_id}: read as the id it has now.",
                            f"{found.expression}.reference"))
    return issues


def require_resolved(session: Session, resource_type: str, resource: Any, caller: Caller,
                     settings: Settings) -> None:
    """Resolve every Reference of an inbound write (see :func:`unresolved`).

    :raises Invalid: the first that names nothing stored here.
    """
    for found in unresolved(session, resource_type, resource, caller, settings):
        raise Invalid(found["diagnostics"], expression=found["expression"][0])


def _resolve(session: Session, env: Env, found: Found, caller: Caller) -> None:
    """Resolve one Reference by the type it names.

    :raises Invalid: it names nothing stored here.
    """
    literal = found.reference.get("reference")
    if isinstance(literal, str) and literal.startswith(("#", *_URN)):
        return  # contained (read with the resource) or refused by its form
    match = _RELATIVE.fullmatch(literal) if isinstance(literal, str) else None
    kind = match.group(1) if match else _stated_type(found)
    if kind == "Organization":
        _resolve_organisation(session, env, found)
    elif kind == "Practitioner":
        _resolve_practitioner(session, env, found)
    elif kind == "Patient":
        _resolve_patient(session, env, found, caller)
    elif kind == "PractitionerRole" and match is not None:
        _resolve_role(session, match.group(2), found.expression)


def _stated_type(found: Found) -> str | None:
    """Return the type of a Reference without a literal: ``Reference.type``, else the only
    type its element may name."""
    stated = found.reference.get("type")
    if isinstance(stated, str) and stated:
        return stated.rsplit("/", 1)[-1]
    return found.site.targets[0] if len(found.site.targets) == 1 else None


def _ignore(_path: tuple[str | int, ...]) -> None:
    """Drop callback of the readers: what is not kept is reported by the mapping itself."""


def _resolve_organisation(session: Session, env: Env, found: Found) -> None:
    """Resolve a Reference(Organization) as Patient, CareTeam and roles do.

    :raises Invalid: no such organisation here.
    """
    from adapter.store.organisations import stored_organisation

    try:
        ref = read_organisation(env, found.reference, _ignore)
    except ValueError:
        return  # neither id nor key: the mapping refuses it with its own message
    org = stored_organisation(session, ref, found.expression)
    if found.site.authority and not org.gss_code:
        raise Invalid(f"{found.expression}: Organization/{org.resource_id} is not a local "
                      "authority: an entry's managing organisation is its local authority "
                      "(docs/domain.md \"The directory entry\"); refer to the authority's "
                      "Organization or give its GSS code.", expression=found.expression)


def _resolve_practitioner(session: Session, env: Env, found: Found) -> None:
    """Resolve a Reference(Practitioner) as CareTeam members and roles do.

    :raises Invalid: no such practitioner here.
    """
    from adapter.store.organisations import stored_practitioner

    try:
        ref = read_practitioner(env, found.reference, _ignore)
    except ValueError:
        return
    stored_practitioner(session, ref, found.expression)


def _resolve_patient(session: Session, env: Env, found: Found, caller: Caller) -> None:
    """Resolve a Reference(Patient) as CareTeam writes do (:func:`stored_child`).

    :raises Invalid: no such child.
    """
    try:
        ref = read_patient(env, found.reference, _ignore)
    except ValueError:
        return
    stored_child(session, ref, caller, found.expression)


def stored_child(session: Session, ref: Child, caller: Caller, expression: str) -> Child:
    """Return the stored child a Reference(Patient) names (logical id and/or ContactPoint
    ID), if ``caller`` may see it (archived entries are invisible to ordinary callers,
    docs/domain.md "Retention").

    :raises Invalid: no such child, or the id and the identifier name different children.
    """
    from adapter.store.children import child_query

    conditions = [c for c in (Child.resource_id == ref.resource_id if ref.resource_id else None,
                              Child.contactpoint_id == ref.contactpoint_id
                              if ref.contactpoint_id else None) if c is not None]
    child = session.scalar(child_query().where(*conditions, visible_to(caller))) \
        if conditions else None
    if child is None:
        named = f"Patient/{ref.resource_id}" if ref.resource_id else "the ContactPoint ID"
        raise Invalid(f"{expression}: {named} is not known here (or the reference and its "
                      "ContactPoint ID name different children): refer to a Patient of this "
                      "server.", expression=expression)
    return child


def _resolve_role(session: Session, rid: str, where: str) -> None:
    """Resolve ``PractitionerRole/<rid>``: an involvement, an eCAF team member or lead.

    :raises Invalid: no such role here.
    """
    exists = session.scalar(select(Involvement.id).where(Involvement.resource_id == rid)) \
        or session.scalar(select(TeamMember.id).where(TeamMember.resource_id == rid)) \
        or session.scalar(select(Assessment.id).where(or_(Assessment.lead_role_id == rid)))
    if not exists:
        raise Invalid(f"{where}: PractitionerRole/{rid} is not known here: refer to a role of "
                      "this team, or contain a new PractitionerRole (#id).", expression=where)
