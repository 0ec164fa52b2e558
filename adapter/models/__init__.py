"""The canonical model of the directory (docs/architecture.md "One canonical model")."""

from adapter.models.assessment import Assessment, TeamMember
from adapter.models.base import Base
from adapter.models.decommission import (
    DecommissionPlan,
    OperatorExport,
    PurgeTask,
    PurgeTaskItem,
)
from adapter.models.directory import (
    Carer,
    Child,
    ChildName,
    Involvement,
    LocalIdentifier,
    Organisation,
    Practitioner,
    PractitionerIdentifier,
)
from adapter.models.export import ExportJob
from adapter.models.history import RecordVersion, ResourceAlias
from adapter.models.notify import (
    DeliveryAttempt,
    Event,
    LedgerEntry,
    Notification,
    Subscription,
    SubscriptionLane,
    install_outbox,
)
from adapter.models.security import AuditRecord, Client, UsedAssertion
from adapter.models.versioning import install_versioning

install_versioning()
install_outbox()  # after versioning: it emits one event per owner that versioning stamped

__all__ = [
    "Assessment",
    "AuditRecord",
    "Client",
    "DeliveryAttempt",
    "Event",
    "LedgerEntry",
    "Notification",
    "Subscription",
    "SubscriptionLane",
    "Base",
    "Carer",
    "Child",
    "ChildName",
    "DecommissionPlan",
    "ExportJob",
    "Involvement",
    "LocalIdentifier",
    "Organisation",
    "Practitioner",
    "PractitionerIdentifier",
    "OperatorExport",
    "PurgeTask",
    "PurgeTaskItem",
    "RecordVersion",
    "ResourceAlias",
    "TeamMember",
    "UsedAssertion",
]
