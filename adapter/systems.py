"""URLs of identifier systems, code systems, extensions and profiles used in FHIR output.

National ones are fixed by NHS England / HL7 UK; the service's own live under the configurable
canonical base (``GATEWAY_CANONICAL_BASE``, docs/domain.md "Identifiers and code systems").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

FHIR_VERSION: Final = "4.0.1"

NHS_NUMBER: Final = "https://fhir.nhs.uk/Id/nhs-number"
ODS_CODE: Final = "https://fhir.nhs.uk/Id/ods-organization-code"
NHS_NUMBER_VERIFICATION_EXT: Final = (
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus")
NHS_NUMBER_VERIFICATION_CS: Final = (
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland")
# PDS's code system for the same codes; not in the required value set: re-coded on the way in.
NHS_NUMBER_VERIFICATION_CS_PDS: Final = (
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus")
# Practitioners' national identifier systems (UK Core / NHS England identifier names) -> the
# name of their format in adapter.identifiers.PRACTITIONER_NUMBER_FORMATS, in the order a
# Practitioner lists them.
GMC_NUMBER: Final = "https://fhir.hl7.org.uk/Id/gmc-number"
GMP_NUMBER: Final = "https://fhir.hl7.org.uk/Id/gmp-number"
NMC_NUMBER: Final = "https://fhir.hl7.org.uk/Id/nmc-number"
HCPC_NUMBER: Final = "https://fhir.hl7.org.uk/Id/hcpc-number"
GPHC_NUMBER: Final = "https://fhir.hl7.org.uk/Id/gphc-number"
SDS_USER_ID: Final = "https://fhir.nhs.uk/Id/sds-user-id"
PRACTITIONER_SYSTEMS: Final = {GMC_NUMBER: "gmc-number", GMP_NUMBER: "gmp-number",
                               NMC_NUMBER: "nmc-number", HCPC_NUMBER: "hcpc-number",
                               GPHC_NUMBER: "gphc-number", SDS_USER_ID: "sds-user-id"}
CONFIDENTIALITY: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
OBSERVATION_VALUE: Final = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"

UKCORE_PROFILE_BASE: Final = "https://fhir.hl7.org.uk/StructureDefinition/"
DEFAULT_CANONICAL_BASE: Final = "https://fhir.contactpoint-gateway.example.org"


@dataclass(frozen=True)
class OwnSystems:
    """The service's own identifier systems, code systems and profiles under one base URL."""

    base: str

    def id_system(self, name: str) -> str:
        """Return the identifier system ``<base>/Id/<name>``."""
        return f"{self.base}/Id/{name}"

    def code_system(self, name: str) -> str:
        """Return the code system ``<base>/CodeSystem/<name>``."""
        return f"{self.base}/CodeSystem/{name}"

    def profile(self, name: str) -> str:
        """Return the profile ``<base>/StructureDefinition/ContactPointGateway-<name>``."""
        return f"{self.base}/StructureDefinition/ContactPointGateway-{name}"

    def extension(self, name: str) -> str:
        """Return the extension URL ``<base>/StructureDefinition/Extension-...-<name>``."""
        return f"{self.base}/StructureDefinition/Extension-ContactPointGateway-{name}"

    @property
    def contactpoint_id(self) -> str:
        """Identifier system of the ContactPoint ID."""
        return self.id_system("contactpoint-id")

    @property
    def upn(self) -> str:
        """Identifier system of the Unique Pupil Number."""
        return self.id_system("upn")

    @property
    def school_urn(self) -> str:
        """Identifier system of the DfE school URN."""
        return self.id_system("school-urn")

    @property
    def la_number(self) -> str:
        """Identifier system of the DfE local authority number."""
        return self.id_system("la-number")

    @property
    def gss_code(self) -> str:
        """Identifier system of the ONS GSS code of a local authority."""
        return self.id_system("gss-code")

    @property
    def ecaf_assessment(self) -> str:
        """Identifier system of eCAF assessment ids."""
        return self.id_system("ecaf-assessment")

    def local_id(self, organisation_code: str) -> str:
        """Identifier system of one organisation's local ids (``<base>/Id/local/<code>``)."""
        return self.id_system(f"local/{organisation_code}")
