"""prefix search indexes: name and postcode prefix searches use an index on both databases

FHIR string search matches the start of a value (FHIR R4 search.html#string). PostgreSQL uses a
b-tree for ``LIKE 'x%'`` only under the C collation or with a ``text_pattern_ops`` index
(postgresql.org/docs/current/indexes-opclass.html); the databases here run under C.UTF-8, so
the plain indexes were never used and the searches scanned the tables. SQLite answers the same
searches with ``GLOB 'x*'`` on a BINARY index (sqlite.org/optoverview.html#the_like_optimization);
the postcode search compares the postcode without spaces, so it gets an expression index.

Revision ID: 0010
Revises: 0009_decom
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op


revision = "0010"
down_revision = "0009_decom"
branch_labels = None
depends_on = None

POSTCODE = "replace(address_postcode, ' ', '')"


def upgrade() -> None:
    """Apply this revision."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("CREATE INDEX ix_child_name_family_prefix ON child_name "
                   "(family_norm text_pattern_ops)")
        op.execute("CREATE INDEX ix_child_name_given_prefix ON child_name "
                   "(given_norm text_pattern_ops)")
        op.execute(f"CREATE INDEX ix_child_postcode_prefix ON child ({POSTCODE} text_pattern_ops)")
    else:
        op.execute("CREATE INDEX ix_child_name_given_prefix ON child_name (given_norm)")
        op.execute(f"CREATE INDEX ix_child_postcode_prefix ON child ({POSTCODE})")
    # Fresh statistics of the two tables, so that the planner chooses the new indexes at once
    # (on PostgreSQL by name: a bare ANALYZE visits every schema of the database).
    op.execute("ANALYZE child, child_name" if postgresql else "ANALYZE")


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_child_name_family_prefix")
    op.execute("DROP INDEX ix_child_name_given_prefix")
    op.execute("DROP INDEX ix_child_postcode_prefix")
