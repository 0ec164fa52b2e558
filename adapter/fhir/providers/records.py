"""The shared provider of the directory's own records, Organization and Practitioner: read, search,
create and update by an administrator or by the organisation itself (stored by
``adapter.store.organisations``); and the search conditions on those records by identifier
token that every provider referring to them uses (CareTeam and PractitionerRole participants,
a Patient's managing organisation)."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from adapter.errors import Conflict, Invalid, MethodNotAllowed, NotFound
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.paging import count_of, keyset_page
from adapter.fhir.search import Criterion, SearchParam, SearchRequest, split_token
from adapter.fhir.validation import validate_inbound
from adapter.models import Organisation, Practitioner
from adapter.models.base import utcnow
from adapter.security.caller import Caller
from adapter.settings import Settings
from adapter.store.organisations import (
    check_version,
    flush_write,
    method_of,
    organisation_code_condition,
    practitioner_code_condition,
)
from adapter.store.records import BOOKKEEPING, copy_columns
from adapter.systems import OwnSystems

CURRENT_ONLY: Final = ("Only the current version of {type}/{id} is kept (version {version}); "
                       "earlier versions are not served.")

def organisation_identifier_condition(value: str, own: OwnSystems) -> Any:
    """Return a condition on Organisation matching one identifier token (system|value): ODS
    code, school URN, GSS code or DfE local authority number; no system: any of them."""
    system, code = split_token(value)
    return organisation_code_condition(system, code, own)


def practitioner_identifier_condition(value: str, own: OwnSystems) -> Any:
    """Return a condition on Practitioner matching one identifier token: the employing
    organisation's local id system and the staff id, or a national system and its number; no
    system: a staff id or a national number (``practitioner_code_condition``)."""
    system, code = split_token(value)
    return practitioner_code_condition(system, code, own)


def check_body_id(resource: dict[str, Any], resource_id: str, resource_type: str) -> None:
    """An update's body names the resource of its URL (FHIR R4 http.html#update).

    :raises Invalid: the body's id differs.
    """
    if resource.get("id") not in (None, resource_id):
        raise Invalid(f"The {resource_type}'s id must match the id in the URL.",
                      expression=f"{resource_type}.id")


def with_notes(rendered: Rendered, notes: list[dict[str, Any]]) -> Rendered:
    """Return ``rendered`` carrying the inbound validation's notes (what was not kept)."""
    rendered.issues = notes + rendered.issues
    return rendered


# The records a RecordProvider serves: both have resource_id, version, last_updated and id.
R = TypeVar("R", Organisation, Practitioner)


@dataclass
class Inbound(Generic[R]):
    """A validated inbound resource: the transient record, the id its key derives, its
    employer (a practitioner's) and the validation's notes (what was not kept)."""

    record: R
    derived_id: str
    notes: list[dict[str, Any]]
    employer: Organisation | None = None


