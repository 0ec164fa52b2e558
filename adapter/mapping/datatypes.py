"""Transforms for FHIR complex data types: names, telecom, BS7666 addresses and references.

Registered in ``adapter.mapping.transforms.TRANSFORMS`` like the simple ones (same contract).
References are relative (``Organization/<id>``), carry the natural key as ``identifier`` where
one exists and a ``display`` (FHIR R4 references.html); on the way in they become transient
Organisation / Practitioner objects carrying the natural key, resolved by the service layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from adapter import identifiers, identity, systems
from adapter.mapping.transforms import (
    ADDRESS_KEY_EXT,
    ADDRESS_KEY_TYPE,
    LINE_PARTS,
    UNLABELLED_LINES,
    Drop,
    Env,
    Transform,
    ValueNotAccepted,
    parse_date,
    team_role,
    transform,
)
from adapter.models import (
    Child,
    ChildName,
    Organisation,
    Practitioner,
    PractitionerIdentifier,
)

_REFERENCE: Final = re.compile(r"(?:.*/)?([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?")
# Address keys a BS7666 address reads; the child's address transform reads use and period too.
_ADDRESS_KEYS: Final = frozenset({"extension", "line", "_line", "city", "postalCode"})


# --- names and contact details ------------------------------------------------------------

def person_display(title: str | None, given: Sequence[str] | None, family: str | None) -> str:
    """Return a person's name for a reference ``display``."""
    return " ".join(part for part in (title, *(given or ()), family) if part)


def current_name(names: Sequence[ChildName]) -> str | None:
    """Return the display of a child's current name (the first one in use ``current``)."""
    for name in names:
        if name.use == "current":
            return " ".join([*(name.given or ()), name.family])
    return None


def _drop_other_keys(value: Any, kept: frozenset[str], drop: Drop,
                     prefix: tuple[str | int, ...] = ()) -> None:
    """Report every key of ``value`` that is not in ``kept`` as not kept."""
    for key in value:
        if key not in kept:
            drop((*prefix, key))


def _name_out(value: tuple[str | None, list[str] | None, str]) -> dict[str, Any]:
    """Return the HumanName of (title, given, family)."""
    title, given, family = value
    name: dict[str, Any] = {}
    if title:
        name["prefix"] = [title]
    if given:
        name["given"] = list(given)
    if family:
        name["family"] = family
    return name


def _name_in(name: Any, drop: Drop) -> tuple[str | None, list[str], str]:
    """Return (title, given, family) of a HumanName; other parts are not kept.

    :raises ValueNotAccepted: no family name.
    """
    _drop_other_keys(name, frozenset({"prefix", "given", "family"}), drop)
    if not name.get("family"):
        raise ValueNotAccepted("a family name is needed")
    prefix = name.get("prefix") or []
    for index in range(1, len(prefix)):
        drop(("prefix", index))
    return (prefix[0] if prefix else None, list(name.get("given") or []), str(name["family"]))


@transform("human_name")
def _human_name(_env: Env) -> Transform:
    """(title, given, family) as one HumanName; use, suffix, period and text are not kept."""
    return Transform(_name_out, _name_in)


@transform("human_names")
def _human_names(_env: Env) -> Transform:
    """(title, given, family) as a list of one HumanName; further names are not kept."""
    def reverse(names: Any, drop: Drop) -> tuple[str | None, list[str], str]:
        for index in range(1, len(names)):
            drop((index,))
        return _name_in(names[0], lambda sub: drop((0, *sub)))
    return Transform(lambda value: [_name_out(value)], reverse)


@transform("telecom")
def _telecom(_env: Env) -> Transform:
    """(phone, email) as ContactPoints; further numbers, use, rank and period are not kept."""
    def forward(value: tuple[str | None, str | None]) -> list[dict[str, str]] | None:
        phone, email = value
        points = []
        if phone:
            points.append({"system": "phone", "value": phone})
        if email:
            points.append({"system": "email", "value": email})
        return points or None

    def reverse(points: Any, drop: Drop) -> tuple[str | None, str | None]:
        found: dict[str, str] = {}
        for index, point in enumerate(points):
            system = point.get("system")
            if system in ("phone", "email") and system not in found and "value" in point:
                found[system] = _contact_value(system, point["value"])
                _drop_other_keys(point, frozenset({"system", "value"}), drop, (index,))
            else:
                drop((index,))
        return found.get("phone"), found.get("email")
    return Transform(forward, reverse)


