"""The vendored FHIR R4 schemas and UK Core definitions are the official files, unchanged and
complete, and nothing in the repository reads conformance files from outside it."""

from __future__ import annotations

import hashlib
import re

from adapter.fhir.validation import UK_CORE_FOLDER
from adapter.vendored import FHIR_R4_XSD, UK_CORE_DIR, VENDOR_DIGESTS, VENDOR_DIR
from tests.conftest import CONFORMANCE, REPO
from tests.repo_files import project_files

# Digests of files whose upstream SHA-256 is published with their source (schemas/vendor/
# fhir-r4/README.md): the recorded digests must agree with them.
UPSTREAM = {
    "fhir-r4/fhir-single.xsd": "aa40cefca6e6c8b2740da41dbe12c0d627d3ffaa2de7887b36865b2998c09506",
    "fhir-r4/fhir-xhtml.xsd": "707ad8be23f9bf8f5d6aaf32e547056834975df646b706926e01f0bf4b409495",
    "fhir-r4/xml.xsd": "a6d430599c1f9ea508efa6f899bf0979d1501eb948fd51fcb9ae3df1971941a0",
}
# A path built to a folder beside the clone, as the suite once read the schemas from.
OUTSIDE = re.compile(r"""["']\.\./|/\s*["']shared["']""")


def recorded() -> dict[str, str]:
    """Return the digests in schemas/vendor/SHA256SUMS by path relative to schemas/vendor."""
    lines = VENDOR_DIGESTS.read_text().splitlines()
    return {path: digest for digest, path in (line.split("  ", 1) for line in lines)}


def vendored_files() -> set[str]:
    """Return every vendored file except the provenance notes, relative to schemas/vendor."""
    return {str(p.relative_to(VENDOR_DIR)) for p in VENDOR_DIR.rglob("*")
            if p.is_file() and p.name not in ("README.md", "SHA256SUMS")}


def test_every_vendored_file_matches_its_recorded_digest() -> None:
    """No vendored file is changed, missing or unrecorded."""
    digests = recorded()
    assert set(digests) == vendored_files()
    for path, digest in digests.items():
        assert hashlib.sha256((VENDOR_DIR / path).read_bytes()).hexdigest() == digest, path


def test_recorded_digests_cover_both_sources() -> None:
    """The R4 schemas agree with their published digests; UK Core has its 378 files."""
    digests = recorded()
    assert {p: d for p, d in digests.items() if p.startswith("fhir-r4/")} == UPSTREAM
    assert len([p for p in digests if p.startswith("uk-core/")]) == 153 + 88 + 134 + 3


def test_code_and_tests_use_the_same_folders() -> None:
    """The gateway's UK Core folder and the tests' conformance folder are the vendored ones."""
    assert UK_CORE_FOLDER == UK_CORE_DIR == CONFORMANCE / "uk-core"
    assert FHIR_R4_XSD == CONFORMANCE / "fhir-r4" / "fhir-single.xsd"
    assert VENDOR_DIR.is_relative_to(REPO)


def test_nothing_reads_from_beside_the_repository() -> None:
    """No code or script of the repository builds a path to a folder outside the repository."""
    tracked = project_files("adapter", "tests", "bench", "scripts", ".ci", "Makefile", "wsgi.py")
    assert any(name.endswith(".py") for name in tracked)
    offending = [name for name in tracked if (REPO / name).suffix in (".py", ".sh", "")
                 and (REPO / name).is_file() and OUTSIDE.search((REPO / name).read_text())]
    assert offending == []


def test_the_schemas_compile_from_the_vendored_folder_alone() -> None:
    """The R4 schema and everything it imports are vendored: it compiles without the network."""
    from lxml import etree

    parser = etree.XMLParser(no_network=True)
    schema = etree.XMLSchema(etree.parse(str(FHIR_R4_XSD), parser))
    assert schema.validate(etree.fromstring(
        b'<Patient xmlns="http://hl7.org/fhir"><gender value="female"/></Patient>'))
    assert not schema.validate(etree.fromstring(
        b'<Patient xmlns="http://hl7.org/fhir"><gender value="girl"/></Patient>'))
