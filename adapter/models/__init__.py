"""The canonical model of the directory (ARCHITECTURE.md "One canonical model")."""

from adapter.models.assessment import Assessment, TeamMember
from adapter.models.base import Base
from adapter.models.directory import (
    Carer,
    Child,
    ChildName,
    Involvement,
    LocalIdentifier,
    Organisation,
    Practitioner,
)
from adapter.models.history import RecordVersion
from adapter.models.security import AuditRecord, Client, UsedAssertion
from adapter.models.versioning import install_versioning

install_versioning()

__all__ = [
    "Assessment",
    "AuditRecord",
    "Client",
    "Base",
    "Carer",
    "Child",
    "ChildName",
    "Involvement",
    "LocalIdentifier",
    "Organisation",
    "Practitioner",
    "RecordVersion",
    "TeamMember",
    "UsedAssertion",
]