def _contact_value(system: str, value: Any) -> str:
    """Return a validated telephone number or e-mail address.

    :raises InvalidIdentifier: not a UK telephone number or not an e-mail address.
    """
    if system == "phone":
        return identifiers.validate_phone(str(value), "telecom")
    return identifiers.validate_email(str(value), "telecom")


# --- BS7666 addresses ---------------------------------------------------------------------

def bs7666_address(env: Env, parts: Sequence[str | None]) -> dict[str, Any] | None:
    """Return an Address for (saon, paon, street, locality, town, postcode, uprn), or None."""
    saon, paon, street, locality, town, postcode, uprn = parts
    address: dict[str, Any] = {}
    if uprn:
        address["extension"] = [_address_key(uprn)]
    if saon or paon or street or locality:
        # Unrolled over LINE_PARTS (saon, paon, street, locality): this runs for every child
        # and carer written out.
        url = env.line_part_url
        lines, labels = [], []
        if saon:
            lines.append(saon)
            labels.append({"extension": [{"url": url, "valueCode": "saon"}]})
        if paon:
            lines.append(paon)
            labels.append({"extension": [{"url": url, "valueCode": "paon"}]})
        if street:
            lines.append(street)
            labels.append({"extension": [{"url": url, "valueCode": "street"}]})
        if locality:
            lines.append(locality)
            labels.append({"extension": [{"url": url, "valueCode": "locality"}]})
        address["line"], address["_line"] = lines, labels
    if town:
        address["city"] = town
    if postcode:
        address["postalCode"] = postcode
    return address or None


def _address_key(uprn: str) -> dict[str, Any]:
    """Return the UK Core AddressKey extension carrying a UPRN."""
    return {"url": ADDRESS_KEY_EXT, "extension": [
        {"url": "type", "valueCodeableConcept": {"coding": [
            {"system": ADDRESS_KEY_TYPE, "code": "UPRN",
             "display": "Unique Property Reference Number"}]}},
        {"url": "value", "valueString": uprn}]}


def read_bs7666(env: Env, address: Any, drop: Drop,
                kept: frozenset[str] = _ADDRESS_KEYS) -> tuple[str | None, ...]:
    """Return (saon, paon, street, locality, town, postcode, uprn) of an Address.

    :raises InvalidIdentifier: the postcode is not a UK postcode.
    """
    _drop_other_keys(address, kept, drop)
    parts = _read_lines(env, address, drop)
    postcode = address.get("postalCode")
    if postcode is not None:
        postcode = identifiers.validate_postcode(str(postcode), "postalCode")
    uprn = _read_uprn(address.get("extension") or [], drop)
    return (*(parts.get(p) for p in LINE_PARTS), address.get("city"), postcode, uprn)


def _read_lines(env: Env, address: Any, drop: Drop) -> dict[str, str]:
    """Return the BS7666 parts of Address.line: by their part label, else by line count."""
    lines = address.get("line") or []
    notes = address.get("_line") or []
    url = env.own.extension("AddressLinePart")
    labels = [_line_label(notes[i] if i < len(notes) else None, url) for i in range(len(lines))]
    if not any(labels):
        labels = list(UNLABELLED_LINES.get(len(lines), LINE_PARTS))
    parts: dict[str, str] = {}
    for index, line in enumerate(lines):
        label = labels[index] if index < len(labels) else None
        if label is None or label in parts:
            drop(("line", index))
        else:
            parts[label] = line
    return parts


def _line_label(note: Any, url: str) -> str | None:
    """Return the BS7666 part named by a line's AddressLinePart extension, if any."""
    for extension in (note or {}).get("extension", []):
        if extension.get("url") == url and extension.get("valueCode") in LINE_PARTS:
            return str(extension["valueCode"])
    return None


