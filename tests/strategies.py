"""Hypothesis strategies for valid, transient canonical objects (``adapter.models``).

Shared by the dialects' round-trip tests (directory XML, FHIR JSON and XML). Every object
obeys the model's CHECK constraints and the readers' rules: identifiers with valid check
digits, dates in order, sensitive roles flagged with a consent basis, local authorities with
GSS codes, GP practices with ODS practice codes, one description per organisation (a child's
parts share one pool of organisations and practitioners with distinct codes).

- ``children(...)``: a Child with names, local identifiers, carers, involvements and its
  managing authority; keyword arguments force a code (e.g. ``carer_relations=st.just("father"),
  min_carers=1``) so that tests can cover every value of a vocabulary.
- ``assessments(...)``: an Assessment with its child, lead professional and team members.
- ``organisations``, ``practitioners``, ``person_names``, ``phones``, ``emails``,
  ``postcodes``: the parts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from adapter import codes
from adapter.identifiers import (
    UPN_LETTERS,
    make_contactpoint_id,
    make_test_nhs_number,
    make_upn,
    upn_check_letter,
    validate_phone,
)
from adapter.models import (
    Assessment,
    Carer,
    Child,
    ChildName,
    Involvement,
    LocalIdentifier,
    Organisation,
    Practitioner,
    TeamMember,
)
from adapter.models.canonical import FAMILY_NORM_LENGTH, GIVEN_NORM_LENGTH, normalise_name

# Letters, marks, digits, punctuation, symbols and spaces: every XML 1.0 character that a
# name may hold, including the ones XML escapes (& < > " ') and ones outside the BMP.
_CHARS = st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S", "Zs"))
_ASCII_NAME = st.from_regex(r"[A-Z][a-z]{1,10}([ '-][A-Z][a-z]{1,10})?", fullmatch=True)
DATES = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2035, 12, 31))
TIMESTAMPS = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2035, 1, 1),
                          timezones=st.just(dt.UTC))


def texts(max_size: int) -> st.SearchStrategy[str]:
    """Text of 1..max_size characters on one line without surrounding spaces."""
    return st.text(_CHARS, min_size=1, max_size=max_size).map(lambda s: s.strip()).filter(bool)


def name_parts(max_size: int = 35) -> st.SearchStrategy[str]:
    """A name part: mostly plain names, sometimes any characters."""
    return st.one_of(_ASCII_NAME, texts(max_size))


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy`` or None."""
    return st.one_of(st.none(), strategy)


@st.composite
def periods(draw: st.DrawFn) -> tuple[dt.date | None, dt.date | None]:
    """A (start, end) period with either end open, the end not before the start."""
    start, end = draw(optional(DATES)), draw(optional(DATES))
    if start is not None and end is not None and end < start:
        start, end = end, start
    return start, end


@st.composite
def phones(draw: st.DrawFn) -> str:
    """A UK telephone number in one of its written forms (a fixed point of validate_phone)."""
    digits = draw(st.from_regex(r"0[1-9][0-9]{8,9}", fullmatch=True))
    form = draw(st.sampled_from(["plain", "grouped", "international", "bracketed"]))
    if form == "grouped":
        digits = f"{digits[:5]} {digits[5:]}"
    elif form == "international":
        digits = f"+44 {digits[1:5]} {digits[5:]}"
    elif form == "bracketed":
        digits = f"({digits[:3]}) {digits[3:7]}-{digits[7:]}"
    return validate_phone(digits)


emails = st.from_regex(
    r"[a-z0-9][a-z0-9._+-]{0,15}@[a-z0-9]{1,15}\.(org\.uk|nhs\.uk|gov\.uk|sch\.uk|com)",
    fullmatch=True)
postcodes = st.one_of(
    st.from_regex(r"[A-PR-UWYZ][0-9]{1,2} [0-9][ABD-HJLNP-UW-Z]{2}", fullmatch=True),
    st.from_regex(r"[A-PR-UWYZ][A-HK-Y][0-9]{1,2} [0-9][ABD-HJLNP-UW-Z]{2}", fullmatch=True),
    st.from_regex(r"[A-PR-UWYZ][0-9][A-HJKPS-UW] [0-9][ABD-HJLNP-UW-Z]{2}", fullmatch=True),
    st.from_regex(r"[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRV-Y] [0-9][ABD-HJLNP-UW-Z]{2}",
                  fullmatch=True),
    st.just("GIR 0AA"),
)


