"""family name walk: an index ordered by a family name's first letters, then child id

A search page of Patients is keyset-paged in child id order (adapter/fhir/providers/patient.py).
For a family-name prefix of three letters or more (FHIR R4 search.html#string: starts with),
``ix_child_name_family_walk`` holds each name under its first three normalised letters, in child
id order within them: the page is a range of the index read in id order, stopping after the
page, where the indexes of migration 0010 return the matches in name order, every one read
before the page's children (docs/scale.md "Search"). ``adapter/store/prefix.py``
``first_letters`` writes the expression exactly as here, so that both databases match it to the
index. ``family_norm`` last: a longer prefix is checked in the index itself.

Then ``ANALYZE`` of the table, so that the planners choose the new index at once.

Revision ID: 0016_family_name_walk
Revises: 0015_search_indexes
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op


revision = "0016_family_name_walk"
down_revision = "0015_search_indexes"
branch_labels = None
depends_on = None

FIRST_LETTERS = "substr(family_norm, 1, 3)"


def upgrade() -> None:
    """Apply this revision."""
    op.execute(f"CREATE INDEX ix_child_name_family_walk ON child_name "
               f"(({FIRST_LETTERS}), child_id, family_norm)")
    op.execute("ANALYZE child_name")


def downgrade() -> None:
    """Revert this revision."""
    op.execute("DROP INDEX ix_child_name_family_walk")