def _read_uprn(extensions: Sequence[Any], drop: Drop) -> str | None:
    """Return the UPRN of an AddressKey extension; other extensions are not kept."""
    uprn = None
    for index, extension in enumerate(extensions):
        value = _uprn_of(extension) if extension.get("url") == ADDRESS_KEY_EXT else None
        if value is None or uprn is not None:
            drop(("extension", index))
        else:
            uprn = value
    return uprn


def _uprn_of(extension: Any) -> str | None:
    """Return the value of an AddressKey extension whose type is UPRN."""
    inner = {e.get("url"): e for e in extension.get("extension", [])}
    codings = inner.get("type", {}).get("valueCodeableConcept", {}).get("coding", [])
    if any(c.get("code") == "UPRN" for c in codings):
        value = inner.get("value", {}).get("valueString")
        if value is not None and not re.fullmatch(r"\d{1,12}", str(value)):
            raise ValueNotAccepted("a UPRN is 1 to 12 digits")
        return value  # type: ignore[no-any-return]
    return None


@transform("address")
def _address(env: Env) -> Transform:
    """A BS7666 address (organisation, carer) as one Address."""
    return Transform(lambda parts: bs7666_address(env, parts),
                     lambda address, drop: read_bs7666(env, address, drop))


@transform("addresses")
def _addresses(env: Env) -> Transform:
    """A BS7666 address as a list of one Address; further addresses are not kept."""
    def forward(parts: Sequence[str | None]) -> list[dict[str, Any]] | None:
        address = bs7666_address(env, parts)
        return [address] if address else None

    def reverse(addresses: Any, drop: Drop) -> tuple[str | None, ...]:
        for index in range(1, len(addresses)):
            drop((index,))
        return read_bs7666(env, addresses[0], lambda sub: drop((0, *sub)))
    return Transform(forward, reverse)


@transform("child_address")
def _child_address(env: Env) -> Transform:
    """The child's one address: use home (current) or old (last known), with its period."""
    return Transform(lambda value: child_address(env, value),
                     lambda addresses, drop: read_child_address(env, addresses, drop))


@transform("statement_period")
def _statement_period(env: Env) -> Transform:
    """The period of the address status when no Patient.address carries it (a statement such
    as 'left England', or a current address with no parts); in: (start, end) only."""
    def forward(value: Sequence[Any]) -> dict[str, str] | None:
        status, *parts, start, end = value
        if status in ("current", "last-known") and any(parts):
            return None  # Patient.address carries the period
        period = {k: d.isoformat() for k, d in (("start", start), ("end", end)) if d is not None}
        return period or None

    def reverse(period: Any, _drop: Drop) -> tuple[Any, ...]:
        start = parse_date(period["start"]) if period.get("start") else None
        end = parse_date(period["end"]) if period.get("end") else None
        return (*(None,) * 8, start, end)
    return Transform(forward, reverse)


def child_address(env: Env, value: Sequence[Any]) -> list[dict[str, Any]] | None:
    """Return Patient.address for (status, 7 BS7666 parts, start, end)."""
    status, *parts, start, end = value
    if status not in ("current", "last-known"):
        return None
    address = bs7666_address(env, parts)
    if address is None:
        return None
    address["use"] = "home" if status == "current" else "old"
    if start is not None or end is not None:
        period: dict[str, str] = {}
        if start is not None:
            period["start"] = start.isoformat()
        if end is not None:
            period["end"] = end.isoformat()
        address["period"] = period
    return [address]


def read_child_address(env: Env, addresses: Any, drop: Drop) -> tuple[Any, ...]:
    """Return (status, 7 parts, start, end) from Patient.address: the home address first."""
    chosen = next((i for i, a in enumerate(addresses) if a.get("use") == "home"), 0)
    for index in range(len(addresses)):
        if index != chosen:
            drop((index,))
    address = addresses[chosen]
    parts = read_bs7666(env, address, lambda sub: drop((chosen, *sub)),
                        _ADDRESS_KEYS | {"use", "period"})
    period = address.get("period") or {}
    start = parse_date(period["start"]) if period.get("start") else None
    end = parse_date(period["end"]) if period.get("end") else None
    status = "last-known" if address.get("use") == "old" else "current"
    return (status, *parts, start, end)