@st.composite
def addresses(draw: st.DrawFn) -> dict[str, str | None]:
    """The ``address_*`` columns of a BS7666 address, each part optional."""
    return {
        "address_saon": draw(optional(st.sampled_from(["Flat 1", "Flat 2B", "Unit 4"]))),
        "address_paon": draw(optional(st.one_of(st.integers(1, 400).map(str), texts(100)))),
        "address_street": draw(optional(st.one_of(_ASCII_NAME.map(lambda s: f"{s} Road"),
                                                  texts(100)))),
        "address_locality": draw(optional(texts(100))),
        "address_town": draw(optional(st.sampled_from(["Leeds", "Bristol", "Hull"]))),
        "address_postcode": draw(optional(postcodes)),
        "address_uprn": draw(optional(st.integers(1, 10**12 - 1).map(str))),
    }


@st.composite
def contacts(draw: st.DrawFn) -> dict[str, str | None]:
    """The ``phone`` and ``email`` columns, each optional."""
    return {"phone": draw(optional(phones())), "email": draw(optional(emails))}


@st.composite
def person_names(draw: st.DrawFn) -> dict[str, Any]:
    """``title``, ``given`` (0..5 names) and ``family`` of a PersonNameStructure."""
    return {"title": draw(optional(st.sampled_from(["Mr", "Mrs", "Ms", "Miss", "Dr", "Mx"]))),
            "given": draw(st.lists(name_parts(), max_size=5)),
            "family": draw(name_parts())}


# --- organisations and practitioners ---------------------------------------------------------

_LA_NUMBER = st.integers(201, 938).map(str)
# Types other than local authorities and GP practices, with the codes they may carry.
_OTHER_TYPES = ("school", "nursery", "college", "nhs-trust", "social-care", "youth-justice",
                "voluntary", "other")


def _codes_for(org_type: str, serial: int, variant: int) -> dict[str, str | None]:
    """Return distinct codes for the ``serial``-th organisation of a pool."""
    ods, urn = f"Y{serial:05d}", str(100000 + serial)
    if org_type == "local-authority":
        return {"gss_code": f"E{('06', '08', '09', '10')[variant % 4]}{serial:06d}"}
    if org_type == "gp-practice":
        return {"ods_code": f"{'ABCDFGHJKLMNP'[variant % 13]}{serial:05d}"}
    if org_type in ("school", "nursery", "college"):
        return {"urn": urn, "ods_code": ods if variant % 5 == 0 else None}
    if org_type == "nhs-trust":  # ODS codes of 3 to 6 characters
        return {"ods_code": f"R{serial:0{2 + variant % 4}d}"}
    return [{"ods_code": ods}, {"urn": urn}, {"ods_code": ods, "urn": urn}][variant % 3]


@st.composite
def organisations(draw: st.DrawFn, org_type: str | None = None,
                  serial: int | None = None) -> Organisation:
    """An Organisation of ``org_type`` (any) whose codes derive from ``serial`` (any)."""
    kind = org_type or draw(st.sampled_from(codes.ORGANISATION_TYPES))
    number = draw(st.integers(1, 99999)) if serial is None else serial
    data: dict[str, Any] = {"ods_code": None, "urn": None, "gss_code": None, "la_number": None}
    data.update(_codes_for(kind, number, draw(st.integers(0, 59))))
    if kind == "local-authority":
        data["la_number"] = draw(optional(_LA_NUMBER))
    data.update(draw(addresses()) if draw(st.booleans()) else dict.fromkeys(_ADDRESS_KEYS))
    data.update(draw(contacts()))
    return Organisation(name=draw(st.one_of(_ASCII_NAME.map(lambda s: f"{s} Service"),
                                            texts(200))), type=kind, **data)


_ADDRESS_KEYS = ("address_saon", "address_paon", "address_street", "address_locality",
                 "address_town", "address_postcode", "address_uprn")


@st.composite
def practitioners(draw: st.DrawFn, organisation: Organisation,
                  local_id: str | None = None) -> Practitioner:
    """A Practitioner employed by ``organisation``."""
    return Practitioner(local_id=local_id or draw(texts(64)), organisation=organisation,
                        **draw(person_names()), **draw(contacts()))


@dataclass
class Pool:
    """The organisations and practitioners one record's parts are drawn from."""

    authorities: list[Organisation]
    others: list[Organisation]
    practitioners: list[Practitioner] = field(default_factory=list)

    @property
    def organisations(self) -> list[Organisation]:
        """Every organisation of the pool."""
        return self.authorities + self.others


