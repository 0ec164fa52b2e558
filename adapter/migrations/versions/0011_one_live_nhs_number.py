"""one live entry per NHS number: a partial unique index on the live entries' NHS number

An NHS number identifies one person (NHS Data Dictionary, "NHS Number"), and the directory
keeps one entry per child (docs/domain.md "The directory entry"), so two live entries never
share an NHS number. The services refuse such a write with a 409 naming the existing entry;
this index makes the database refuse it too, so that two concurrent creates cannot both win.
Archived entries are left out: an archived entry is no longer the child's entry
(docs/domain.md "Retention").

A database that already holds live entries sharing an NHS number (written before the rule)
cannot take the index: the upgrade stops and says how many numbers are shared, without naming
them; resolve them (archive or correct the duplicates) and upgrade again.

Revision ID: 0011_live_nhs
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_live_nhs"
down_revision = "0010"
branch_labels = None
depends_on = None

LIVE: str = "record_status = 'live'"
SHARED = ("SELECT count(*) FROM (SELECT nhs_number FROM child WHERE record_status = 'live' "
          "AND nhs_number IS NOT NULL GROUP BY nhs_number HAVING count(*) > 1) AS shared")


def upgrade() -> None:
    """Apply this revision.

    :raises RuntimeError: live entries already share an NHS number.
    """
    shared = op.get_bind().execute(sa.text(SHARED)).scalar() or 0
    if shared:
        raise RuntimeError(
            f"{shared} NHS number(s) are held by more than one live directory entry; the "
            "index uq_child_live_nhs_number needs one live entry per NHS number. Find them "
            "by grouping the live rows of the child table by nhs_number; archive or correct "
            "the duplicates, then upgrade again.")
    op.create_index("uq_child_live_nhs_number", "child", ["nhs_number"], unique=True,
                    postgresql_where=sa.text(LIVE), sqlite_where=sa.text(LIVE))


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("uq_child_live_nhs_number", table_name="child")
