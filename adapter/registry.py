"""The single declaration of every FHIR resource type the gateway knows: one ``ResourceSpec``
per type, in one registry from which every list of types is derived (the REST providers and
their routes, the R4 XML types, the inbound models and reverse maps, the bulk export types, the
NDJSON import order, the types destruction pseudonymises, the operations' definitions).
Adding a resource type is a map (``mappings/``), a provider (``adapter/fhir/providers/``) and a
spec here.

Providers and reverse maps are named by ``module:attribute`` and imported when first asked
for, so that this module imports nothing of the gateway but the settings (of its own layer)
the providers are made with: the mapping, the XML codec and the
store may read it without an import cycle and without building the Flask app.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from adapter.settings import Settings

# FHIR Bulk Data Access IG v2 and the Subscriptions R5 Backport IG: their operations.
BULK_OPERATIONS: Final = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
BACKPORT_OPERATIONS: Final = \
    "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"
# An operation of the gateway's own, published at /fhir/OperationDefinition under the
# canonical base (adapter/fhir/capability.py resolves it).
OWN: Final = "own"
R4B: Final = "fhir.resources.R4B."


@dataclass(frozen=True)
class ResourceSpec:
    """What the gateway does with one FHIR resource type.

    ``provider``: a callable returning the type's REST provider (``ResourceHandler``) made with
    the settings (``Provider(settings)``: what it renders is under their canonical base), None
    when its routes are not the standard interactions (operations only, or routes of their own).
    ``maps``: the mapping files (``mappings/<name>.toml``) that render it. ``model``: the
    fhir.resources R4B model inbound resources are validated with (R4B and R4 have the same
    shape for these: docs/domain.md "Profiles to build on"). ``reverse``: the inbound map
    (``module:function``) whose errors and ignored paths validation reports. ``xml``: served and
    read as FHIR R4 XML (adapter/fhir/xml.py). ``r4``: a FHIR 4.0.1 type (a ``rest.resource`` of
    the CapabilityStatement). ``exportable``: written by bulk $export and NDJSON exports;
    ``child_data``: written per child (the rest: the directory's records the children's
    resources refer to). ``personal``: its ids are a child's or a person's (destruction
    pseudonymises their audit records). ``import_order``: its rank when NDJSON and Bundles are
    imported (each after what it refers to; None: not imported in a pass of its own).
    ``operations``: operation name -> canonical definition (``OWN``: the gateway's).
    ``documentation``: the CapabilityStatement's words for a type without a provider.
    ``export_source``: for an exportable type that is not a child's data, the ``module:name`` of
    its ``adapter.export.sources.ExportSource`` (the rows bulk $export reads, and how one is
    rendered)."""

    type: str
    # Any: the provider's type (adapter.fhir.handlers.ResourceHandler) is the FHIR dialect's,
    # a layer above this one (scripts/check_layers.py); adapter.fhir.api types what it returns.
    provider: Callable[[Settings], Any] | None = None
    maps: tuple[str, ...] = ()
    model: str | None = None
    reverse: str | None = None
    xml: bool = True
    r4: bool = True
    exportable: bool = False
    child_data: bool = False
    personal: bool = False
    import_order: int | None = None
    operations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    documentation: str | None = None
    export_source: str | None = None


def attribute(path: str) -> Any:
    """Return the attribute named ``module:name``, importing its module."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def lazy(path: str, *args: Any) -> Callable[[Settings], Any]:
    """Return a factory of a provider: it calls ``module:name`` (imported when first called)
    with ``args`` and the settings it is given."""
    def make(settings: Settings) -> Any:
        return attribute(path)(*args, settings)
    return make


PROVIDERS: Final = "adapter.fhir.providers."
PUBLISHED_TYPES: Final = ("StructureDefinition", "CodeSystem", "ValueSet", "ConceptMap",
                          "OperationDefinition")

# In the order of the bulk export manifest's output array and of the REST routes.
SPECS: Final = (
    ResourceSpec("Patient", lazy(PROVIDERS + "patient:PatientProvider"), ("child_to_patient",),
                 R4B + "patient.Patient", "adapter.mapping.fhir:patient_to_child",
                 exportable=True, child_data=True, personal=True, import_order=2,
                 operations=MappingProxyType({"export": BULK_OPERATIONS + "patient-export",
                                              "holders": OWN})),
    ResourceSpec("CareTeam", lazy(PROVIDERS + "careteam:CareTeamProvider"),
                 ("involvements_to_careteam", "assessment_to_careteam"),
                 R4B + "careteam.CareTeam", "adapter.fhir.validation:careteam_reverse",
                 exportable=True, child_data=True, personal=True, import_order=3,
                 operations=MappingProxyType({"rekey": OWN})),
    ResourceSpec("PractitionerRole", lazy(PROVIDERS + "practitioner_role:PractitionerRoleProvider"),
                 ("involvement_to_practitionerrole", "assessment_lead_to_practitionerrole",
                  "team_member_to_practitionerrole"),
                 R4B + "practitionerrole.PractitionerRole",
                 "adapter.mapping.fhir:practitionerrole_to_involvement",
                 exportable=True, child_data=True, personal=True),
    ResourceSpec("Organization", lazy(PROVIDERS + "organization:OrganizationProvider"),
                 ("organisation_to_organization",), R4B + "organization.Organization",
                 "adapter.mapping.fhir:organization_to_organisation",
                 exportable=True, import_order=0,
                 export_source="adapter.export.sources:ORGANIZATION"),
    ResourceSpec("Practitioner", lazy(PROVIDERS + "practitioner:PractitionerProvider"),
                 ("practitioner_to_practitioner",), R4B + "practitioner.Practitioner",
                 "adapter.mapping.fhir:practitioner_from_fhir",
                 exportable=True, personal=True, import_order=1,
                 export_source="adapter.export.sources:PRACTITIONER"),
    ResourceSpec("AuditEvent", lazy("adapter.fhir.audit_api:AuditEventHandler")),
    ResourceSpec("Subscription", lazy("adapter.notify.subscriptions:SubscriptionHandler"),
                 operations=MappingProxyType({
                     "status": BACKPORT_OPERATIONS + "backport-subscription-status",
                     "events": BACKPORT_OPERATIONS + "backport-subscription-events"})),
    *(ResourceSpec(name, lazy("adapter.fhir.published:published_handler", name))
      for name in PUBLISHED_TYPES),
    # Routed by the decommissioning (adapter/decommission/routes.py: its own access kinds).
    ResourceSpec("Task", operations=MappingProxyType({"purge-list": OWN})),
    # R4B's PlanDefinition differs from R4's (subjectCanonical): served in JSON only.
    ResourceSpec("PlanDefinition", xml=False),
    # Bulk Data $export only (adapter/export/routes.py).
    ResourceSpec("Group", xml=False,
                 operations=MappingProxyType({"export": BULK_OPERATIONS + "group-export"}),
                 documentation="A Group is a local authority's children, named by the "
                               "authority's GSS code or Organization id; only $export is "
                               "supported."),
    # Not in FHIR 4.0.1: served as R4B JSON (adapter/notify/routes.py) and declared on
    # Subscription (the backport's topic-canonical extension).
    ResourceSpec("SubscriptionTopic", xml=False, r4=False),
    # Exchanged, never stored: interactions' bodies and answers.
    *(ResourceSpec(name) for name in ("Bundle", "CapabilityStatement", "OperationOutcome",
                                      "Parameters", "SearchParameter")),
    # Named in other systems' resources (a child's carer): never served, but its ids are a
    # person's.
    ResourceSpec("RelatedPerson", xml=False, personal=True),
)
REGISTRY: Final[dict[str, ResourceSpec]] = {spec.type: spec for spec in SPECS}


def specs() -> Iterator[ResourceSpec]:
    """Yield every declared type's spec, in declaration order."""
    yield from REGISTRY.values()


def spec_of(resource_type: str) -> ResourceSpec | None:
    """Return the spec of ``resource_type``, None when it is not declared."""
    return REGISTRY.get(resource_type)


def xml_types() -> frozenset[str]:
    """Return the types served and read as FHIR R4 XML."""
    return frozenset(spec.type for spec in specs() if spec.xml)


def models() -> dict[str, str]:
    """Return the fhir.resources R4B model of each type validated inbound."""
    return {spec.type: spec.model for spec in specs() if spec.model}


def reverse_maps() -> dict[str, str]:
    """Return the inbound map (``module:function``) of each type that has one."""
    return {spec.type: spec.reverse for spec in specs() if spec.reverse}


def export_types() -> tuple[str, ...]:
    """Return the exported types, in the manifest's order."""
    return tuple(spec.type for spec in specs() if spec.exportable)


def child_types() -> frozenset[str]:
    """Return the exported types written per child."""
    return frozenset(spec.type for spec in specs() if spec.exportable and spec.child_data)


def referenced_types() -> tuple[str, ...]:
    """Return the exported types that are not a child's data (those the children's refer to)."""
    return tuple(spec.type for spec in specs() if spec.exportable and not spec.child_data)


def personal_types() -> tuple[str, ...]:
    """Return the types whose ids are a child's or a person's."""
    return tuple(spec.type for spec in specs() if spec.personal)


def import_order() -> tuple[str, ...]:
    """Return the types an import applies in passes of their own, in the order applied."""
    ranked = [spec for spec in specs() if spec.import_order is not None]
    return tuple(spec.type for spec in sorted(ranked, key=lambda s: s.import_order or 0))


def not_r4_types() -> frozenset[str]:
    """Return the types served that FHIR 4.0.1 has not."""
    return frozenset(spec.type for spec in specs() if not spec.r4)


def type_operations() -> dict[tuple[str, str], str]:
    """Return the definition of every type-level operation by (type, operation name)."""
    return {(spec.type, name): definition for spec in specs()
            for name, definition in spec.operations.items()}