class RecordProvider(ABC, Generic[R]):
    """The REST handler of a directory record of which only the current version is kept
    (Organization, Practitioner): read, vread and history of the current version, keyset
    search, create and update (also at the id derived from its key); never deleted.

    Constructed with the settings (its rendering and its identifier systems are under their
    canonical base) and the model; a subclass names its resource type, gives the condition of
    one search criterion and the rendering, and says how an inbound resource is read and
    checked.
    """

    resource_type: ClassVar[str]
    interactions: ClassVar[tuple[str, ...]] = (
        "read", "vread", "history-instance", "search-type", "search-type-post", "create",
        "update", "conditional-update", "validate")
    search_params: ClassVar[dict[str, SearchParam]]
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset()
    profile: ClassVar[str | None]
    what: ClassVar[str]  # the record in messages: "organisation", "practitioner"
    key_name: ClassVar[str]  # what its id derives from: "its code", "its identifier"
    taken_message: ClassVar[str]  # a create whose key is taken: "{type}/{id} has ..."
    not_deleted: ClassVar[str]  # why a delete is refused

    def __init__(self, settings: Settings, model: type[R]) -> None:
        self.settings = settings
        self.own = OwnSystems(settings.canonical_base)
        self.model: type[R] = model

    @abstractmethod
    def condition(self, criterion: Criterion) -> Any:
        """Return the SQL condition of one search criterion on the model."""

    @abstractmethod
    def render(self, row: R) -> Rendered:
        """Return a record as its resource."""

    def _find(self, session: Session, resource_id: str) -> R | None:
        """Return the record with FHIR id ``resource_id``, if any."""
        return session.scalar(select(self.model).where(self.model.resource_id == resource_id))

    def _load(self, session: Session, resource_id: str) -> R:
        """Return the record with FHIR id ``resource_id``.

        :raises NotFound: none.
        """
        row = self._find(session, resource_id)
        if row is None:
            raise NotFound(f"No {self.resource_type}/{resource_id} on this server.")
        return row

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return the resource."""
        return self.render(self._load(session, resource_id))

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Return the current version (the only one kept).

        :raises NotFound: another version.
        """
        row = self._load(session, resource_id)
        if version != row.version:
            raise NotFound(CURRENT_ONLY.format(type=self.resource_type, id=resource_id,
                                               version=row.version))
        return self.render(row)

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Return the current version (no history is kept for these records)."""
        row = self._load(session, resource_id)
        return [(self.render(row), row.version, method_of(row.version), row.last_updated)]

    def _select(self, search: SearchRequest) -> Select[Any]:
        """Return the select of the records matching ``search``."""
        query = select(self.model)
        for criterion in search.criteria:
            query = query.where(self.condition(criterion))
        return query

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of resources (keyset paging on the internal id)."""
        return keyset_page(session, self._select(search), self.model.id, search,
                           lambda row: self.render(row).resource)

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many resources match."""
        return count_of(session, self._select(search), self.model.id)

    # --- what each type says about an inbound resource -------------------------------------

    @abstractmethod
    def _inbound(self, session: Session, resource: dict[str, Any],
                 caller: Caller) -> Inbound[R]:
        """Validate and map an inbound resource.

        :raises Invalid: not valid.
        :raises Forbidden: (where the type checks it here) the caller may not write it.
        """

    def _authorise_create(self, inbound: Inbound[R], caller: Caller) -> None:
        """Check that ``caller`` may create the record (nothing more by default).

        :raises Forbidden: it may not.
        """

    @abstractmethod
    def _taken(self, session: Session, inbound: Inbound[R]) -> str | None:
        """Return the id of the stored record holding the inbound one's key, if any."""

    @abstractmethod
    def _new(self, inbound: Inbound[R]) -> R:
        """Return the new record of an inbound resource, at its derived id."""

    @abstractmethod
    def _check_update(self, session: Session, row: R, inbound: Inbound[R],
                      caller: Caller) -> None:
        """Check that ``inbound`` may replace ``row``.

        :raises Forbidden: the caller may not.
        :raises Invalid: the change is not allowed.
        :raises Conflict: it would take another record's key.
        """

    def _apply(self, row: R, inbound: Inbound[R]) -> bool:
        """Copy the inbound record's data onto ``row``; return True if anything changed."""
        return copy_columns(inbound.record, row, BOOKKEEPING | {"resource_id"})

    # --- writes ------------------------------------------------------------------------------

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Create the record.

        :raises Forbidden: the caller may not.
        :raises Conflict: a record with its key exists.
        """
        inbound = self._inbound(session, resource, caller)
        self._authorise_create(inbound, caller)
        taken = self._taken(session, inbound)
        if taken is not None:
            raise Conflict(self.taken_message.format(type=self.resource_type, id=taken),
                           expression=f"{self.resource_type}.identifier")
        row = self._new(inbound)
        self._apply(row, inbound)
        session.add(row)
        flush_write(session, self.what)
        return WriteResult(with_notes(self.render(row), inbound.notes), True)

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Update the record (or create it at the id derived from its key).

        :raises PreconditionFailed: stale ``If-Match``.
        :raises Forbidden: the caller may not.
        :raises Invalid: the body's id differs from the URL's, or the change is not allowed.
        """
        check_body_id(resource, resource_id, self.resource_type)
        row = self._find(session, resource_id)
        if row is None:
            return self._create_at(session, resource_id, resource, caller)
        check_version(row.version, if_match)
        inbound = self._inbound(session, resource, caller)
        self._check_update(session, row, inbound, caller)
        changed = self._apply(row, inbound)
        if changed:
            row.last_updated = utcnow()
        flush_write(session, self.what)
        return WriteResult(with_notes(self.render(row), inbound.notes), False, changed)

    def _create_at(self, session: Session, resource_id: str, resource: dict[str, Any],
                   caller: Caller) -> WriteResult:
        """Create through PUT: only at the id this server derives from the key.

        :raises Invalid: another id.
        """
        if self._inbound(session, resource, caller).derived_id != resource_id:
            raise Invalid(f"A new {self.resource_type} can be created by PUT only at the id "
                          f"derived from {self.key_name}; use POST instead.",
                          expression=f"{self.resource_type}.id")
        return self.create(session, resource, caller)

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """These records are not deleted through FHIR: records of children refer to them
        (declared without ``delete``).

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed(self.not_deleted)

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Return the issues a create of ``resource`` would meet (nothing is stored)."""
        return validate_inbound(self.resource_type, resource, self.settings)
