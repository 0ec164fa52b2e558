"""The provider of ``Practitioner``: the directory's staff (stored by
``adapter.store.organisations``), their search parameters and rendering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Final

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from adapter.errors import Conflict, Invalid
from adapter.fhir.handlers import Rendered
from adapter.fhir.providers.records import (
    Inbound,
    RecordProvider,
    practitioner_identifier_condition,
)
from adapter.fhir.search import EXACT_CONTAINS, NOT, Criterion, SearchParam, token_condition
from adapter.fhir.validation import require_valid
from adapter.mapping import fhir as mapping
from adapter.models import Practitioner
from adapter.security.caller import Caller
from adapter.security.policy import require_practitioner_writer
from adapter.settings import Settings
from adapter.store.organisations import (
    given_match,
    practitioner_derived_id,
    stored_organisation,
    string_match,
)
from adapter.store.records import (
    BOOKKEEPING,
    conflict_message,
    copy_columns,
    merge_national_ids,
    national_id_holders,
)

PRACTITIONER_PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id of the Practitioner", modifiers=NOT),
    SearchParam("identifier", "token",
                "system|value: the employing organisation's staff id (system "
                "<base>/Id/local/<organisation code>) or a national identifier (GMC, GMP, "
                "NMC, HCPC, GPhC number, SDS user id); a bare value matches any of them",
                "http://hl7.org/fhir/SearchParameter/Practitioner-identifier", NOT),
    SearchParam("name", "string",
                "Family or given name (starts with, case-insensitive)",
                "http://hl7.org/fhir/SearchParameter/Practitioner-name", EXACT_CONTAINS),
)}


def render_practitioner(person: Practitioner, base: str) -> Rendered:
    """Return a practitioner as its Practitioner (under the canonical ``base``)."""
    return Rendered(mapping.practitioner_to_fhir(person, base=base), person.version,
                    person.last_updated)


class PractitionerProvider(RecordProvider[Practitioner]):
    """The REST handler of ``Practitioner``: written by an administrator or by the employing
    organisation (one known only by national numbers: by any organisation's system); the
    staff id (employer and staff id), once given, never changes; each national identifier
    names one practitioner."""

    resource_type: ClassVar[str] = "Practitioner"
    search_params: ClassVar[dict[str, SearchParam]] = PRACTITIONER_PARAMS
    profile: ClassVar[str | None] = "Practitioner"
    what: ClassVar[str] = "practitioner"
    key_name: ClassVar[str] = "its identifier"
    taken_message: ClassVar[str] = ("{type}/{id} has this staff id or national identifier: "
                                    "update it with PUT.")
    not_deleted: ClassVar[str] = "A Practitioner is not deleted: records of children refer to them."

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, Practitioner)

    def condition(self, criterion: Criterion) -> Any:
        """Return the SQL condition of one Practitioner search criterion."""
        name = criterion.param.name
        if name == "name":
            return or_(*(or_(string_match(Practitioner.family, value, criterion.modifier),
                             given_match(value, criterion.modifier))
                         for value in criterion.values))
        builders: dict[str, Callable[[str], Any]] = {
            "_id": lambda v: Practitioner.resource_id == v,
            "identifier": lambda v: practitioner_identifier_condition(v, self.own),
        }
        return token_condition(criterion, builders[name])

    def render(self, row: Practitioner) -> Rendered:
        """Return a practitioner as its Practitioner."""
        return render_practitioner(row, self.settings.canonical_base)

    def _inbound(self, session: Session, resource: dict[str, Any],
                 caller: Caller) -> Inbound[Practitioner]:
        """Validate and map a Practitioner, with its stored employer (if it has a staff id).

        :raises Invalid: not valid, or an employer not known here.
        :raises Forbidden: the caller is neither the employer nor an administrator.
        """
        notes = require_valid("Practitioner", resource, self.settings)
        record, _ignored = mapping.practitioner_from_fhir(
            resource, base=self.settings.canonical_base)
        employer = (stored_organisation(session, record.organisation, "Practitioner.identifier")
                    if record.organisation is not None else None)
        require_practitioner_writer(employer, caller, "Practitioner.identifier")
        return Inbound(record, practitioner_derived_id(employer, record), notes, employer)

    def _holders(self, session: Session, inbound: Inbound[Practitioner]) -> dict[str, list[str]]:
        """Return, by Practitioner id, which of the inbound identifiers each stored
        practitioner holds (the staff id, national systems)."""
        holders = national_id_holders(session, inbound.record.national_ids())
        if inbound.employer is not None:
            staff = session.scalar(select(Practitioner.resource_id).where(
                Practitioner.organisation_id == inbound.employer.id,
                Practitioner.local_id == inbound.record.local_id))
            if staff is not None:
                holders.setdefault(staff, []).insert(0, "the staff id")
        return holders

    def _taken(self, session: Session, inbound: Inbound[Practitioner]) -> str | None:
        """Return the id of the stored practitioner holding an inbound identifier.

        :raises Conflict: different practitioners hold them.
        """
        holders = self._holders(session, inbound)
        if len(holders) > 1:
            raise Conflict(conflict_message(holders), expression="Practitioner.identifier")
        return next(iter(holders), None)

    def _new(self, inbound: Inbound[Practitioner]) -> Practitioner:
        """Return the new practitioner (of its employer, if any) at its derived id."""
        return Practitioner(resource_id=inbound.derived_id, organisation=inbound.employer)

    def _check_update(self, session: Session, row: Practitioner,
                      inbound: Inbound[Practitioner], caller: Caller) -> None:
        """A staff id, once given, stays; the inbound identifiers are held by no other
        practitioner.

        :raises Invalid: the body changes or drops the staff id.
        :raises Conflict: another practitioner holds one of its identifiers.
        """
        if row.local_id is not None and (inbound.employer is not row.organisation
                                         or inbound.record.local_id != row.local_id):
            raise Invalid("A practitioner's staff id (employer and staff id) cannot change or "
                          "be left out; send it with any national identifiers.",
                          expression="Practitioner.identifier")
        others = {rid: what for rid, what in self._holders(session, inbound).items()
                  if rid != row.resource_id}
        if others:
            raise Conflict(conflict_message({row.resource_id: ["this Practitioner"], **others}),
                           expression="Practitioner.identifier")

    def _apply(self, row: Practitioner, inbound: Inbound[Practitioner]) -> bool:
        """Copy name, contact and staff id; merge the national identifiers: a system sent
        replaces that system's number, a system left out keeps it (a client that knows only
        the staff id does not erase a GMC number another system gave)."""
        changed = copy_columns(inbound.record, row, BOOKKEEPING | {"resource_id"})
        if inbound.employer is not None and row.organisation is not inbound.employer:
            row.organisation = inbound.employer
            changed = True
        return merge_national_ids(row, inbound.record.national_ids()) or changed
