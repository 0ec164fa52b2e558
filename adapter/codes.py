"""Canonical code vocabularies of the directory, shared by the model, validators and mappings.

Each vocabulary cites its source. The database enforces them with CHECK constraints
(see ``adapter.models``); the mappings translate them with ConceptMaps in ``mappings/conceptmaps``.
"""

from __future__ import annotations

from typing import Final

# NHS Data Model and Dictionary, "Person Stated Gender Code"
# (https://fhir.hl7.org.uk/CodeSystem/NHSDataModelAndDictionary-PersonStatedGenderCode):
# 1 male, 2 female, 9 indeterminate ("not specified" in the 2007 Regulations), X not known.
GENDERS: Final = ("1", "2", "9", "X")

# Name uses: the Regulations keep current and former names (Schedule 1, para 1(a)).
NAME_USES: Final = ("current", "former")

# The one address of a child, or the statement that replaces it (Regulations, Schedule 1 1(d)).
ADDRESS_STATUSES: Final = (
    "current",
    "last-known",
    "none-known",
    "left-england-returning",
    "left-england-not-returning",
    "left-england-intention-unknown",
)
# Statuses that carry an address (the others are statements instead of one).
ADDRESS_STATUSES_WITH_ADDRESS: Final = ("current", "last-known")

# NHS number verification status, England
# (https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland).
NHS_NUMBER_STATUSES: Final = ("01", "02", "03", "04", "05", "06", "07", "08")

RECORD_STATUSES: Final = ("live", "archived")

# Retention past 18 (Regulations, reg. 13): to 25 with consent for care leavers and young
# people with learning difficulties.
EXTENDED_RETENTION_REASONS: Final = ("care-leaver", "learning-difficulty")

# Relationship of a parent or carer to the child.
CARER_RELATIONSHIPS: Final = (
    "mother",
    "father",
    "step-mother",
    "step-father",
    "adoptive-parent",
    "foster-carer",
    "grandparent",
    "special-guardian",
    "guardian",
    "sibling",
    "other-relative",
    "local-authority",
    "other",
)

ORGANISATION_TYPES: Final = (
    "local-authority",
    "gp-practice",
    "school",
    "nursery",
    "college",
    "nhs-trust",
    "social-care",
    "youth-justice",
    "voluntary",
    "other",
)

# Roles of a practitioner or service working with a child (Regulations, Schedule 1 1(f)-(h)).
INVOLVEMENT_ROLES: Final = (
    "education",
    "gp",
    "health-visitor",
    "school-nurse",
    "social-worker",
    "youth-offending",
    "connexions",
    "education-welfare",
    "early-help",
    "camhs",
    "sexual-health",
    "substance-misuse",
    "other",
)
# Sensitive services (docs/domain.md "Sensitive services"): sexual health, mental health, substance
# misuse. Their involvements may be recorded only with consent or on suspicion of significant harm.
SENSITIVE_ROLES: Final = ("camhs", "sexual-health", "substance-misuse")

# Grounds on which a sensitive-service involvement may be recorded (docs/domain.md).
CONSENT_BASES: Final = ("child-consent", "carer-consent", "significant-harm")

# eCAF assessment reference status (docs/domain.md "eCAF assessment references").
ASSESSMENT_STATUSES: Final = ("draft", "in-progress", "completed", "closed")

# Roles in an eCAF Team Around the Child besides the lead professional.
TEAM_ROLES: Final = ("lead-professional", "member")


def sql_in(column: str, values: tuple[str, ...]) -> str:
    """Return a SQL CHECK expression restricting ``column`` to ``values``."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"
