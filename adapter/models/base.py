"""Declarative base, naming convention and the column groups shared by several tables."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, Final

from sqlalchemy import JSON, MetaData, String, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints so that Alembic migrations are portable between SQLite and PostgreSQL and
# a violated constraint names itself in the error (tests assert on these names).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Return the current time in UTC, aware."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Base class of every table of the canonical model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {list[str]: JSON}


class PersonNameColumns:
    """A person's name in the UK government data standard shape (title, given names, family)."""

    title: Mapped[str | None] = mapped_column(String(35))
    given: Mapped[list[str]] = mapped_column(JSON, default=list)
    family: Mapped[str] = mapped_column(String(35))


class AddressColumns:
    """A BS7666-style address: SAON, PAON, street, locality, town, postcode, UPRN."""

    address_saon: Mapped[str | None] = mapped_column(String(100))
    address_paon: Mapped[str | None] = mapped_column(String(100))
    address_street: Mapped[str | None] = mapped_column(String(100))
    address_locality: Mapped[str | None] = mapped_column(String(100))
    address_town: Mapped[str | None] = mapped_column(String(100))
    address_postcode: Mapped[str | None] = mapped_column(String(8))
    address_uprn: Mapped[str | None] = mapped_column(String(12))


class ContactColumns:
    """Contact details: a telephone number and an e-mail address."""

    phone: Mapped[str | None] = mapped_column(String(35))
    email: Mapped[str | None] = mapped_column(String(254))


# Columns that are bookkeeping, never data to compare or copy.
BOOKKEEPING: Final = frozenset({"id", "child_id", "assessment_id", "version", "last_updated",
                                "created", "organisation_id", "practitioner_id",
                                "managing_organisation_id", "lead_practitioner_id",
                                "lead_organisation_id", "careteam_id", "lead_role_id"})


@functools.lru_cache(maxsize=64)
def column_keys(cls: type, exclude: frozenset[str]) -> tuple[str, ...]:
    """Return the column attribute names of a mapped class, less ``exclude`` (cached)."""
    columns: Any = inspect(cls).columns
    return tuple(c.key for c in columns if c.key not in exclude)


def copy_columns(source: Base, target: Base, exclude: frozenset[str] = BOOKKEEPING) -> bool:
    """Copy every data column of ``source`` onto ``target``; return True if any differed."""
    changed = False
    for name in column_keys(type(target), exclude):
        value = getattr(source, name, None)
        if getattr(target, name) != value:
            setattr(target, name, value)
            changed = True
    return changed
