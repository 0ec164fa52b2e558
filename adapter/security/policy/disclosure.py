"""The disclosure policy: what of a child's entry a caller may see (DOMAIN.md "Shielding",
"Sensitive services", "Other organisations' numbers"). One function, called by every dialect
(FHIR JSON and XML, directory XML, bulk export, notifications) before mapping: it returns the
entry itself when nothing is withheld, else a transient copy without the withheld parts and
the flag that labels the output REDACTED (a visible redaction, never a silent gap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from adapter.models import Carer, Child, ChildName, Involvement, LocalIdentifier, Organisation
from adapter.security.caller import Caller
from adapter.services.records import copy_columns

# DOMAIN.md "Shielding": what a caller without the right still sees of a shielded child.
SHIELDED_VISIBLE: Final = frozenset({"resource_id", "contactpoint_id", "gender", "birth_date",
                                     "record_status", "retention_date", "shielded",
                                     "version", "last_updated", "created"})


@dataclass(frozen=True)
class Disclosure:
    """What a caller may see of one child."""

    child: Child
    redacted: bool
    # A caller with the shielding right read a shielded child: audited as an override and
    # answered with a warning (DOMAIN.md "break glass").
    override: bool


def organisation_code(org: Organisation) -> str | None:
    """Return the code a client's organisation_code is compared with (ODS, else GSS, else URN)."""
    return org.ods_code or org.gss_code or org.urn


def may_see_involvement(involvement: Involvement, caller: Caller) -> bool:
    """Return True when ``caller`` may see ``involvement`` (DOMAIN.md "Sensitive services").

    Without the sensitive-services right a caller sees "at most that a sensitive service is
    involved and whom to ask": the involvement itself is withheld (even its role would say
    which kind of service), the entry is labelled REDACTED, and ``managingOrganization`` names
    the authority whose directory team brokers contact. Consent allows the involvement to be
    recorded; it does not widen who sees the provider.
    """
    return not involvement.sensitive or caller.has_right("sensitive")


def may_see_local_identifier(identifier: LocalIdentifier, caller: Caller) -> bool:
    """Return True when the identifier was allocated by the caller's own organisation."""
    return organisation_code(identifier.organisation) == caller.organisation_code


def disclose_child(child: Child, caller: Caller) -> Disclosure:
    """Return what ``caller`` may see of ``child``."""
    if child.shielded and not caller.has_right("shielded"):
        return Disclosure(_shielded_view(child), True, False)
    involvements = [i for i in child.involvements if may_see_involvement(i, caller)]
    local_ids = [li for li in child.local_identifiers if may_see_local_identifier(li, caller)]
    override = child.shielded
    if len(involvements) == len(child.involvements) \
            and len(local_ids) == len(child.local_identifiers):
        return Disclosure(child, False, override)
    return Disclosure(_view(child, involvements, local_ids), True, override)


def _copy(obj: object, cls: type) -> object:
    """Return a transient copy of ``obj``'s data columns."""
    copy = cls()
    copy_columns(obj, copy, frozenset({"id", "child_id"}))  # type: ignore[arg-type]
    return copy


def _view(child: Child, involvements: list[Involvement],
          local_ids: list[LocalIdentifier]) -> Child:
    """Return a transient copy of ``child`` with only the given involvements and local ids."""
    view: Child = _copy(child, Child)  # type: ignore[assignment]
    view.managing_organisation = child.managing_organisation
    view.names = [_copy(n, ChildName) for n in child.names]  # type: ignore[misc]
    view.carers = [_copy(c, Carer) for c in child.carers]  # type: ignore[misc]
    view.involvements = [copy_involvement(i) for i in involvements]
    view.local_identifiers = [copy_local_identifier(li) for li in local_ids]
    return view


def copy_involvement(involvement: Involvement) -> Involvement:
    """Return a transient copy of an involvement, sharing its organisation and practitioner."""
    copy: Involvement = _copy(involvement, Involvement)  # type: ignore[assignment]
    copy.organisation, copy.practitioner = involvement.organisation, involvement.practitioner
    return copy


def copy_local_identifier(identifier: LocalIdentifier) -> LocalIdentifier:
    """Return a transient copy of a local identifier, sharing its organisation."""
    copy: LocalIdentifier = _copy(identifier, LocalIdentifier)  # type: ignore[assignment]
    copy.organisation = identifier.organisation
    return copy


def _shielded_view(child: Child) -> Child:
    """Return the little a caller without the right sees of a shielded child: names, gender,
    birth date, ContactPoint ID, carers' names and the managing authority to contact."""
    view = Child()
    for name in SHIELDED_VISIBLE:
        setattr(view, name, getattr(child, name))
    view.managing_organisation = child.managing_organisation
    view.names = [_copy(n, ChildName) for n in child.names]  # type: ignore[misc]
    view.carers = [_carer_name_only(c) for c in child.carers]
    return view


def _carer_name_only(carer: Carer) -> Carer:
    """Return a transient carer without contact details: name, relationship and parental
    responsibility say who the person is, not where the child can be found."""
    return Carer(position=carer.position, title=carer.title, given=list(carer.given),
                 family=carer.family, relation=carer.relation,
                 parental_responsibility=carer.parental_responsibility)