@st.composite
def pools(draw: st.DrawFn) -> Pool:
    """1-2 local authorities, 1-5 other organisations (distinct codes), 0-4 practitioners."""
    serials = draw(st.lists(st.integers(1, 99999), min_size=7, max_size=7, unique=True))
    authorities = [draw(organisations("local-authority", serials[i]))
                   for i in range(draw(st.integers(1, 2)))]
    kinds = draw(st.lists(st.sampled_from(("gp-practice", *_OTHER_TYPES)), min_size=1,
                          max_size=5))
    others = [draw(organisations(kind, serials[2 + i])) for i, kind in enumerate(kinds)]
    pool = Pool(authorities, others)
    employers = draw(st.lists(st.sampled_from(pool.organisations), max_size=4))
    ids = draw(st.lists(texts(64), min_size=len(employers), max_size=len(employers),
                        unique=True))
    pool.practitioners = [draw(practitioners(org, local_id))
                          for org, local_id in zip(employers, ids, strict=True)]
    return pool


# --- children --------------------------------------------------------------------------------

@st.composite
def upns(draw: st.DrawFn) -> str:
    """A permanent or temporary UPN with a valid check letter."""
    la, establishment = draw(_LA_NUMBER), f"{draw(st.integers(0, 9999)):04d}"
    year = draw(st.integers(0, 99))
    if draw(st.booleans()):
        return make_upn(la, establishment, year, draw(st.integers(0, 999)))
    body = f"{la}{establishment}{year:02d}{draw(st.integers(0, 99)):02d}"
    body += draw(st.sampled_from(UPN_LETTERS))
    return upn_check_letter(body) + body


@st.composite
def child_names(draw: st.DrawFn) -> list[ChildName]:
    """The current name, then 0-2 former names with periods."""
    names = []
    for position, use in enumerate(["current"] + ["former"] * draw(st.integers(0, 2))):
        parts = draw(person_names())
        start, end = draw(periods())
        names.append(ChildName(position=position, use=use, period_start=start, period_end=end,
                               family_norm=normalise_name(parts["family"])[:FAMILY_NORM_LENGTH],
                               given_norm=normalise_name(" ".join(parts["given"]))
                               [:GIVEN_NORM_LENGTH], **parts))
    return names


@st.composite
def carers(draw: st.DrawFn, relation: st.SearchStrategy[str], position: int) -> Carer:
    """A Carer with name, contact details and sometimes their own address."""
    address = draw(addresses()) if draw(st.booleans()) else dict.fromkeys(_ADDRESS_KEYS)
    return Carer(position=position, relation=draw(relation),
                 parental_responsibility=draw(st.booleans()), **draw(person_names()),
                 **draw(contacts()), **address)


@st.composite
def involvements(draw: st.DrawFn, pool: Pool, role: st.SearchStrategy[str],
                 position: int) -> Involvement:
    """An Involvement by an organisation of ``pool``, maybe with one of its practitioners."""
    kind = draw(role)
    practitioner = draw(optional(st.sampled_from(pool.practitioners))) \
        if pool.practitioners else None
    organisation = (practitioner.organisation if practitioner is not None and draw(st.booleans())
                    else draw(st.sampled_from(pool.organisations)))
    sensitive = kind in codes.SENSITIVE_ROLES or draw(st.integers(0, 9)) == 0
    start, end = draw(periods())
    return Involvement(
        position=position, role=kind, organisation=organisation, practitioner=practitioner,
        sensitive=sensitive,
        consent_basis=draw(st.sampled_from(codes.CONSENT_BASES)) if sensitive else None,
        lead_professional=draw(st.booleans()), caf_completed=draw(st.booleans()),
        period_start=start, period_end=end, **draw(contacts()))


@st.composite
def local_identifiers(draw: st.DrawFn, pool: Pool) -> list[LocalIdentifier]:
    """0-2 identifiers allocated by organisations of ``pool``, distinct per organisation."""
    items = draw(st.lists(st.tuples(st.sampled_from(pool.organisations), texts(64)),
                          max_size=2, unique_by=lambda item: (id(item[0]), item[1])))
    return [LocalIdentifier(organisation=org, value=value) for org, value in items]


def _identity(draw: st.DrawFn) -> dict[str, Any]:
    """Return the child's identifiers, gender and dates."""
    nhs_number = draw(optional(st.integers(0, 999_999).map(make_test_nhs_number)))
    # Births and deaths are never in the future (adapter/wellformed.py refuses them).
    today = dt.date.today() - dt.timedelta(days=1)  # yesterday: today anywhere on Earth
    birth = draw(st.dates(min_value=dt.date(1990, 1, 1), max_value=today))
    death = draw(optional(st.dates(min_value=birth, max_value=today)))
    return {
        "contactpoint_id": make_contactpoint_id(draw(st.integers(0, 2**40 - 1))),
        "nhs_number": nhs_number,
        "nhs_number_status": (draw(optional(st.sampled_from(codes.NHS_NUMBER_STATUSES)))
                              if nhs_number else None),
        "upn": draw(optional(upns())), "gender": draw(st.sampled_from(codes.GENDERS)),
        "birth_date": birth, "death_date": death,
    }