# --- references ---------------------------------------------------------------------------

def organisation_code(org: Organisation) -> str:
    """Return an organisation's natural code (``identity.organisation_code``), "" without."""
    found = identity.organisation_code_column(org)
    return found[1] if found else ""


def organisation_identifier(env: Env, org: Organisation) -> dict[str, str]:
    """Return the Identifier of an organisation's natural key."""
    if org.ods_code:
        return {"system": systems.ODS_CODE, "value": org.ods_code}
    if org.urn:
        return {"system": env.own.school_urn, "value": org.urn}
    return {"system": env.own.gss_code, "value": org.gss_code or ""}


def organisation_reference(env: Env, org: Organisation) -> dict[str, Any]:
    """Return a Reference to an Organization with its natural key and name."""
    return {"reference": f"Organization/{org.resource_id}",
            "identifier": organisation_identifier(env, org), "display": org.name}


def authority_reference(env: Env, org: Organisation) -> dict[str, Any]:
    """Return a Reference to a local authority keyed by its GSS code (docs/domain.md)."""
    return {"reference": f"Organization/{org.resource_id}",
            "identifier": {"system": env.own.gss_code, "value": org.gss_code},
            "display": org.name}


def reference_type(reference: Any) -> str | None:
    """Return the resource type a Reference names, when it can be told without resolving it:
    the type of a literal relative or absolute reference, else ``Reference.type`` (FHIR R4
    references.html#Reference). A contained (``#id``) or ``urn:`` reference gives None."""
    if not isinstance(reference, dict):
        return None
    literal = reference.get("reference")
    if isinstance(literal, str) and not literal.startswith(("urn:", "#")):
        match = _REFERENCE.fullmatch(literal)
        return match.group(1) if match else None
    kind = reference.get("type")
    return kind.rsplit("/", 1)[-1] if isinstance(kind, str) and kind else None


def reference_id(reference: Any, resource_type: str) -> str | None:
    """Return the logical id of a literal reference to ``resource_type``, if it has one.

    :raises ValueNotAccepted: the reference points at another resource type.
    """
    if not isinstance(reference, str) or reference.startswith(("urn:", "#")):
        return None
    match = _REFERENCE.fullmatch(reference)
    if match is None or match.group(1) != resource_type:
        raise ValueNotAccepted(f"a reference to a {resource_type} is needed")
    return match.group(2)


def organisation_for_code(code: str, field: str = "identifier") -> Organisation:
    """Return a transient Organisation keyed by a GSS code, school URN or ODS code.

    :raises InvalidIdentifier: the code is none of them.
    """
    if re.fullmatch(r"E\d{8}", code):
        return Organisation(gss_code=identifiers.validate_gss_code(code, field))
    if re.fullmatch(r"\d{6}", code):
        return Organisation(urn=identifiers.validate_urn(code, field))
    return Organisation(ods_code=identifiers.validate_ods_code(code, field))


def read_organisation(env: Env, reference: Any, drop: Drop) -> Organisation:
    """Return a transient Organisation from a Reference (natural key and/or logical id).

    :raises ValueNotAccepted: neither a relative reference nor a known identifier system.
    """
    _drop_other_keys(reference, frozenset({"reference", "identifier", "display", "type"}), drop)
    org = _organisation_key(env, reference.get("identifier") or {}, drop)
    org.resource_id = reference_id(reference.get("reference"), "Organization")  # type: ignore[assignment]
    if not (org.resource_id or org.ods_code or org.urn or org.gss_code):
        raise ValueNotAccepted("an Organization reference needs 'Organization/<id>' or an "
                               "identifier (ODS code, school URN or GSS code)")
    return org


