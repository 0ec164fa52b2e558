"""Mapping speed (README "Benchmarks"): Child -> Patient and Involvements -> CareTeam, records/s.

    .venv/bin/python -m bench.mapping [--children 2000]

Demo children (``adapter.demo``) are written into a temporary SQLite database and loaded with
their parts; then, on one core, best of five rounds over all of them:

- the serving path: the compiled TOML mapping -> dict -> ``orjson.dumps`` (JSON), and the same
  dict -> ``adapter.fhir.xml.dumps_resource`` (XML);
- baseline "plain dicts": a hand-written function building the identical dict (asserted equal
  for every child) -> ``orjson.dumps``: what the engine costs over writing the code by hand;
- baseline "fhir.resources": ``model_validate`` of the same dict + ``model_dump_json`` /
  ``model_dump_xml``: the path the serving code avoids.

Figures are records per second of CPU time of this process (steadier than wall time on a
shared machine), each printed as one line of ``bench.report``: next to its baseline and, for
the serving paths of Patients, the goal per core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from fhir.resources.R4B.careteam import CareTeam
from fhir.resources.R4B.patient import Patient
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from adapter import systems
from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.fhir import xml as fhir_xml
from adapter.mapping import fhir
from adapter.mapping.conceptmaps import load_translations
from adapter.mapping.transforms import VERIFICATION_DISPLAY
from adapter.models import Child, Involvement, LocalIdentifier
from bench.report import Goal, header, row

BASE = systems.DEFAULT_CANONICAL_BASE
OWN = systems.OwnSystems(BASE)
ROUNDS = 5
# The goals set for serving Patients, per core (README "Benchmarks").
JSON_GOAL = Goal.at_least(25_000, "/s", aim=50_000)
XML_GOAL = Goal.at_least(10_000, "/s", aim=25_000)


def load_children(count: int, folder: Path) -> list[Child]:
    """Return ``count`` demo children loaded with every part the mappings read."""
    database = Database(f"sqlite:///{folder / 'bench.db'}")
    database.upgrade()
    load_demo_data(database, children=count, authorities=4, seed=2026, progress=False)
    with database.sessions() as session:
        children = list(session.scalars(select(Child).order_by(Child.id).options(
            selectinload(Child.managing_organisation), selectinload(Child.names),
            selectinload(Child.carers),
            selectinload(Child.local_identifiers).selectinload(LocalIdentifier.organisation),
            selectinload(Child.involvements).selectinload(Involvement.organisation),
            selectinload(Child.involvements).selectinload(Involvement.practitioner))))
    database.dispose()
    return children


def rate(items: list[Any], function: Callable[[Any], Any]) -> tuple[float, float]:
    """Return (CPU, wall) calls per second of ``function`` over ``items``, best of five."""
    best_cpu = best_wall = float("inf")
    for _round in range(ROUNDS):
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        for item in items:
            function(item)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return len(items) / max(best_cpu, 1e-9), len(items) / best_wall


# --- the hand-written baseline ------------------------------------------------------------

def _ext(name: str, key: str, value: Any) -> dict[str, Any]:
    """Return one own extension."""
    return {"url": OWN.extension(name), key: value}


def _org_ref(org: Any) -> dict[str, Any]:
    """Return a Reference to an organisation by its natural key."""
    if org.ods_code:
        identifier = {"system": systems.ODS_CODE, "value": org.ods_code}
    elif org.urn:
        identifier = {"system": OWN.school_urn, "value": org.urn}
    else:
        identifier = {"system": OWN.gss_code, "value": org.gss_code}
    return {"reference": f"Organization/{org.resource_id}", "identifier": identifier,
            "display": org.name}


def _address(record: Any) -> dict[str, Any]:
    """Return the BS7666 Address of a record's address columns."""
    address: dict[str, Any] = {}
    if record.address_uprn:
        address["extension"] = [{"url": "https://fhir.hl7.org.uk/StructureDefinition/"
                                        "Extension-UKCore-AddressKey", "extension": [
            {"url": "type", "valueCodeableConcept": {"coding": [{
                "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-AddressKeyType",
                "code": "UPRN", "display": "Unique Property Reference Number"}]}},
            {"url": "value", "valueString": record.address_uprn}]}]
    parts = [(p, getattr(record, f"address_{p}")) for p in ("saon", "paon", "street",
                                                            "locality")]
    parts = [(p, text) for p, text in parts if text]
    if parts:
        url = OWN.extension("AddressLinePart")
        address["line"] = [text for _p, text in parts]
        address["_line"] = [{"extension": [{"url": url, "valueCode": p}]} for p, _t in parts]
    if record.address_town:
        address["city"] = record.address_town
    if record.address_postcode:
        address["postalCode"] = record.address_postcode
    return address


