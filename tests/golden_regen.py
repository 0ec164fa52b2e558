"""Golden files (``tests/golden/<case>/``): load a case's canonical input, render every output
the gateway makes of it, and (run as ``python -m tests.golden_regen``, i.e. ``make golden``)
write those outputs next to the input for review.

A case's ``input.json`` is ``canonical_dump(child)`` written out (dates and instants as ISO
8601 text, every key present); an eCAF case adds ``assessment``:
``canonical_assessment_dump(assessment)`` without its ``child``, which is the case's child.
``version`` and ``last_updated`` are part of the input, and every resource id is derived from
natural keys as the service derives it (``adapter.store.records``), so nothing in the
outputs is volatile and the same input always gives the same bytes.

Outputs: ``patient.json``/``.xml`` (Child -> Patient), ``careteam.json``/``.xml`` (the child's
team), ``directory.xml`` (DirectoryEntry); eCAF cases also ``ecaf-careteam.json``/``.xml``
(Team Around the Child) and ``assessment.xml`` (AssessmentReference). FHIR XML is written by
``adapter.fhir.xml.dumps_resource`` and stored indented for review (FHIR XML has no mixed
content outside the narrative ``div``, which these resources do not carry, so the
indentation is insignificant: tests compare canonical XML without blank text).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from lxml import etree

from adapter.directory.writer import assessment_element, entry_element
from adapter.fhir.xml import dumps_resource
from adapter.identifiers import resource_id_for
from adapter.mapping import fhir
from adapter.models import Assessment, Child, Organisation, Practitioner
from adapter.models.canonical import (
    Canonical,
    ObjectBuilder,
    build_assessment,
    build_child,
    child_reference_dump,
    organisation_key,
)
from adapter.store.records import part_key
from adapter.systems import DEFAULT_CANONICAL_BASE

GOLDEN: Final = Path(__file__).resolve().parent / "golden"
BASE: Final = DEFAULT_CANONICAL_BASE
DATE_KEYS: Final = frozenset({"birth_date", "death_date", "address_start", "address_end",
                              "retention_date", "period_start", "period_end", "started_date",
                              "completed_date", "closed_date"})
INSTANT_KEYS: Final = frozenset({"last_updated"})
# Output file -> what it holds; the eCAF files only for cases with an assessment.
CHILD_FILES: Final = ("patient.json", "patient.xml", "careteam.json", "careteam.xml",
                      "directory.xml")
ECAF_FILES: Final = ("ecaf-careteam.json", "ecaf-careteam.xml", "assessment.xml")


def case_names() -> list[str]:
    """Return the names of the golden cases (their folders), sorted."""
    return sorted(path.parent.name for path in GOLDEN.glob("*/input.json"))


def typed(value: Any, key: str | None = None) -> Any:
    """Return JSON input with its dates and instants parsed (the canonical_dump types)."""
    if isinstance(value, dict):
        return {k: typed(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, str) and key in DATE_KEYS:
        return dt.date.fromisoformat(value)
    if isinstance(value, str) and key in INSTANT_KEYS:
        return dt.datetime.fromisoformat(value)
    return value


def load_input(case: str) -> Canonical:
    """Return a case's input: the child's canonical dict (with ``assessment`` for eCAF)."""
    data: Canonical = typed(json.loads((GOLDEN / case / "input.json").read_text("utf-8")))
    return data


def child_data(data: Mapping[str, Any]) -> Canonical:
    """Return the child's canonical dict of an input (without the eCAF assessment)."""
    return {key: value for key, value in data.items() if key != "assessment"}


def assessment_data(data: Mapping[str, Any], child: Child) -> Canonical | None:
    """Return the canonical dict of the input's assessment with its child, or None."""
    if data.get("assessment") is None:
        return None
    return {**data["assessment"], "child": child_reference_dump(child)}


def _organisation_ids(builder: ObjectBuilder) -> None:
    """Give each organisation and practitioner the id the service derives from its key."""
    organisations: list[Organisation] = list(builder.organisations.values())
    for org in organisations:
        org.resource_id = resource_id_for("Organization", organisation_key(_codes(org))[1])
    practitioners: list[Practitioner] = list(builder.practitioners.values())
    for person in practitioners:
        code = organisation_key(_codes(person.organisation))[1]
        person.resource_id = resource_id_for("Practitioner", f"{code}/{person.local_id}")