def _organisation_key(env: Env, identifier: Any, drop: Drop) -> Organisation:
    """Return a transient Organisation carrying the key of a reference's identifier."""
    system, value = identifier.get("system"), identifier.get("value")
    if system == systems.ODS_CODE and value:
        return Organisation(ods_code=identifiers.validate_ods_code(value, "identifier"))
    if system == env.own.school_urn and value:
        return Organisation(urn=identifiers.validate_urn(value, "identifier"))
    if system == env.own.gss_code and value:
        return Organisation(gss_code=identifiers.validate_gss_code(value, "identifier"))
    if identifier:
        drop(("identifier",))
    return Organisation()


@transform("organisation_reference")
def _organisation_reference(env: Env) -> Transform:
    """An organisation as a Reference(Organization) keyed by ODS code, URN or GSS code."""
    return Transform(lambda org: organisation_reference(env, org) if org is not None else None,
                     lambda reference, drop: read_organisation(env, reference, drop))


@transform("authority_reference")
def _authority_reference(env: Env) -> Transform:
    """The managing local authority as a Reference(Organization) keyed by GSS code."""
    return Transform(lambda org: authority_reference(env, org),
                     lambda reference, drop: read_organisation(env, reference, drop))


@transform("authority_references")
def _authority_references(env: Env) -> Transform:
    """The managing local authority as a list of one Reference; others are not kept."""
    def reverse(references: Any, drop: Drop) -> Organisation:
        for index in range(1, len(references)):
            drop((index,))
        return read_organisation(env, references[0], lambda sub: drop((0, *sub)))
    return Transform(lambda org: [authority_reference(env, org)], reverse)


def _local_out(env: Env, value: tuple[Organisation, str]) -> dict[str, Any]:
    """Return the local identifier of (organisation, value), with ``assigner``."""
    org, local = value
    return {"system": env.own.local_id(organisation_code(org)), "value": local,
            "assigner": organisation_reference(env, org)}


def _local_in(env: Env, identifier: Any, drop: Drop) -> tuple[Organisation, str]:
    """Return (organisation, value) of a local identifier; the organisation comes from the
    system (``assigner`` repeats it)."""
    _drop_other_keys(identifier, frozenset({"system", "value", "assigner"}), drop)
    return _read_local(env, identifier)


@transform("local_identifier")
def _local_identifier(env: Env) -> Transform:
    """(organisation, value): an identifier of the organisation's own local system."""
    return Transform(lambda value: _local_out(env, value),
                     lambda identifier, drop: _local_in(env, identifier, drop))


@transform("local_identifiers")
def _local_identifiers(env: Env) -> Transform:
    """(organisation, value) as a list of one local identifier; others are not kept."""
    prefix = env.own.local_id("")

    def reverse(items: Any, drop: Drop) -> tuple[Organisation, str]:
        chosen = next((i for i, item in enumerate(items)
                       if str(item.get("system", "")).startswith(prefix)), None)
        for index in range(len(items)):
            if index != chosen:
                drop((index,))
        if chosen is None:
            raise ValueNotAccepted("an identifier of an organisation's local system is needed")
        return _local_in(env, items[chosen], lambda sub: drop((chosen, *sub)))
    return Transform(lambda value: [_local_out(env, value)], reverse)


def _read_local(env: Env, identifier: Any) -> tuple[Organisation, str]:
    """Return (organisation, value) of a local identifier.

    :raises ValueNotAccepted: not a local identifier system or no value.
    """
    prefix = env.own.local_id("")
    system, value = str(identifier.get("system", "")), identifier.get("value")
    if not system.startswith(prefix) or len(system) == len(prefix) or not value:
        raise ValueNotAccepted("a local identifier needs the system <base>/Id/local/<code>")
    return organisation_for_code(system[len(prefix):], "identifier.system"), str(value)


