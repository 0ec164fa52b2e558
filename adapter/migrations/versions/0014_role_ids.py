"""role ids: every PractitionerRole id from its natural key; earlier ids kept as aliases

An involvement's PractitionerRole id is the UUIDv5 of the child's ContactPoint ID and the
involvement's natural key (role, organisation code, practitioner, start date), an eCAF team
member's that of the assessment id and the member's natural key (adapter/identity.py). The demo
data gave both ids by list position instead, so its rows published ids that a FHIR write or an
import of the same record would not give. This revision recomputes every stored involvement's
and team member's id with the natural-key rule and, where the id changes, keeps the old one in
``resource_alias``: a read of it answers 301 Moved Permanently to the new id (README
"Identifiers"). Audit records and role tombstones keep the ids they were written with: they are
the history of what was answered then.

Revision ID: 0014_role_ids
Revises: 0013_bulk
Create Date: 2026-12-07
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from adapter.identifiers import RESOURCE_NAMESPACE

revision = "0014_role_ids"
down_revision = "0013_bulk"
branch_labels = None
depends_on = None

BATCH = 5000
ROLE = "PractitionerRole"
# National identifier systems in the order their first names a practitioner without a staff id
# (adapter/systems.py PRACTITIONER_SYSTEMS, fixed at this revision).
NATIONAL_ORDER = ("https://fhir.hl7.org.uk/Id/gmc-number", "https://fhir.hl7.org.uk/Id/gmp-number",
                  "https://fhir.hl7.org.uk/Id/nmc-number", "https://fhir.hl7.org.uk/Id/hcpc-number",
                  "https://fhir.hl7.org.uk/Id/gphc-number", "https://fhir.nhs.uk/Id/sds-user-id")

ORG = sa.table("organisation", sa.column("id", sa.Integer), sa.column("ods_code", sa.String),
               sa.column("urn", sa.String), sa.column("gss_code", sa.String))
PERSON = sa.table("practitioner", sa.column("id", sa.Integer), sa.column("local_id", sa.String))
NATIONAL = sa.table("practitioner_identifier", sa.column("practitioner_id", sa.Integer),
                    sa.column("system", sa.String), sa.column("value", sa.String))
CHILD = sa.table("child", sa.column("id", sa.Integer), sa.column("contactpoint_id", sa.String))
ASSESSMENT = sa.table("assessment", sa.column("id", sa.Integer),
                      sa.column("assessment_id", sa.String))
INVOLVEMENT = sa.table("involvement", sa.column("id", sa.Integer),
                       sa.column("resource_id", sa.String), sa.column("child_id", sa.Integer),
                       sa.column("role", sa.String), sa.column("organisation_id", sa.Integer),
                       sa.column("practitioner_id", sa.Integer),
                       sa.column("period_start", sa.Date))
MEMBER = sa.table("team_member", sa.column("id", sa.Integer),
                  sa.column("resource_id", sa.String), sa.column("assessment_id", sa.Integer),
                  sa.column("role", sa.String), sa.column("organisation_id", sa.Integer),
                  sa.column("practitioner_id", sa.Integer))
ALIAS = sa.table("resource_alias", sa.column("resource_type", sa.String),
                 sa.column("old_id", sa.String), sa.column("new_id", sa.String))


def _role_id(key: str) -> str:
    """Return the PractitionerRole id of a natural key (adapter.identity, fixed here)."""
    return str(uuid.uuid5(RESOURCE_NAMESPACE, f"{ROLE}/{key}"))


def _person(local_id: str | None, national: list[tuple[str, str]]) -> str:
    """Return what names a practitioner in a key: the staff id, else its first national
    identifier as ``system|value`` ("" for none)."""
    if local_id:
        return local_id
    ranked = sorted(national, key=lambda pair: (NATIONAL_ORDER.index(pair[0]), pair[1]))
    return "|".join(ranked[0]) if ranked else ""


def _national_ids(connection: sa.Connection, ids: set[int]) -> dict[int, list[tuple[str, str]]]:
    """Return the national identifiers of the practitioners ``ids`` (those without a staff id
    are named by them)."""
    found: dict[int, list[tuple[str, str]]] = {}
    if ids:
        for person, system, value in connection.execute(
                sa.select(NATIONAL.c.practitioner_id, NATIONAL.c.system, NATIONAL.c.value)
                .where(NATIONAL.c.practitioner_id.in_(sorted(ids)))):
            found.setdefault(person, []).append((system, value))
    return found


def _batches(connection: sa.Connection, parts: Any, owner: Any,
             owner_key: Any) -> Iterator[Sequence[Any]]:
    """Yield the rows of ``parts`` (involvements or team members) in batches (keyset on id),
    each with its owner's key, its organisation's codes and its practitioner's staff id."""
    start = parts.c.period_start if "period_start" in parts.c else sa.null()
    owner_fk = parts.c.child_id if "child_id" in parts.c else parts.c.assessment_id
    query = (sa.select(parts.c.id, parts.c.resource_id, owner_key, parts.c.role,
                       ORG.c.ods_code, ORG.c.urn, ORG.c.gss_code, parts.c.practitioner_id,
                       PERSON.c.local_id, start)
             .join(owner, owner.c.id == owner_fk)
             .join(ORG, ORG.c.id == parts.c.organisation_id)
             .outerjoin(PERSON, PERSON.c.id == parts.c.practitioner_id)
             .order_by(parts.c.id).limit(BATCH))
    last = 0
    while batch := connection.execute(query.where(parts.c.id > last)).all():
        yield batch
        last = batch[-1][0]


