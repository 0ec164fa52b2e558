"""directory

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    
    op.create_table(
        "organisation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=30), nullable=False),
        sa.Column("ods_code", sa.String(length=6), nullable=True),
        sa.Column("urn", sa.String(length=6), nullable=True),
        sa.Column("gss_code", sa.String(length=9), nullable=True),
        sa.Column("la_number", sa.String(length=3), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("address_saon", sa.String(length=100), nullable=True),
        sa.Column("address_paon", sa.String(length=100), nullable=True),
        sa.Column("address_street", sa.String(length=100), nullable=True),
        sa.Column("address_locality", sa.String(length=100), nullable=True),
        sa.Column("address_town", sa.String(length=100), nullable=True),
        sa.Column("address_postcode", sa.String(length=8), nullable=True),
        sa.Column("address_uprn", sa.String(length=12), nullable=True),
        sa.Column("phone", sa.String(length=35), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.CheckConstraint(
            "type <> 'local-authority' OR gss_code IS NOT NULL",
            name=op.f("ck_organisation_la_has_gss"),
        ),
        sa.CheckConstraint(
            "type IN ('local-authority', 'gp-practice', 'school', 'nursery', 'college', 'nhs-trust', 'social-care', 'youth-justice', 'voluntary', 'other')",
            name=op.f("ck_organisation_type"),
        ),
        sa.CheckConstraint(
            "ods_code IS NOT NULL OR urn IS NOT NULL OR gss_code IS NOT NULL",
            name=op.f("ck_organisation_has_code"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisation")),
        sa.UniqueConstraint("gss_code", name=op.f("uq_organisation_gss_code")),
        sa.UniqueConstraint("ods_code", name=op.f("uq_organisation_ods_code")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_organisation_resource_id")),
        sa.UniqueConstraint("urn", name=op.f("uq_organisation_urn")),
    )
    op.create_table(
        "child",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("contactpoint_id", sa.String(length=11), nullable=False),
        sa.Column("nhs_number", sa.String(length=10), nullable=True),
        sa.Column("nhs_number_status", sa.String(length=2), nullable=True),
        sa.Column("upn", sa.String(length=13), nullable=True),
        sa.Column("gender", sa.String(length=1), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("death_date", sa.Date(), nullable=True),
        sa.Column("address_status", sa.String(length=40), nullable=False),
        sa.Column("address_start", sa.Date(), nullable=True),
        sa.Column("address_end", sa.Date(), nullable=True),
        sa.Column("shielded", sa.Boolean(), nullable=False),
        sa.Column("record_status", sa.String(length=10), nullable=False),
        sa.Column("extended_retention", sa.String(length=30), nullable=True),
        sa.Column("retention_date", sa.Date(), nullable=False),
        sa.Column("managing_organisation_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("address_saon", sa.String(length=100), nullable=True),
        sa.Column("address_paon", sa.String(length=100), nullable=True),
        sa.Column("address_street", sa.String(length=100), nullable=True),
        sa.Column("address_locality", sa.String(length=100), nullable=True),
        sa.Column("address_town", sa.String(length=100), nullable=True),
        sa.Column("address_postcode", sa.String(length=8), nullable=True),
        sa.Column("address_uprn", sa.String(length=12), nullable=True),
        sa.CheckConstraint(
            "address_status IN ('current', 'last-known') OR (address_postcode IS NULL AND address_paon IS NULL AND address_street IS NULL AND address_town IS NULL)",
            name=op.f("ck_child_statement_has_no_address"),
        ),
        sa.CheckConstraint(
            "address_status IN ('current', 'last-known', 'none-known', 'left-england-returning', 'left-england-not-returning', 'left-england-intention-unknown')",
            name=op.f("ck_child_address_status"),
        ),
        sa.CheckConstraint(
            "extended_retention IS NULL OR extended_retention IN ('care-leaver', 'learning-difficulty')",
            name=op.f("ck_child_extended_retention"),
        ),
        sa.CheckConstraint("gender IN ('1', '2', '9', 'X')", name=op.f("ck_child_gender")),
        sa.CheckConstraint(
            "nhs_number_status IS NULL OR nhs_number_status IN ('01', '02', '03', '04', '05', '06', '07', '08')",
            name=op.f("ck_child_nhs_number_status"),
        ),
        sa.CheckConstraint(
            "record_status IN ('live', 'archived')", name=op.f("ck_child_record_status")
        ),
        sa.CheckConstraint(
            "death_date IS NULL OR death_date >= birth_date",
            name=op.f("ck_child_death_after_birth"),
        ),
        sa.CheckConstraint(
            "nhs_number_status IS NULL OR nhs_number IS NOT NULL",
            name=op.f("ck_child_nhs_status_needs_number"),
        ),
        sa.CheckConstraint(
            "address_end IS NULL OR address_start IS NULL OR address_end >= address_start",
            name=op.f("ck_child_address_period_order"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_child_version_positive")),
        sa.ForeignKeyConstraint(
            ["managing_organisation_id"],
            ["organisation.id"],
            name=op.f("fk_child_managing_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_child")),
        sa.UniqueConstraint("contactpoint_id", name=op.f("uq_child_contactpoint_id")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_child_resource_id")),
    )
    with op.batch_alter_table("child", schema=None) as batch_op:
        batch_op.create_index("ix_child_birth_date", ["birth_date"], unique=False)
        batch_op.create_index(batch_op.f("ix_child_last_updated"), ["last_updated"], unique=False)
        batch_op.create_index(
            "ix_child_managing_org_updated",
            ["managing_organisation_id", "last_updated", "id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_child_nhs_number"), ["nhs_number"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_child_retention_date"), ["retention_date"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_child_upn"), ["upn"], unique=False)

    op.create_table(
        "practitioner",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("local_id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("title", sa.String(length=35), nullable=True),
        sa.Column("given", sa.JSON(), nullable=False),
        sa.Column("family", sa.String(length=35), nullable=False),
        sa.Column("phone", sa.String(length=35), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_practitioner_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_practitioner")),
        sa.UniqueConstraint(
            "organisation_id", "local_id", name=op.f("uq_practitioner_organisation_id_local_id")
        ),
        sa.UniqueConstraint("resource_id", name=op.f("uq_practitioner_resource_id")),
    )
    with op.batch_alter_table("practitioner", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_practitioner_organisation_id"), ["organisation_id"], unique=False
        )

    op.create_table(
        "assessment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("assessment_id", sa.String(length=64), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("started_date", sa.Date(), nullable=True),
        sa.Column("completed_date", sa.Date(), nullable=True),
        sa.Column("closed_date", sa.Date(), nullable=True),
        sa.Column("lead_practitioner_id", sa.Integer(), nullable=True),
        sa.Column("lead_organisation_id", sa.Integer(), nullable=False),
        sa.Column("consent_to_share", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("phone", sa.String(length=35), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.CheckConstraint(
            "status <> 'closed' OR closed_date IS NOT NULL",
            name=op.f("ck_assessment_closed_has_date"),
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'in-progress', 'completed', 'closed')",
            name=op.f("ck_assessment_status"),
        ),
        sa.CheckConstraint(
            "status NOT IN ('completed', 'closed') OR completed_date IS NOT NULL OR status = 'closed'",
            name=op.f("ck_assessment_completed_has_date"),
        ),
        sa.CheckConstraint(
            "closed_date IS NULL OR started_date IS NULL OR closed_date >= started_date",
            name=op.f("ck_assessment_closed_after_start"),
        ),
        sa.CheckConstraint(
            "completed_date IS NULL OR started_date IS NULL OR completed_date >= started_date",
            name=op.f("ck_assessment_completed_after_start"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_assessment_version_positive")),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["child.id"],
            name=op.f("fk_assessment_child_id_child"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["lead_organisation_id"],
            ["organisation.id"],
            name=op.f("fk_assessment_lead_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["lead_practitioner_id"],
            ["practitioner.id"],
            name=op.f("fk_assessment_lead_practitioner_id_practitioner"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assessment")),
        sa.UniqueConstraint("assessment_id", name=op.f("uq_assessment_assessment_id")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_assessment_resource_id")),
    )
    with op.batch_alter_table("assessment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_assessment_child_id"), ["child_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_assessment_last_updated"), ["last_updated"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_assessment_lead_organisation_id"), ["lead_organisation_id"], unique=False
        )

    op.create_table(
        "carer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("relation", sa.String(length=30), nullable=False),
        sa.Column("parental_responsibility", sa.Boolean(), nullable=False),
        sa.Column("title", sa.String(length=35), nullable=True),
        sa.Column("given", sa.JSON(), nullable=False),
        sa.Column("family", sa.String(length=35), nullable=False),
        sa.Column("phone", sa.String(length=35), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("address_saon", sa.String(length=100), nullable=True),
        sa.Column("address_paon", sa.String(length=100), nullable=True),
        sa.Column("address_street", sa.String(length=100), nullable=True),
        sa.Column("address_locality", sa.String(length=100), nullable=True),
        sa.Column("address_town", sa.String(length=100), nullable=True),
        sa.Column("address_postcode", sa.String(length=8), nullable=True),
        sa.Column("address_uprn", sa.String(length=12), nullable=True),
        sa.CheckConstraint(
            "relation IN ('mother', 'father', 'step-mother', 'step-father', 'adoptive-parent', 'foster-carer', 'grandparent', 'special-guardian', 'guardian', 'sibling', 'other-relative', 'local-authority', 'other')",
            name=op.f("ck_carer_relation"),
        ),
        sa.ForeignKeyConstraint(
            ["child_id"], ["child.id"], name=op.f("fk_carer_child_id_child"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_carer")),
        sa.UniqueConstraint("child_id", "position", name=op.f("uq_carer_child_id_position")),
    )
    with op.batch_alter_table("carer", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_carer_child_id"), ["child_id"], unique=False)

    op.create_table(
        "child_name",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("use", sa.String(length=10), nullable=False),
        sa.Column("family_norm", sa.String(length=35), nullable=False),
        sa.Column("given_norm", sa.String(length=200), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=True),
        sa.Column("period_end", sa.Date(), nullable=True),
        sa.Column("title", sa.String(length=35), nullable=True),
        sa.Column("given", sa.JSON(), nullable=False),
        sa.Column("family", sa.String(length=35), nullable=False),
        sa.CheckConstraint("use IN ('current', 'former')", name=op.f("ck_child_name_use")),
        sa.CheckConstraint(
            "period_end IS NULL OR period_start IS NULL OR period_end >= period_start",
            name=op.f("ck_child_name_period_order"),
        ),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["child.id"],
            name=op.f("fk_child_name_child_id_child"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_child_name")),
        sa.UniqueConstraint("child_id", "position", name=op.f("uq_child_name_child_id_position")),
    )
    with op.batch_alter_table("child_name", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_child_name_child_id"), ["child_id"], unique=False)
        batch_op.create_index("ix_child_name_family_norm", ["family_norm"], unique=False)

    op.create_table(
        "involvement",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=30), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("practitioner_id", sa.Integer(), nullable=True),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("consent_basis", sa.String(length=20), nullable=True),
        sa.Column("lead_professional", sa.Boolean(), nullable=False),
        sa.Column("caf_completed", sa.Boolean(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=True),
        sa.Column("period_end", sa.Date(), nullable=True),
        sa.Column("phone", sa.String(length=35), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.CheckConstraint(
            "consent_basis IS NULL OR consent_basis IN ('child-consent', 'carer-consent', 'significant-harm')",
            name=op.f("ck_involvement_consent_basis"),
        ),
        sa.CheckConstraint(
            "role IN ('education', 'gp', 'health-visitor', 'school-nurse', 'social-worker', 'youth-offending', 'connexions', 'education-welfare', 'early-help', 'camhs', 'sexual-health', 'substance-misuse', 'other')",
            name=op.f("ck_involvement_role"),
        ),
        sa.CheckConstraint(
            "sensitive OR NOT role IN ('camhs', 'sexual-health', 'substance-misuse')",
            name=op.f("ck_involvement_sensitive_role_flagged"),
        ),
        sa.CheckConstraint(
            "NOT sensitive OR consent_basis IS NOT NULL",
            name=op.f("ck_involvement_sensitive_needs_basis"),
        ),
        sa.CheckConstraint(
            "period_end IS NULL OR period_start IS NULL OR period_end >= period_start",
            name=op.f("ck_involvement_period_order"),
        ),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["child.id"],
            name=op.f("fk_involvement_child_id_child"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_involvement_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["practitioner_id"],
            ["practitioner.id"],
            name=op.f("fk_involvement_practitioner_id_practitioner"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_involvement")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_involvement_resource_id")),
    )
    with op.batch_alter_table("involvement", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_involvement_child_id"), ["child_id"], unique=False)
        batch_op.create_index("ix_involvement_organisation", ["organisation_id"], unique=False)
        batch_op.create_index("ix_involvement_practitioner", ["practitioner_id"], unique=False)

    op.create_table(
        "local_identifier",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["child.id"],
            name=op.f("fk_local_identifier_child_id_child"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_local_identifier_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_identifier")),
        sa.UniqueConstraint(
            "organisation_id", "value", name=op.f("uq_local_identifier_organisation_id_value")
        ),
    )
    with op.batch_alter_table("local_identifier", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_local_identifier_child_id"), ["child_id"], unique=False
        )

    op.create_table(
        "team_member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("assessment_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=30), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("practitioner_id", sa.Integer(), nullable=True),
        sa.Column("phone", sa.String(length=35), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.CheckConstraint(
            "role IN ('education', 'gp', 'health-visitor', 'school-nurse', 'social-worker', 'youth-offending', 'connexions', 'education-welfare', 'early-help', 'camhs', 'sexual-health', 'substance-misuse', 'other')",
            name=op.f("ck_team_member_role"),
        ),
        sa.ForeignKeyConstraint(
            ["assessment_id"],
            ["assessment.id"],
            name=op.f("fk_team_member_assessment_id_assessment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_team_member_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["practitioner_id"],
            ["practitioner.id"],
            name=op.f("fk_team_member_practitioner_id_practitioner"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_member")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_team_member_resource_id")),
    )
    with op.batch_alter_table("team_member", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_team_member_assessment_id"), ["assessment_id"], unique=False
        )

    


def downgrade() -> None:
    """Revert this revision."""
    
    with op.batch_alter_table("team_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_team_member_assessment_id"))

    op.drop_table("team_member")
    with op.batch_alter_table("local_identifier", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_local_identifier_child_id"))

    op.drop_table("local_identifier")
    with op.batch_alter_table("involvement", schema=None) as batch_op:
        batch_op.drop_index("ix_involvement_practitioner")
        batch_op.drop_index("ix_involvement_organisation")
        batch_op.drop_index(batch_op.f("ix_involvement_child_id"))

    op.drop_table("involvement")
    with op.batch_alter_table("child_name", schema=None) as batch_op:
        batch_op.drop_index("ix_child_name_family_norm")
        batch_op.drop_index(batch_op.f("ix_child_name_child_id"))

    op.drop_table("child_name")
    with op.batch_alter_table("carer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_carer_child_id"))

    op.drop_table("carer")
    with op.batch_alter_table("assessment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assessment_lead_organisation_id"))
        batch_op.drop_index(batch_op.f("ix_assessment_last_updated"))
        batch_op.drop_index(batch_op.f("ix_assessment_child_id"))

    op.drop_table("assessment")
    with op.batch_alter_table("practitioner", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_practitioner_organisation_id"))

    op.drop_table("practitioner")
    with op.batch_alter_table("child", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_child_upn"))
        batch_op.drop_index(batch_op.f("ix_child_retention_date"))
        batch_op.drop_index(batch_op.f("ix_child_nhs_number"))
        batch_op.drop_index("ix_child_managing_org_updated")
        batch_op.drop_index(batch_op.f("ix_child_last_updated"))
        batch_op.drop_index("ix_child_birth_date")

    op.drop_table("child")
    op.drop_table("organisation")
    