# What a Practitioner must be identified by (FHIR R4 Practitioner.identifier; UK Core leaves it
# unsliced): an employer's staff id, or a national number (adapter/systems.py).
PRACTITIONER_ID_NEEDED: Final = (
    "an identifier of an organisation's local system (<base>/Id/local/<organisation code>) "
    "or a national one is needed: GMC, GMP, NMC, HCPC or GPhC number "
    "(https://fhir.hl7.org.uk/Id/<gmc|gmp|nmc|hcpc|gphc>-number) or SDS user id "
    "(https://fhir.nhs.uk/Id/sds-user-id)")


def national_identifier(identifier: Any, where: str) -> PractitionerIdentifier | None:
    """Return the national identifier an Identifier gives (None: not a national system).

    :raises ValueNotAccepted: a national system with a value not in its format.
    """
    system = str(identifier.get("system", ""))
    kind = systems.PRACTITIONER_SYSTEMS.get(system)
    if kind is None:
        return None
    value = identifier.get("value")
    try:
        identifiers.validate_practitioner_number(kind, str(value or ""))
    except identifiers.InvalidIdentifier as exc:
        raise ValueNotAccepted(f"{where} ({system}): {exc.reason}") from None
    return PractitionerIdentifier(system=system, value=str(value))


def national_identifiers_out(person: Practitioner) -> list[dict[str, str]]:
    """Return a practitioner's national identifiers in PRACTITIONER_SYSTEMS order."""
    order = list(systems.PRACTITIONER_SYSTEMS)
    return [{"system": system, "value": value} for system, value in
            sorted(person.national_ids(), key=lambda pair: (order.index(pair[0]), pair[1]))]


def _dropper(drop: Drop, index: int) -> Drop:
    """Return ``drop`` for paths inside list item ``index``."""
    return lambda path: drop((index, *path))


@transform("practitioner_identifiers")
def _practitioner_identifiers(env: Env) -> Transform:
    """(organisation, local_id, identifiers): the employer's staff id (with ``assigner``) and
    the national identifiers; other identifiers, and a second local one, are not kept."""
    prefix = env.own.local_id("")

    def forward(value: tuple[Organisation | None, str | None, list[PractitionerIdentifier]],
                ) -> list[dict[str, Any]]:
        org, local, national = value
        out = [_local_out(env, (org, local))] if org is not None and local else []
        order = list(systems.PRACTITIONER_SYSTEMS)
        out += [{"system": i.system, "value": i.value}
                for i in sorted(national, key=lambda i: (order.index(i.system), i.value))]
        return out

    def reverse(items: Any, drop: Drop,
                ) -> tuple[Organisation | None, str | None, list[PractitionerIdentifier]]:
        local: tuple[Organisation, str] | None = None
        national: dict[str, PractitionerIdentifier] = {}
        for index, item in enumerate(items):
            sub = _dropper(drop, index)
            if local is None and str(item.get("system", "")).startswith(prefix):
                local = _local_in(env, item, sub)
                continue
            found = national_identifier(item, f"item {index + 1}")
            if found is None:
                drop((index,))
                continue
            _drop_other_keys(item, frozenset({"system", "value"}), sub)
            known = national.get(found.system)
            if known is not None and known.value != found.value:
                raise ValueNotAccepted(f"item {index + 1} ({found.system}): a practitioner has "
                                       "one number of each system; two different ones given")
            national[found.system] = found
        if local is None and not national:
            raise ValueNotAccepted(PRACTITIONER_ID_NEEDED)
        org, staff_id = local if local is not None else (None, None)
        return org, staff_id, list(national.values())
    return Transform(forward, reverse)


@transform("practitioner_reference")
def _practitioner_reference(env: Env) -> Transform:
    """A practitioner as a Reference(Practitioner) keyed by organisation code and local id."""
    def forward(person: Practitioner | None) -> dict[str, Any] | None:
        if person is None:
            return None
        return {"reference": f"Practitioner/{person.resource_id}",
                "identifier": practitioner_key_identifier(env, person),
                "display": person_display(person.title, person.given, person.family)}

    return Transform(forward, lambda reference, drop: read_practitioner(env, reference, drop))