def _period(start: dt.date | None, end: dt.date | None) -> dict[str, str]:
    """Return a Period of two dates."""
    return {k: d.isoformat() for k, d in (("start", start), ("end", end)) if d is not None}


def _telecom(record: Any) -> list[dict[str, str]]:
    """Return the ContactPoints of a record's phone and email."""
    points = [{"system": "phone", "value": record.phone}] if record.phone else []
    return points + ([{"system": "email", "value": record.email}] if record.email else [])


def _coded(name: str, code: str) -> list[dict[str, str]]:
    """Return the mapped codings and the exact own coding of ``code``."""
    cmap = load_translations(BASE)[name]
    return [{"system": s, "code": c, "display": d}
            for s, c, d in (*cmap.translate(code), cmap.source_coding(code))]


def _name(name: Any) -> dict[str, Any]:
    """Return a child's HumanName."""
    out: dict[str, Any] = {"use": "usual" if name.use == "current" else "old"}
    if name.period_start or name.period_end:
        out["period"] = _period(name.period_start, name.period_end)
    if name.title:
        out["prefix"] = [name.title]
    if name.given:
        out["given"] = list(name.given)
    out["family"] = name.family
    return out


def _contact(carer: Any) -> dict[str, Any]:
    """Return a carer as Patient.contact."""
    out: dict[str, Any] = {
        "extension": [_ext("ParentalResponsibility", "valueBoolean",
                           carer.parental_responsibility)],
        "relationship": [{"coding": _coded("carer-relationship", carer.relation)}],
        "name": {k: v for k, v in (("prefix", [carer.title] if carer.title else None),
                                   ("given", list(carer.given) if carer.given else None),
                                   ("family", carer.family)) if v}}
    if carer.phone or carer.email:
        out["telecom"] = _telecom(carer)
    address = _address(carer)
    if address:
        out["address"] = address
    return out


def _patient_extensions(child: Child) -> list[dict[str, Any]]:
    """Return the Patient's own extensions."""
    extensions = [_ext("AddressStatus", "valueCode", child.address_status)]
    has_address = child.address_status in ("current", "last-known") and any(
        getattr(child, f"address_{p}") for p in ("saon", "paon", "street", "locality", "town",
                                                 "postcode", "uprn"))
    if not has_address and (child.address_start or child.address_end):
        extensions.append(_ext("AddressStatusPeriod", "valuePeriod",
                               _period(child.address_start, child.address_end)))
    extensions.append(_ext("RecordStatus", "valueCode", child.record_status))
    extensions.append(_ext("RetentionDate", "valueDate", child.retention_date.isoformat()))
    if child.extended_retention:
        extensions.append(_ext("ExtendedRetention", "valueCode", child.extended_retention))
    return extensions


def _identifiers(child: Child) -> list[dict[str, Any]]:
    """Return the Patient's identifiers."""
    out: list[dict[str, Any]] = []
    if child.nhs_number:
        nhs: dict[str, Any] = {"system": systems.NHS_NUMBER, "value": child.nhs_number}
        if child.nhs_number_status:
            nhs["extension"] = [{"url": systems.NHS_NUMBER_VERIFICATION_EXT,
                                 "valueCodeableConcept": {"coding": [{
                                     "system": systems.NHS_NUMBER_VERIFICATION_CS,
                                     "code": child.nhs_number_status,
                                     "display": VERIFICATION_DISPLAY[child.nhs_number_status]}]}}]
        out.append(nhs)
    out.append({"system": OWN.contactpoint_id, "value": child.contactpoint_id})
    if child.upn:
        out.append({"system": OWN.upn, "value": child.upn})
    for local in child.local_identifiers:
        org = local.organisation
        out.append({"system": OWN.local_id(org.ods_code or org.urn or org.gss_code),
                     "value": local.value, "assigner": _org_ref(org)})
    return out


def _child_address(child: Child) -> dict[str, Any]:
    """Return the child's Address (empty for a statement or no parts)."""
    address = _address(child) if child.address_status in ("current", "last-known") else {}
    if address:
        address["use"] = "home" if child.address_status == "current" else "old"
        if child.address_start or child.address_end:
            address["period"] = _period(child.address_start, child.address_end)
    return address