def _rekey(table: Any, owner: Any, owner_key: Any, prefix: str) -> int:
    """Give every row of ``table`` the id of its natural key; alias the ids that change.

    :returns: how many ids changed.
    """
    connection = op.get_bind()
    changed = 0
    for batch in _batches(connection, table, owner, owner_key):
        national = _national_ids(connection, {row[7] for row in batch
                                              if row[7] is not None and not row[8]})
        moves = []
        for row_id, old_id, key_of_owner, role, ods, urn, gss, person_id, local_id, start \
                in batch:
            person = _person(local_id, national.get(person_id, [])) if person_id else ""
            begun = start.isoformat() if isinstance(start, dt.date) else (start or "")
            new_id = _role_id(f"{prefix}{key_of_owner}/{role}/{ods or urn or gss}/{person}/"
                              f"{begun}")
            if new_id != old_id:
                moves.append({"row_id": row_id, "old_id": old_id, "new_id": new_id})
        if moves:
            connection.execute(table.update().where(table.c.id == sa.bindparam("row_id"))
                               .values(resource_id=sa.bindparam("new_id")), moves)
            connection.execute(ALIAS.insert(), [
                {"resource_type": ROLE, "old_id": move["old_id"], "new_id": move["new_id"]}
                for move in moves])
            changed += len(moves)
    return changed


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "resource_alias",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("old_id", sa.String(length=64), nullable=False),
        sa.Column("new_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_alias")),
        sa.UniqueConstraint("resource_type", "old_id",
                            name=op.f("uq_resource_alias_resource_type_old_id")),
    )
    _rekey(INVOLVEMENT, CHILD, CHILD.c.contactpoint_id, "")
    _rekey(MEMBER, ASSESSMENT, ASSESSMENT.c.assessment_id, "ecaf/")


def downgrade() -> None:
    """Revert this revision: the aliased rows get their old ids back (an alias whose row is
    gone is dropped with the table)."""
    connection = op.get_bind()
    aliases = connection.execute(sa.select(ALIAS.c.old_id, ALIAS.c.new_id)
                                 .where(ALIAS.c.resource_type == ROLE)).all()
    if aliases:
        for table in (INVOLVEMENT, MEMBER):
            connection.execute(table.update().where(table.c.resource_id == sa.bindparam("new"))
                               .values(resource_id=sa.bindparam("old")),
                               [{"old": old_id, "new": new_id} for old_id, new_id in aliases])
    op.drop_table("resource_alias")
