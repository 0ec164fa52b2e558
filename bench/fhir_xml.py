"""FHIR XML writer and reader speed on a typical child (README "Benchmarks"): records/s per core.

Run: ``.venv/bin/python -m bench.fhir_xml``. Figures, best of five rounds, for:
``dumps_resource`` (the serving path: string building over the precomputed tables), the same
walk building an lxml tree with ``etree.SubElement`` (the design the string builder was
measured against), fhir.resources ``model_validate`` + ``model_dump_xml`` (the path the
serving code avoids), ``loads_resource`` against fhir.resources ``model_validate_xml``, and
``orjson.dumps`` of the same dict as the JSON reference.
"""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable
from typing import Any

import orjson
from fhir.resources.R4B.patient import Patient
from lxml import etree

from adapter.fhir import xml as fhir_xml
from bench.report import header, row

BASE = "https://fhir.contactpoint-gateway.example.org"
FHIR = "{http://hl7.org/fhir}"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


def carer(code: str, display: str, given: str, phone: str) -> dict[str, Any]:
    """Return a Patient.contact for a carer."""
    return {"relationship": [{"coding": [{"system": ROLE, "code": code, "display": display}]}],
            "name": {"use": "usual", "family": "Smith", "given": [given]},
            "telecom": [{"system": "phone", "value": phone, "use": "mobile"},
                        {"system": "email", "value": f"{given.lower()}.smith@example.org"}],
            "address": {"use": "home", "line": ["12 Acacia Avenue"], "city": "Leeds",
                        "postalCode": "LS1 4AB"}}


def typical_patient(number: int = 1) -> dict[str, Any]:
    """Return a child as the Child→Patient mapping builds it (about 3 KB of JSON)."""
    return {
        "resourceType": "Patient", "id": f"cp-{number:08d}",
        "meta": {"versionId": "3", "lastUpdated": "2026-11-20T10:15:00Z",
                 "profile": [f"{BASE}/StructureDefinition/ContactPointGateway-Patient"]},
        "identifier": [
            {"extension": [{
                "url": "https://fhir.hl7.org.uk/StructureDefinition/"
                       "Extension-UKCore-NHSNumberVerificationStatus",
                "valueCodeableConcept": {"coding": [{
                    "system": "https://fhir.hl7.org.uk/CodeSystem/"
                              "UKCore-NHSNumberVerificationStatusEngland",
                    "code": "01", "display": "Number present and verified"}]}}],
             "system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"},
            {"system": f"{BASE}/Id/upn", "value": "A383200112001"},
            {"system": f"{BASE}/Id/contactpoint-id", "value": f"CP{number:010d}"}],
        "active": True,
        "name": [{"use": "usual", "family": "Smith", "given": ["Amelia", "Rose"]},
                 {"use": "old", "family": "Jones", "given": ["Amelia"],
                  "period": {"end": "2019-04-01"}}],
        "gender": "female", "birthDate": "2015-03-14",
        "address": [{"use": "home", "line": ["12 Acacia Avenue", "Flat 2"], "city": "Leeds",
                     "district": "West Yorkshire", "postalCode": "LS1 4AB", "country": "GB",
                     "period": {"start": "2022-09-01"}}],
        "contact": [carer("MTH", "mother", "Helen", "07700 900123"),
                    carer("FTH", "father", "David", "07700 900456"),
                    carer("GRMTH", "grandmother", "Margaret", "0113 496 0789")],
        "generalPractitioner": [{"identifier": {
            "system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B86001"},
            "display": "Park Surgery"}],
        "managingOrganization": {"reference": "Organization/la-383",
                                 "display": "Leeds City Council"},
    }


def _lxml_children(parent: etree._Element, obj: dict[str, Any],
                   table: fhir_xml.TypeTable) -> None:
    """Add the children of ``obj`` to ``parent`` with etree.SubElement (comparison only)."""
    sub_element = etree.SubElement
    for key in sorted(obj, key=table.order.__getitem__):
        kind, child, repeats, name, _companion = table.fields[key]
        items = obj[key] if repeats else (obj[key],)
        for item in items:
            if kind == fhir_xml._COMPLEX:
                element = sub_element(parent, FHIR + name)
                for attribute in child.attrs:
                    if attribute in item:
                        element.set(attribute, item[attribute])
                _lxml_children(element, item, child)
            elif kind == fhir_xml._BOOL:
                sub_element(parent, FHIR + name, value="true" if item else "false")
            elif kind <= fhir_xml._DEC:
                sub_element(parent, FHIR + name, value=str(item))


def lxml_dumps(resource: dict[str, Any]) -> bytes:
    """Write ``resource`` by building an lxml tree (the measured alternative design)."""
    resource_type = resource["resourceType"]
    root = etree.Element(FHIR + resource_type, nsmap={None: FHIR[1:-1]})  # type: ignore[dict-item]
    _lxml_children(root, resource, fhir_xml.resource_table(resource_type))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def rate(function: Callable[[], Any], seconds: float = 0.5) -> float:
    """Return calls per second of ``function``, best of five rounds of about ``seconds``."""
    function()
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < seconds / 5:
        function()
        calls += 1
    best = 0.0
    for _round in range(5):
        started = time.perf_counter()
        for _call in range(calls):
            function()
        best = max(best, calls / (time.perf_counter() - started))
    return best


def main() -> None:
    """Print records/s for each way of writing and reading the typical child."""
    patient = typical_patient()
    xml = fhir_xml.dumps_resource(patient)
    assert etree.tostring(etree.fromstring(lxml_dumps(patient)), method="c14n") == \
        etree.tostring(etree.fromstring(xml), method="c14n")
    assert fhir_xml.loads_resource(xml) == patient
    print(f"FHIR XML, typical child: {len(orjson.dumps(patient))} B JSON, {len(xml)} B XML; "
          f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, one core")
    lxml_tree = rate(lambda: lxml_dumps(patient))
    models_write = rate(lambda: Patient.model_validate(patient).model_dump_xml())
    models_read = rate(lambda: Patient.model_validate_xml(xml))
    header()
    row("write: same walk, lxml SubElement tree (baseline)", lxml_tree, "/s")
    row("write: fhir.resources validate + model_dump_xml (baseline)", models_write, "/s")
    row("read: fhir.resources model_validate_xml (baseline)", models_read, "/s")
    row("json: orjson.dumps of the same dict (reference)", rate(lambda: orjson.dumps(patient)),
        "/s")
    row("write: dumps_resource (string builder)", rate(lambda: fhir_xml.dumps_resource(patient)),
        "/s", lxml_tree)
    row("read: loads_resource (hardened lxml)", rate(lambda: fhir_xml.loads_resource(xml)),
        "/s", models_read)


if __name__ == "__main__":
    main()