def handwritten_patient(child: Child) -> dict[str, Any]:
    """Build the Patient the mapping builds, by hand (the plain-dict baseline)."""
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": child.resource_id,
        "meta": {"versionId": str(child.version),
                 "lastUpdated": child.last_updated.replace(tzinfo=dt.UTC).isoformat(),
                 "profile": [OWN.profile("Patient")]},
        "extension": _patient_extensions(child), "identifier": _identifiers(child),
        "active": child.record_status == "live", "name": [_name(n) for n in child.names],
        "gender": {"1": "male", "2": "female", "9": "other", "X": "unknown"}[child.gender],
        "birthDate": child.birth_date.isoformat()}
    if child.shielded:
        patient["meta"]["security"] = [{"system": systems.CONFIDENTIALITY, "code": "R",
                                        "display": "restricted"}]
    if child.death_date:
        patient["deceasedDateTime"] = child.death_date.isoformat()
    address = _child_address(child)
    if address:
        patient["address"] = [address]
    if child.carers:
        patient["contact"] = [_contact(c) for c in child.carers]
    gps = [_org_ref(i.organisation) for i in child.involvements if i.role == "gp"]
    if gps:
        patient["generalPractitioner"] = gps
    org = child.managing_organisation
    patient["managingOrganization"] = {
        "reference": f"Organization/{org.resource_id}",
        "identifier": {"system": OWN.gss_code, "value": org.gss_code}, "display": org.name}
    return patient


# --- run ----------------------------------------------------------------------------------

def figures(children: list[Child]) -> None:
    """Measure the serving paths and their baselines; print each with its goal (CPU time of
    one core)."""
    patients = [fhir.child_to_patient(c, base=BASE) for c in children]
    teams = [fhir.child_to_careteam(c, base=BASE) for c in children]
    for child, patient in zip(children, patients, strict=True):
        assert handwritten_patient(child) == patient, child.contactpoint_id
    sample = len(children[: max(1, len(children) // 10)])  # fhir.resources is slow: a tenth
    by_hand = rate(children, lambda c: orjson.dumps(handwritten_patient(c)))[0]
    patient_json = rate(patients[:sample], lambda p: Patient.model_validate(p).model_dump_json())
    patient_xml = rate(patients[:sample], lambda p: Patient.model_validate(p).model_dump_xml())
    team_json = rate(teams[:sample], lambda t: CareTeam.model_validate(t).model_dump_json())
    team_xml = rate(teams[:sample], lambda t: CareTeam.model_validate(t).model_dump_xml())
    header()
    row("Child->Patient JSON: hand-written + orjson (baseline)", by_hand, "/s")
    row("Child->Patient JSON: fhir.resources (baseline)", patient_json[0], "/s")
    row("Child->Patient XML: fhir.resources (baseline)", patient_xml[0], "/s")
    json_path = rate(children, lambda c: orjson.dumps(fhir.child_to_patient(c, base=BASE)))[0]
    row("Child->Patient JSON: mapping + orjson (serving path)", json_path, "/s", by_hand,
        JSON_GOAL)
    row("Child->Patient XML: mapping + dumps_resource (serving)",
        rate(children, lambda c: fhir_xml.dumps_resource(
            fhir.child_to_patient(c, base=BASE)))[0], "/s", patient_xml[0], XML_GOAL)
    row("Child->CareTeam JSON: mapping + orjson (serving path)",
        rate(children, lambda c: orjson.dumps(fhir.child_to_careteam(c, base=BASE)))[0], "/s",
        team_json[0])
    row("Child->CareTeam XML: mapping + dumps_resource (serving)",
        rate(children, lambda c: fhir_xml.dumps_resource(
            fhir.child_to_careteam(c, base=BASE)))[0], "/s", team_xml[0])
    row("Child->Patient dict: mapping only",
        rate(children, lambda c: fhir.child_to_patient(c, base=BASE))[0], "/s")


def main(argv: list[str] | None = None) -> None:
    """Print records/s of the mappings next to their baselines."""
    parser = argparse.ArgumentParser(prog="python -m bench.mapping")
    parser.add_argument("--children", type=int, default=2000)
    args = parser.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory() as folder:
        children = load_children(args.children, Path(folder))
    for child in children:  # every id the resources carry is set by the generator
        assert child.resource_id and child.managing_organisation.resource_id
    size = sum(len(orjson.dumps(fhir.child_to_patient(c, base=BASE))) for c in children)
    print(f"mappings, {len(children):,} demo children ({size // len(children):,} B a Patient "
          f"in JSON); {dt.date.today()}, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, records/s of CPU time on one core; best of "
          f"{ROUNDS} rounds")
    figures(children)


if __name__ == "__main__":
    main(sys.argv[1:])
