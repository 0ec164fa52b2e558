"""Light records of a child's directory entry, read with SQLAlchemy Core rather than hydrated as
ORM objects (``adapter.store.rows`` loads them): a read of one entry costs about a quarter of
its ORM hydration (docs/scale.md "Reads").

Each record carries exactly the column attributes of its table (``adapter.models.directory``),
under the same names, and a child's record its lists (``names``, ``carers``, ``involvements``,
``local_identifiers``) and ``managing_organisation``, so that the mapping engine
(``adapter.mapping.engine``, which reads attributes from the instance dict) and the disclosure
policy (``adapter.security.policy.disclosure``) read them as they read the ORM records. They are
plain objects, never added to a session: nothing is written, nothing loads lazily. The ORM
records stay for writes and for earlier versions (``adapter.store.history``). ``ChildEntry``
names what the policy and the delivery ledger read of an entry loaded either way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Final, Protocol

from sqlalchemy import inspect

from adapter.models.directory import (
    Carer,
    Child,
    ChildName,
    Involvement,
    LocalIdentifier,
    Organisation,
)


def columns_of(cls: type) -> tuple[str, ...]:
    """Return the column attribute names of a mapped class, its primary key ``id`` first
    (``adapter.store.rows`` tells a row of an outer join that found nothing by it)."""
    attributes: Any = inspect(cls).column_attrs
    names = [attribute.key for attribute in attributes]
    return ("id", *(name for name in names if name != "id"))


class Row:
    """A row of one table as a plain object: each column an attribute in the instance dict."""

    COLUMNS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, values: Iterable[tuple[str, Any]]) -> None:
        self.__dict__.update(values)

    def only(self, kept: Iterable[str]) -> Any:
        """Return a copy holding the ``kept`` columns, every other column None (as a
        transient ORM record holds them)."""
        copy = type(self)((name, None) for name in self.COLUMNS)
        for name in kept:
            copy.__dict__[name] = self.__dict__[name]
        return copy


class OrganisationRow(Row):
    """An organisation (``Organisation``): a managing authority, a GP practice, the allocator
    of a local identifier."""

    COLUMNS: ClassVar[tuple[str, ...]] = columns_of(Organisation)
    id: int
    resource_id: str
    name: str
    ods_code: str | None
    urn: str | None
    gss_code: str | None


class NameRow(Row):
    """One of a child's names (``ChildName``)."""

    COLUMNS: ClassVar[tuple[str, ...]] = columns_of(ChildName)
    id: int
    position: int


class CarerRow(Row):
    """A parent or carer (``Carer``)."""

    COLUMNS: ClassVar[tuple[str, ...]] = columns_of(Carer)
    id: int
    position: int
    given: list[str]


class InvolvementRow(Row):
    """A practitioner or service working with the child (``Involvement``), with its
    organisation (``organisation``); its practitioner, which a Patient does not show, is not
    read."""

    COLUMNS: ClassVar[tuple[str, ...]] = columns_of(Involvement)
    id: int
    position: int
    role: str
    sensitive: bool
    organisation: OrganisationRow


class LocalIdentifierRow(Row):
    """A local identifier (``LocalIdentifier``) with its allocating organisation."""

    COLUMNS: ClassVar[tuple[str, ...]] = columns_of(LocalIdentifier)
    id: int
    value: str
    organisation: OrganisationRow


class ChildRow(Row):
    """A child's entry (``Child``) with its managing organisation and its lists, each in the
    order of the ORM relationship (names, carers and involvements by position, local
    identifiers by id)."""

    COLUMNS: ClassVar[tuple[str, ...]] = columns_of(Child)
    LISTS: Final = ("names", "carers", "involvements", "local_identifiers")
    id: int
    resource_id: str
    version: int
    last_updated: dt.datetime
    record_status: str
    shielded: bool
    managing_organisation: OrganisationRow
    names: list[NameRow]
    carers: list[CarerRow]
    involvements: list[InvolvementRow]
    local_identifiers: list[LocalIdentifierRow]

    def only(self, kept: Iterable[str]) -> Any:
        """Return a copy holding the ``kept`` columns and no list items."""
        copy = super().only(kept)
        for name in self.LISTS:
            copy.__dict__[name] = []
        copy.managing_organisation = self.managing_organisation
        return copy

    def with_lists(self, **lists: list[Any]) -> ChildRow:
        """Return a copy sharing every column and list, but the ``lists`` given."""
        copy = ChildRow(self.__dict__.items())
        copy.__dict__.update(lists)
        return copy


class ChildEntry(Protocol):
    """A child's entry as the disclosure policy (``may_see_entry``, ``may_see_child``, the
    earlier-version check of ``disclose_child``) and the delivery ledger
    (``adapter.security.ledger.record_delivery``) read it: an ORM ``Child`` or a ``ChildRow``
    alike. Read-only: a reader that makes a copy takes the concrete record types instead
    (``disclose_child``)."""

    @property
    def resource_id(self) -> str:
        """The entry's FHIR id."""

    @property
    def record_status(self) -> str:
        """``live`` or ``archived`` (docs/domain.md "Retention")."""

    @property
    def shielded(self) -> bool:
        """Whether the child is shielded (docs/domain.md "Shielding")."""

    @property
    def involvements(self) -> Sequence[Involvement | InvolvementRow]:
        """The practitioners and services working with the child."""