def _codes(org: Organisation) -> dict[str, str | None]:
    """Return the natural-key columns of an organisation."""
    return {"ods_code": org.ods_code, "urn": org.urn, "gss_code": org.gss_code}


def build_case_child(data: Mapping[str, Any]) -> Child:
    """Return the transient Child of an input with its version, time and resource ids.

    Ids as ``adapter.store.records.apply_child`` derives them: the Patient from the
    ContactPoint ID, each involvement's PractitionerRole from the ContactPoint ID and the
    involvement's natural key, organisations and practitioners from theirs.
    """
    child, builder = build_child(child_data(data))
    child.version, child.last_updated = data["version"], data["last_updated"]
    child.resource_id = resource_id_for("Patient", child.contactpoint_id)
    for involvement in child.involvements:
        involvement.resource_id = resource_id_for(
            "PractitionerRole", f"{child.contactpoint_id}/{part_key(involvement)}")
    _organisation_ids(builder)
    return child


def build_case_assessment(data: Mapping[str, Any], child: Child) -> Assessment | None:
    """Return the transient Assessment of an eCAF input about ``child``, with its ids
    (``adapter.store.records.apply_assessment``), or None."""
    canonical = assessment_data(data, child)
    if canonical is None:
        return None
    assessment, builder = build_assessment(canonical)
    assessment.child = child
    assessment.version = canonical["version"]
    assessment.last_updated = canonical["last_updated"]
    aid = assessment.assessment_id
    assessment.resource_id = resource_id_for("CareTeam", f"ecaf/{aid}")
    for member in assessment.members:
        member.resource_id = resource_id_for("PractitionerRole", f"ecaf/{aid}/{part_key(member)}")
    _organisation_ids(builder)
    return assessment


def fhir_resources(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return a case's FHIR resources by output stem (``patient``, ``careteam``, ...)."""
    child = build_case_child(data)
    out = {"patient": fhir.child_to_patient(child, base=BASE),
           "careteam": fhir.child_to_careteam(child, base=BASE)}
    assessment = build_case_assessment(data, child)
    if assessment is not None:
        out["ecaf-careteam"] = fhir.assessment_to_careteam(assessment, base=BASE)
    return out


def json_bytes(resource: Mapping[str, Any]) -> bytes:
    """Return a resource as indented JSON (keys in the mapping's element order)."""
    return (json.dumps(resource, indent=2, ensure_ascii=False) + "\n").encode()


def indented(xml: bytes) -> bytes:
    """Return an XML document re-serialised with indentation and an XML declaration."""
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    root = etree.fromstring(xml, parser)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def directory_documents(data: Mapping[str, Any]) -> dict[str, bytes]:
    """Return a case's directory XML documents by file name."""
    out = {"directory.xml": etree.tostring(entry_element(child_data(data)),
                                           xml_declaration=True, encoding="UTF-8",
                                           pretty_print=True)}
    if data.get("assessment") is not None:
        child, _builder = build_child(child_data(data))
        canonical = assessment_data(data, child)
        assert canonical is not None
        out["assessment.xml"] = etree.tostring(assessment_element(canonical),
                                               xml_declaration=True, encoding="UTF-8",
                                               pretty_print=True)
    return out


def render(data: Mapping[str, Any]) -> dict[str, bytes]:
    """Return every output file of a case's input, by file name."""
    files: dict[str, bytes] = {}
    for stem, resource in fhir_resources(data).items():
        files[f"{stem}.json"] = json_bytes(resource)
        files[f"{stem}.xml"] = indented(dumps_resource(resource))
    files.update(directory_documents(data))
    return files


def regenerate(case: str, write: Callable[[Path, bytes], None]) -> list[str]:
    """Render one case and hand each output to ``write``; return the file names."""
    files = render(load_input(case))
    for name, content in sorted(files.items()):
        write(GOLDEN / case / name, content)
    return sorted(files)


def main() -> int:
    """Regenerate every case's outputs (review the diff before committing)."""
    def write(path: Path, content: bytes) -> None:
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            print(f"wrote {path.relative_to(GOLDEN.parent.parent)}")  # noqa: T201

    for case in case_names():
        regenerate(case, write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
