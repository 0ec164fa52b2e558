"""The provider of ``Organization``: the directory's organisations (stored by
``adapter.store.organisations``), their search parameters and rendering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Final

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from adapter import codes, identity
from adapter.errors import Invalid
from adapter.fhir.handlers import Rendered
from adapter.fhir.providers.records import (
    Inbound,
    RecordProvider,
    organisation_identifier_condition,
)
from adapter.fhir.search import (
    EXACT_CONTAINS,
    NOT,
    Criterion,
    SearchParam,
    matching_codes,
    token_condition,
)
from adapter.fhir.validation import require_valid
from adapter.mapping import fhir as mapping
from adapter.models import Organisation
from adapter.security.caller import Caller
from adapter.security.policy import require_organisation_writer
from adapter.settings import Settings
from adapter.store.organisations import ORGANISATION_CODES, organisation_codes, string_match
from adapter.store.records import organisation_key

ORGANIZATION_PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id of the Organization", modifiers=NOT),
    SearchParam("identifier", "token",
                "system|value: ODS code, school URN, GSS code or DfE local authority number",
                "http://hl7.org/fhir/SearchParameter/Organization-identifier", NOT),
    SearchParam("name", "string", "Name (starts with, case-insensitive)",
                "http://hl7.org/fhir/SearchParameter/Organization-name", EXACT_CONTAINS),
    SearchParam("type", "token",
                "Organisation type: this server's organisation-type code or its "
                "organization-type translation",
                "http://hl7.org/fhir/SearchParameter/Organization-type", NOT),
)}


def render_organisation(org: Organisation, base: str) -> Rendered:
    """Return an organisation as its Organization (under the canonical ``base``)."""
    return Rendered(mapping.organisation_to_fhir(org, base=base), org.version, org.last_updated)


class OrganizationProvider(RecordProvider[Organisation]):
    """The REST handler of ``Organization``: written by an administrator or by the
    organisation itself."""

    resource_type: ClassVar[str] = "Organization"
    search_params: ClassVar[dict[str, SearchParam]] = ORGANIZATION_PARAMS
    profile: ClassVar[str | None] = "Organization"
    what: ClassVar[str] = "organisation"
    key_name: ClassVar[str] = "its code"
    taken_message: ClassVar[str] = "{type}/{id} has one of these codes: update it with PUT."
    not_deleted: ClassVar[str] = "An Organization is not deleted: records of children refer to it."

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, Organisation)

    def condition(self, criterion: Criterion) -> Any:
        """Return the SQL condition of one Organization search criterion."""
        name = criterion.param.name
        if name == "name":
            return or_(*(string_match(Organisation.name, value, criterion.modifier)
                         for value in criterion.values))
        base = self.settings.canonical_base
        builders: dict[str, Callable[[str], Any]] = {
            "_id": lambda v: Organisation.resource_id == v,
            "identifier": lambda v: organisation_identifier_condition(v, self.own),
            "type": lambda v: Organisation.type.in_(
                sorted(matching_codes("organisation-type", codes.ORGANISATION_TYPES, v, base))),
        }
        return token_condition(criterion, builders[name])

    def render(self, row: Organisation) -> Rendered:
        """Return an organisation as its Organization."""
        return render_organisation(row, self.settings.canonical_base)

    def _inbound(self, session: Session, resource: dict[str, Any],
                 caller: Caller) -> Inbound[Organisation]:
        """Validate and map an Organization to a transient organisation.

        :raises Invalid: not valid, or without a code this directory keys organisations by.
        """
        notes = require_valid("Organization", resource, self.settings)
        record, _ignored = mapping.organization_to_organisation(
            resource, base=self.settings.canonical_base)
        if not organisation_codes(record):
            raise Invalid("An Organization needs an ODS code, a school URN or a GSS code.",
                          expression="Organization.identifier")
        if record.type == "local-authority" and not record.gss_code:
            raise Invalid("A local authority needs its GSS code.",
                          expression="Organization.identifier")
        derived = identity.organisation_id(organisation_key(record)[1])
        return Inbound(record, derived, notes)

    def _authorise_create(self, inbound: Inbound[Organisation], caller: Caller) -> None:
        """An administrator, or the organisation itself.

        :raises Forbidden: another organisation's record.
        """
        require_organisation_writer(inbound.record, caller, "Organization.identifier")

    def _taken(self, session: Session, inbound: Inbound[Organisation]) -> str | None:
        """Return the id of an organisation holding one of the inbound codes."""
        record = inbound.record
        return session.scalar(select(Organisation.resource_id).where(or_(*(
            getattr(Organisation, name) == getattr(record, name)
            for name in ORGANISATION_CODES if getattr(record, name)))))

    def _new(self, inbound: Inbound[Organisation]) -> Organisation:
        """Return the new organisation at its derived id."""
        return Organisation(resource_id=inbound.derived_id)

    def _check_update(self, session: Session, row: Organisation,
                      inbound: Inbound[Organisation], caller: Caller) -> None:
        """An administrator, or the organisation itself keeping codes of its own.

        :raises Forbidden: another organisation's record, or giving it another's codes.
        """
        require_organisation_writer(row, caller, "Organization")
        require_organisation_writer(inbound.record, caller, "Organization.identifier")