def read_practitioner(env: Env, reference: Any, drop: Drop) -> Practitioner:
    """Return a transient Practitioner from a Reference (logical id and/or local identifier).

    :raises ValueNotAccepted: neither ``Practitioner/<id>`` nor a local identifier.
    """
    _drop_other_keys(reference, frozenset({"reference", "identifier", "display", "type"}), drop)
    rid = reference_id(reference.get("reference"), "Practitioner")
    if "identifier" not in reference:
        if rid is None:
            raise ValueNotAccepted("a Practitioner reference needs 'Practitioner/<id>' or "
                                   "an identifier of its organisation's local system")
        return Practitioner(resource_id=rid)
    return practitioner_by_identifier(env, rid, reference["identifier"])


def practitioner_key_identifier(env: Env, person: Practitioner) -> dict[str, str] | None:
    """Return the identifier a reference to ``person`` carries: the employer's staff id, else
    the first national identifier."""
    if person.organisation is not None and person.local_id:
        return {"system": env.own.local_id(organisation_code(person.organisation)),
                "value": person.local_id}
    national = national_identifiers_out(person)
    return national[0] if national else None


def practitioner_by_identifier(env: Env, rid: str | None, identifier: Any) -> Practitioner:
    """Return a transient Practitioner from a reference's identifier: an employer's staff id
    or a national identifier (the service layer finds the practitioner holding it).

    :raises ValueNotAccepted: neither, or a national number not in its format.
    """
    if not isinstance(identifier, dict):
        raise ValueNotAccepted("a Practitioner reference's identifier must be an Identifier")
    national = national_identifier(identifier, "identifier")
    if national is not None:
        return Practitioner(resource_id=rid, identifiers=[national])
    if not str(identifier.get("system", "")).startswith(env.own.local_id("")):
        raise ValueNotAccepted(PRACTITIONER_ID_NEEDED)
    org, local = _read_local(env, identifier)
    return Practitioner(resource_id=rid, organisation=org, local_id=local)


@transform("patient_reference")
def _patient_reference(env: Env) -> Transform:
    """(resource_id, contactpoint_id, names): the child's Reference(Patient)."""
    def forward(value: tuple[str, str, Sequence[ChildName]]) -> dict[str, Any]:
        rid, cpid, names = value
        return patient_reference(env, rid, cpid, current_name(names))

    def reverse(reference: Any, drop: Drop) -> tuple[str | None, str | None, None]:
        child = read_patient(env, reference, drop)
        return child.resource_id, child.contactpoint_id, None
    return Transform(forward, reverse)


@transform("child_reference")
def _child_reference(env: Env) -> Transform:
    """The child of a record as a Reference(Patient); in: a transient Child with its keys."""
    def forward(child: Child) -> dict[str, Any]:
        return patient_reference(env, child.resource_id, child.contactpoint_id,
                                 current_name(child.names))
    return Transform(forward, lambda reference, drop: read_patient(env, reference, drop))


def patient_reference(env: Env, rid: str, cpid: str, display: str | None) -> dict[str, Any]:
    """Return a Reference to a child's Patient with the ContactPoint ID as identifier."""
    reference: dict[str, Any] = {"reference": f"Patient/{rid}",
                                 "identifier": {"system": env.own.contactpoint_id, "value": cpid}}
    if display:
        reference["display"] = display
    return reference


def read_patient(env: Env, reference: Any, drop: Drop) -> Child:
    """Return a transient Child carrying the logical id and ContactPoint ID of a reference.

    :raises ValueNotAccepted: the reference carries neither.
    """
    _drop_other_keys(reference, frozenset({"reference", "identifier", "display", "type"}), drop)
    child = Child(resource_id=reference_id(reference.get("reference"), "Patient"))
    identifier = reference.get("identifier") or {}
    if identifier.get("system") == env.own.contactpoint_id and identifier.get("value"):
        child.contactpoint_id = identifiers.validate_contactpoint_id(identifier["value"],
                                                                     "identifier")
    elif identifier:
        drop(("identifier",))
    if not (child.resource_id or child.contactpoint_id):
        raise ValueNotAccepted("a Patient reference needs 'Patient/<id>' or the ContactPoint ID")
    return child


