"""search indexes: a given name's later words, and fresh statistics for the planner

A FHIR string search on ``given`` matches any given name (FHIR R4 search.html#string), and a
child's given names are kept as one normalised value, words a space apart
(``child_name.given_norm``): the first word is found by ``ix_child_name_given_prefix``
(migration 0010), the second by the expression index ``ix_child_name_given_rest`` (the value
from its second word on) and any later one from the partial index ``ix_child_name_given_many``
of the values of three words or more, a few names only. ``adapter/store/prefix.py`` writes the
expression and the predicate exactly as here, so that both databases match them to the indexes.
PostgreSQL serves ``LIKE 'x%'`` from the expression only with ``text_pattern_ops`` under the
databases' non-C collation (postgresql.org/docs/current/indexes-opclass.html).

Then ``ANALYZE`` of the searched tables: without statistics SQLite's planner guesses, and
PostgreSQL's plans a freshly loaded table from stale ones.

Revision ID: 0015_search_indexes
Revises: 0013_bulk
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op


revision = "0015_search_indexes"
down_revision = "0014_role_ids"
branch_labels = None
depends_on = None

REST = {"postgresql": "substr(given_norm, strpos(given_norm, ' ') + 1)",
        "sqlite": "substr(given_norm, instr(given_norm, ' ') + 1)"}
THREE_WORDS = "given_norm LIKE '% % %'"


def upgrade() -> None:
    """Apply this revision."""
    dialect = op.get_bind().dialect.name
    postgresql = dialect == "postgresql"
    opclass = " text_pattern_ops" if postgresql else ""
    op.execute(f"CREATE INDEX ix_child_name_given_rest ON child_name (({REST[dialect]}){opclass})")
    op.execute(f"CREATE INDEX ix_child_name_given_many ON child_name (given_norm{opclass}) "
               f"WHERE {THREE_WORDS}")
    # By name: on PostgreSQL a bare ANALYZE visits every schema of the database; SQLite's
    # takes one table at a time.
    if postgresql:
        op.execute("ANALYZE child, child_name")
    else:
        op.execute("ANALYZE child")
        op.execute("ANALYZE child_name")


def downgrade() -> None:
    """Revert this revision."""
    op.execute("DROP INDEX ix_child_name_given_many")
    op.execute("DROP INDEX ix_child_name_given_rest")
