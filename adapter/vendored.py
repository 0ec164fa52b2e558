"""Where the third-party conformance files live: the official FHIR R4 XML schemas and the UK
Core 2.0.0 definitions, vendored unchanged under ``schemas/vendor`` (provenance and licences in
``schemas/vendor/README.md``, every file's SHA-256 in ``schemas/vendor/SHA256SUMS``). The
gateway and the tests both locate them through these constants, never outside the repository."""

from __future__ import annotations

from typing import Final

from adapter.config import PROJECT_ROOT

VENDOR_DIR: Final = PROJECT_ROOT / "schemas" / "vendor"
VENDOR_DIGESTS: Final = VENDOR_DIR / "SHA256SUMS"
FHIR_R4_DIR: Final = VENDOR_DIR / "fhir-r4"
FHIR_R4_XSD: Final = FHIR_R4_DIR / "fhir-single.xsd"
UK_CORE_DIR: Final = VENDOR_DIR / "uk-core"