# CareTeam participants. FHIR R4 careteam.html, invariant ctm-1 (error) on CareTeam.participant:
# onBehalfOf.exists() implies (member.resolve().iif(empty(), true, ofType(Practitioner).exists()))
# -- onBehalfOf only when the member is a Practitioner. Our members are PractitionerRoles, which
# carry their organization, so no participant written here has onBehalfOf; inbound, another
# system's Practitioner member is read with the onBehalfOf beside it
# (adapter/mapping/participants.py).

@transform("participant_member")
def _participant_member(env: Env) -> Transform:
    """(resource_id, practitioner, organisation): out, the Reference(PractitionerRole) an
    involvement or team member is published as; in, its logical id, or the practitioner of
    another system's Practitioner member (whose organisation is the participant's onBehalfOf)."""
    def forward(value: tuple[str, Practitioner | None, Organisation]) -> dict[str, str]:
        rid, person, org = value
        return role_member(rid, person, org)

    def reverse(reference: Any, drop: Drop) -> tuple[str | None, Practitioner | None, None]:
        role_id, person = read_member(env, reference, drop)
        return role_id, person, None
    return Transform(forward, reverse)


def role_member(role_id: str, person: Practitioner | None, org: Organisation) -> dict[str, str]:
    """Return a participant's member: the Reference to its PractitionerRole, with who it is."""
    return {"reference": f"PractitionerRole/{role_id}", "display": member_display(person, org)}


def read_member(env: Env, reference: Any, drop: Drop) -> tuple[str | None, Practitioner | None]:
    """Return (PractitionerRole id, practitioner) of a participant's member: a PractitionerRole
    gives its logical id, a Practitioner the transient practitioner; a member that gives
    neither (a contained Practitioner, a ``urn:`` reference) is not kept.

    :raises ValueNotAccepted: a member of another resource type.
    """
    kind = reference_type(reference)
    if kind == "Practitioner":
        return None, read_practitioner(env, reference, drop)
    if kind not in (None, "PractitionerRole"):
        raise ValueNotAccepted("the member must be a PractitionerRole (or, with onBehalfOf, "
                               "a Practitioner)")
    role_id = reference_id(reference.get("reference"), "PractitionerRole")
    if role_id is None:
        drop(())
    else:
        _drop_other_keys(reference, frozenset({"reference", "display", "type"}), drop)
    return role_id, None


def member_display(person: Practitioner | None, org: Organisation) -> str:
    """Return who a role is: "<practitioner>, <organisation>" or the organisation."""
    if person is None:
        return org.name
    return f"{person_display(person.title, person.given, person.family)}, {org.name}"


@transform("lead_participant")
def _lead_participant(env: Env) -> Transform:
    """(assessment_id, lead practitioner, lead organisation, lead_role_id): the eCAF lead
    professional as a CareTeam participant, its member the lead's PractitionerRole (no
    onBehalfOf: ctm-1). In: the member's PractitionerRole id (``lead_role_id``), or the
    practitioner of a Practitioner member and the organisation of ``onBehalfOf``."""
    def forward(value: tuple[str, Practitioner | None, Organisation, str | None]
                ) -> dict[str, Any]:
        assessment_id, person, org, _role_id = value
        return {"role": [team_role(env, "lead-professional")],
                "member": role_member(identity.lead_role_id(assessment_id), person, org)}

    def reverse(participant: Any, drop: Drop
                ) -> tuple[None, Practitioner | None, Organisation | None, str | None]:
        _drop_other_keys(participant, frozenset({"role", "member", "onBehalfOf"}), drop)
        role_id, person = (None, None)
        if "member" in participant:
            role_id, person = read_member(env, participant["member"],
                                          lambda sub: drop(("member", *sub)))
        org = None
        if "onBehalfOf" in participant:
            org = read_organisation(env, participant["onBehalfOf"],
                                    lambda sub: drop(("onBehalfOf", *sub)))
        return None, person, org, role_id
    return Transform(forward, reverse)