def _address(draw: st.DrawFn, statuses: st.SearchStrategy[str]) -> dict[str, Any]:
    """Return the child's address status, address (or none for a statement) and period."""
    status = draw(statuses)
    held = status in codes.ADDRESS_STATUSES_WITH_ADDRESS
    data: dict[str, Any] = draw(addresses()) if held else dict.fromkeys(_ADDRESS_KEYS)
    data["address_status"] = status
    data["address_start"], data["address_end"] = draw(periods())
    return data


_ALL_RELATIONS = st.sampled_from(codes.CARER_RELATIONSHIPS)
_ALL_ROLES = st.sampled_from(codes.INVOLVEMENT_ROLES)
_ALL_ADDRESS_STATUSES = st.sampled_from(codes.ADDRESS_STATUSES)
_ALL_ASSESSMENT_STATUSES = st.sampled_from(codes.ASSESSMENT_STATUSES)


@st.composite
def children_in(draw: st.DrawFn, pool: Pool, *,
                address_statuses: st.SearchStrategy[str] = _ALL_ADDRESS_STATUSES,
                carer_relations: st.SearchStrategy[str] = _ALL_RELATIONS, min_carers: int = 0,
                involvement_roles: st.SearchStrategy[str] = _ALL_ROLES,
                min_involvements: int = 0) -> Child:
    """A Child whose organisations and practitioners come from ``pool``."""
    child = Child(
        **_identity(draw), **_address(draw, address_statuses), shielded=draw(st.booleans()),
        record_status=draw(st.sampled_from(codes.RECORD_STATUSES)),
        extended_retention=draw(optional(st.sampled_from(codes.EXTENDED_RETENTION_REASONS))),
        retention_date=draw(DATES), managing_organisation=draw(st.sampled_from(pool.authorities)),
        version=draw(st.integers(1, 10_000)), last_updated=draw(TIMESTAMPS))
    child.names = draw(child_names())
    child.local_identifiers = draw(local_identifiers(pool))
    child.carers = [draw(carers(carer_relations, i))
                    for i in range(draw(st.integers(min_carers, max(min_carers, 3))))]
    child.involvements = [draw(involvements(pool, involvement_roles, i))
                          for i in range(draw(st.integers(min_involvements,
                                                          max(min_involvements, 4))))]
    return child


@st.composite
def children(draw: st.DrawFn, **options: Any) -> Child:
    """A valid transient Child with all its parts (options: see ``children_in``)."""
    return draw(children_in(draw(pools()), **options))


# --- eCAF assessment references ----------------------------------------------------------------

@st.composite
def assessment_dates(draw: st.DrawFn, status: str) -> dict[str, dt.date | None]:
    """Started, completed and closed dates that fit ``status`` (model CHECK constraints)."""
    started = draw(optional(DATES)) if status == "draft" else draw(DATES)
    later = st.dates(min_value=started or dt.date(1990, 1, 1), max_value=dt.date(2036, 12, 31))
    completed = draw(later) if status == "completed" else (
        draw(optional(later)) if status == "closed" else None)
    closed = draw(later) if status == "closed" else None
    return {"started_date": started, "completed_date": completed, "closed_date": closed}


@st.composite
def team_members(draw: st.DrawFn, pool: Pool, position: int) -> TeamMember:
    """A member of the Team Around the Child from ``pool``."""
    practitioner = draw(optional(st.sampled_from(pool.practitioners))) \
        if pool.practitioners else None
    organisation = (practitioner.organisation if practitioner is not None
                    else draw(st.sampled_from(pool.organisations)))
    return TeamMember(position=position, role=draw(_ALL_ROLES), organisation=organisation,
                      practitioner=practitioner, **draw(contacts()))


@st.composite
def assessments(draw: st.DrawFn,
                statuses: st.SearchStrategy[str] = _ALL_ASSESSMENT_STATUSES,
                min_members: int = 0) -> Assessment:
    """A valid transient Assessment with its child, lead professional and team members."""
    pool = draw(pools())
    status = draw(statuses)
    lead = draw(optional(st.sampled_from(pool.practitioners))) if pool.practitioners else None
    assessment = Assessment(
        assessment_id=draw(texts(64)), child=draw(children_in(pool)), status=status,
        **draw(assessment_dates(status)), consent_to_share=draw(st.booleans()),
        lead_organisation=lead.organisation if lead else draw(st.sampled_from(
            pool.organisations)),
        lead_practitioner=lead, version=draw(st.integers(1, 10_000)),
        last_updated=draw(TIMESTAMPS), **draw(contacts()))
    assessment.members = [draw(team_members(pool, i))
                          for i in range(draw(st.integers(min_members, max(min_members, 3))))]
    return assessment
