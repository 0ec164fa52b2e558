"""Fictional children's directory entries: names, identifiers, address, carers, involvements,
eCAF assessment references, as rows ready for a bulk insert.

Rates follow the shape of the directory (docs/domain.md): most children have a school and a GP, a
minority have other practitioners, a few percent a sensitive service, 1-2% are shielded, some
5-10% have an eCAF assessment. Rare cases come from a quota per block of children rather than a
coin toss, so that every few hundred children contain each of them (the tests rely on it) while
the rates stay realistic. Every value derives from the seed and the pre-assigned row ids: the
same seed gives the same rows.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from dataclasses import dataclass, field
from random import Random
from typing import Any, Final

from adapter import codes, identity
from adapter.demo.names import (
    HOUSE_NAMES,
    NameLists,
    mobile_number,
    personal_email,
    postcode,
    street_name,
)
from adapter.demo.world import Authority, Service
from adapter.identifiers import (
    make_contactpoint_id,
    make_test_nhs_number,
    make_upn,
    nhs_number_check_digit,
)
from adapter.models.canonical import FAMILY_NORM_LENGTH, GIVEN_NORM_LENGTH, normalise_name
from adapter.retention import add_years, record_status_on, retention_date

# The day the demo directory is "as at": fixed, so that the data never depends on the clock.
REFERENCE_DATE: Final = dt.date(2026, 9, 1)
# Half of the never-issued 999 range's serials (a million 6-digit serials): see nhs_number_for.
NHS_SERIALS: Final = 500_000
TABLES: Final = ("child", "child_name", "local_identifier", "carer", "involvement",
                 "assessment", "team_member")

# Rare cases per block of BLOCK children. Profiles and eCAF statuses take distinct children.
BLOCK: Final = 400
PROFILE_QUOTAS: Final = (("extended", 4), ("aged-out", 3), ("deceased-live", 1),
                         ("deceased-archived", 1))
ECAF_QUOTAS: Final = (("draft", 5), ("in-progress", 10), ("completed", 8), ("closed", 5))
FEATURE_QUOTAS: Final = (("shielded", 6), ("former-name", 20), ("sensitive", 14),
                         ("last-known", 2), ("none-known", 1), ("left-england", 2))

# Further involvements per child beyond school and GP (0-6), and how common each role is:
# the universal health services most, social care for a few percent of children (DfE
# "Characteristics of children in need": about 3% are children in need).
FURTHER_WEIGHTS: Final = (60, 22, 10, 4, 2, 1, 1)
ROLE_WEIGHTS: Final = {"health-visitor": 30, "school-nurse": 20, "early-help": 10,
                       "social-worker": 8, "connexions": 8, "other": 8, "education-welfare": 6,
                       "youth-offending": 3}
# Roles that can lead a Team Around the Child (the CAF lead professional).
LEAD_ROLES: Final = ("early-help", "school-nurse", "health-visitor", "education-welfare",
                     "social-worker", "education")

# Households: carers' relationships and how common each shape is.
HOUSEHOLDS: Final = (
    (("mother", "father"), 45), (("mother",), 22), (("father",), 3),
    (("mother", "step-father"), 6), (("father", "step-mother"), 2),
    (("mother", "father", "grandparent"), 5), (("mother", "grandparent"), 3),
    (("grandparent", "grandparent"), 2), (("special-guardian",), 1),
    (("foster-carer", "foster-carer", "local-authority"), 2),
    (("foster-carer", "local-authority"), 1), (("adoptive-parent", "adoptive-parent"), 2),
    (("mother", "father", "step-mother", "step-father"), 1), (("guardian",), 1),
    (("other-relative",), 1), (("sibling",), 1),
)
HOUSEHOLD_SHAPES: Final = tuple(shape for shape, _ in HOUSEHOLDS)
HOUSEHOLD_CUM_WEIGHTS: Final = tuple(itertools.accumulate(weight for _, weight in HOUSEHOLDS))
# Who has parental responsibility (Children Act 1989 ss. 2-4A, 14C, 33): probability.
PARENTAL_RESPONSIBILITY: Final = {
    "mother": 1.0, "father": 0.9, "step-mother": 0.15, "step-father": 0.15,
    "adoptive-parent": 1.0, "special-guardian": 1.0, "guardian": 1.0, "local-authority": 1.0,
}
_TITLES: Final = {"mother": ("Mrs", "Ms", "Miss"), "father": ("Mr",), "step-mother": ("Mrs", "Ms"),
                  "step-father": ("Mr",)}
_FEMALE_RELATIONS: Final = ("mother", "step-mother")
_MALE_RELATIONS: Final = ("father", "step-father")


def contactpoint_number(child_id: int) -> int:
    """Return a 40-bit number for a child id: a bijection, so distinct ids give distinct ids."""
    x = (child_id * 0x9E3779B97 + 0x5DEECE66D) % (1 << 40)
    return x ^ (x >> 20)


def nhs_number_for(child_id: int) -> str | None:
    """Return a test NHS number (999 range) no other child id is given, or None.

    The directory holds one live entry per NHS number (docs/domain.md "The directory entry"),
    and the 999 range has a million serials, about 909,000 of them with a valid check digit.
    Ids 1 to 500,000 take even serials: when an even serial has no valid check digit the next
    (odd) one has, so ``make_test_nhs_number`` never gives two of them the same number. Ids
    500,001 to 1,000,000 take the odd serial after a valid even one (which the first half
    never takes), when it is valid itself: five in six of them get a number. Beyond that the
    range is used up.
    """
    serial = 2 * ((child_id * 7919 + 104729) % NHS_SERIALS)
    half = (child_id - 1) // NHS_SERIALS
    if half == 0:
        return make_test_nhs_number(serial)
    if half > 1 or nhs_number_check_digit(f"999{serial:06d}") is None:
        return None
    check = nhs_number_check_digit(f"999{serial + 1:06d}")
    return None if check is None else f"999{serial + 1:06d}{check}"


def between(rng: Random, start: dt.date, end: dt.date) -> dt.date:
    """Return a day from ``start`` to ``end`` inclusive (``start`` when the range is empty)."""
    days = (end - start).days
    return start + dt.timedelta(days=rng.randrange(days + 1)) if days > 0 else start


def age_on(birth: dt.date, day: dt.date) -> int:
    """Return the age in whole years on ``day``."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def school_year_start(day: dt.date) -> dt.date:
    """Return 1 September of the school year that ``day`` falls in."""
    return dt.date(day.year if day.month >= 9 else day.year - 1, 9, 1)


def academic_age(birth: dt.date, day: dt.date) -> int:
    """Return the age on the 31 August before the school year of ``day`` (DfE year groups)."""
    return age_on(birth, school_year_start(day) - dt.timedelta(days=1))


def timestamp(rng: Random, day: dt.date) -> dt.datetime:
    """Return a UTC time in office hours on ``day``."""
    start = dt.datetime.combine(day, dt.time(8, 0), tzinfo=dt.UTC)
    return start + dt.timedelta(seconds=rng.randrange(10 * 3600))


@dataclass
class Batch:
    """The rows of a batch of children, by table."""

    rows: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {table: [] for table in TABLES})


@dataclass
class Ids:
    """The next free primary key of every table (pre-assigned so that rows reference rows)."""

    next: dict[str, int]

    def take(self, table: str) -> int:
        """Return a fresh id for ``table``."""
        value = self.next[table]
        self.next[table] = value + 1
        return value


@dataclass
class Draft:
    """One child being generated: the facts later steps depend on."""

    id: int
    cpid: str
    authority: Authority
    tags: frozenset[str]
    birth: dt.date
    death: dt.date | None = None
    extended: str | None = None
    as_of: dt.date = REFERENCE_DATE
    gender: str = "9"
    family: str = ""
    home: dict[str, Any] = field(default_factory=dict)
    involvements: list[dict[str, Any]] = field(default_factory=list)
    # Each involvement's organisation code and staff id by row id: the rest of its natural
    # key (adapter.identity.involvement_key), which the row holds only as database ids.
    parties: dict[int, tuple[str, str]] = field(default_factory=dict)

    def role_id(self, row: dict[str, Any]) -> str:
        """Return the PractitionerRole id of involvement ``row``, by its natural key."""
        key = identity.involvement_key(row["role"], *self.parties[row["id"]],
                                       row["period_start"])
        return identity.involvement_role_id(self.cpid, key)

    @property
    def adult(self) -> bool:
        """Whether the entry is kept on past the 18th birthday (or archived after it)."""
        return age_on(self.birth, self.as_of) >= 18


class ChildFactory:
    """Generates children into batches, deterministic for a seed."""

    def __init__(self, rng: Random, ids: Ids, authorities: list[Authority],
                 names: NameLists) -> None:
        """Generate with ``rng`` into the authorities' services, taking keys from ``ids``."""
        self.rng, self.ids, self.names = rng, ids, names
        self.authorities = authorities
        # Larger and smaller authorities: weights 1, 2, 3 in turn (cumulated once: hot path).
        self.cum_weights = list(itertools.accumulate(1 + a.index % 3 for a in authorities))
        # Last UPN serial per cohort (authority, establishment, 2-digit year: UPN chars 2-10).
        self.upn_serials: Counter[str] = Counter()
        self.serial = 0
        self.block: dict[str, frozenset[int]] = {}

    def add(self, batch: Batch) -> None:
        """Generate one child and its rows into ``batch``."""
        draft = self._draft()
        names = self._names(draft)
        self._address(draft)
        child = self._child_row(draft)
        carers = self._carers(draft)
        self._involvements(draft)
        assessments, members = self._assessment(draft)
        batch.rows["child"].append(child)
        batch.rows["child_name"].extend(names)
        batch.rows["local_identifier"].extend(self._local_identifiers(draft))
        batch.rows["carer"].extend(carers)
        batch.rows["involvement"].extend(draft.involvements)
        batch.rows["assessment"].extend(assessments)
        batch.rows["team_member"].extend(members)

    # --- who the child is ------------------------------------------------------------------

    def _tags(self) -> frozenset[str]:
        """Return the rare cases this child carries, from the quotas of its block."""
        position = self.serial % BLOCK
        if position == 0:
            self.block = self._plan_block()
        self.serial += 1
        return frozenset(tag for tag, slots in self.block.items() if position in slots)

    def _plan_block(self) -> dict[str, frozenset[int]]:
        """Draw which children of the next block carry which rare case."""
        exclusive = [*PROFILE_QUOTAS, *ECAF_QUOTAS]
        slots = iter(self.rng.sample(range(BLOCK), sum(n for _, n in exclusive)))
        plan = {tag: frozenset(next(slots) for _ in range(n)) for tag, n in exclusive}
        for tag, n in FEATURE_QUOTAS:
            plan[tag] = frozenset(self.rng.sample(range(BLOCK), n))
        return plan

    def _draft(self) -> Draft:
        """Start a child: id, ContactPoint ID, authority, birth, death and retention profile."""
        tags = self._tags()
        child_id = self.ids.take("child")
        authority = self.rng.choices(self.authorities, cum_weights=self.cum_weights)[0]
        draft = Draft(id=child_id, cpid=make_contactpoint_id(contactpoint_number(child_id)),
                      authority=authority, tags=tags, birth=self._birth(tags))
        rng, ref = self.rng, REFERENCE_DATE
        if "extended" in tags:
            draft.extended = rng.choice(codes.EXTENDED_RETENTION_REASONS)
        elif "deceased-live" in tags:
            draft.death = between(rng, max(draft.birth, add_years(ref, -1) + dt.timedelta(1)),
                                  ref)
        elif "deceased-archived" in tags:
            # Died before 18, more than a year ago, and still within the six years of archive.
            draft.death = between(rng, max(draft.birth, add_years(ref, -6) + dt.timedelta(1)),
                                  min(add_years(draft.birth, 18) - dt.timedelta(1),
                                      add_years(ref, -1)))
        retention = retention_date(draft.birth, draft.death, draft.extended)
        draft.as_of = min(ref, draft.death or ref, retention - dt.timedelta(days=1))
        draft.gender = rng.choices(codes.GENDERS, weights=(490, 490, 15, 5))[0]
        return draft

    def _birth(self, tags: frozenset[str]) -> dt.date:
        """Return a birth date fitting the child's profile (0-17, 18-24, or aged out)."""
        ref, rng = REFERENCE_DATE, self.rng
        eighteen_ago = add_years(ref, -18)
        if "extended" in tags:
            return between(rng, add_years(ref, -25) + dt.timedelta(1), eighteen_ago)
        if "aged-out" in tags:
            return between(rng, add_years(ref, -24) + dt.timedelta(1), eighteen_ago)
        if "deceased-archived" in tags:
            return between(rng, add_years(ref, -20), add_years(ref, -1) - dt.timedelta(400))
        return between(rng, eighteen_ago + dt.timedelta(1), ref - dt.timedelta(1))

    def _names(self, draft: Draft) -> list[dict[str, Any]]:
        """Return the child's current name and, for some, a former one (before a change)."""
        rng = self.rng
        given = self._given_names(draft.gender)
        draft.family = self._family_name()
        span = (draft.as_of - draft.birth).days
        if "former-name" not in draft.tags or span < 2:
            return [self._name_row(draft, 0, "current", given, draft.family, None, None)]
        changed = draft.birth + dt.timedelta(days=rng.randrange(1, span + 1))
        former = self._family_name()
        return [self._name_row(draft, 0, "current", given, draft.family, changed, None),
                self._name_row(draft, 1, "former", given, former, draft.birth,
                               changed - dt.timedelta(days=1))]

    def _given_names(self, gender: str) -> list[str]:
        """Return one or two distinct given names fitting the stated gender."""
        names = self.names
        pool = names.female if gender == "2" else names.male if gender == "1" \
            else self.rng.choice((names.female, names.male))
        count = 1 if self.rng.random() < 0.6 else 2
        return list(dict.fromkeys(self.rng.choice(pool) for _ in range(count)))

    def _family_name(self) -> str:
        """Return a family name; a few are double-barrelled."""
        first = self.rng.choice(self.names.family)
        if self.rng.random() < 0.03:
            second = self.rng.choice(self.names.family)
            if second != first and len(first) + len(second) < 35:
                return f"{first}-{second}"
        return first

    def _name_row(self, draft: Draft, position: int, use: str, given: list[str], family: str,
                  start: dt.date | None, end: dt.date | None) -> dict[str, Any]:
        """Return a child_name row with its search keys (as every writer normalises them)."""
        return {"id": self.ids.take("child_name"), "child_id": draft.id, "position": position,
                "use": use, "title": None, "given": given, "family": family,
                "family_norm": normalise_name(family)[:FAMILY_NORM_LENGTH],
                "given_norm": normalise_name(" ".join(given))[:GIVEN_NORM_LENGTH],
                "period_start": start, "period_end": end}

    # --- where the child lives ---------------------------------------------------------------

    def _address_status(self, tags: frozenset[str]) -> str:
        """Return the address status: current for nearly all, a statement for a few."""
        if "last-known" in tags:
            return "last-known"
        if "none-known" in tags:
            return "none-known"
        if "left-england" in tags:
            return self.rng.choice(codes.ADDRESS_STATUSES[3:])
        return "current"

    def household_address(self, authority: Authority) -> dict[str, Any]:
        """Return the address columns of a home in ``authority``."""
        rng, place = self.rng, authority.place
        house = rng.random()
        return {
            "address_saon": f"Flat {rng.randrange(1, 40)}" if house < 0.12 else None,
            "address_paon": rng.choice(HOUSE_NAMES) if house > 0.96
            else str(rng.randrange(1, 220)),
            "address_street": street_name(rng, self.names),
            "address_locality": rng.choice(place.towns[1:]) if rng.random() < 0.3 else None,
            "address_town": place.towns[0],
            "address_postcode": postcode(rng, place.area, place.districts),
            "address_uprn": str(rng.randrange(10**10, 10**11)) if rng.random() < 0.7 else None,
        }

    def _address(self, draft: Draft) -> None:
        """Fill the child's address (or statement) and its period into ``draft.home``."""
        status = self._address_status(draft.tags)
        columns = self.household_address(draft.authority)
        start = end = None
        if self.rng.random() < 0.35:
            start = between(self.rng, draft.birth, draft.as_of)
        if status == "last-known":
            end = between(self.rng, start or draft.birth, draft.as_of)
        if status not in codes.ADDRESS_STATUSES_WITH_ADDRESS:
            columns = dict.fromkeys(columns)
            start = None
        draft.home = {"address_status": status, "address_start": start, "address_end": end,
                      **columns}

    # --- the entry --------------------------------------------------------------------------

    def _nhs(self, draft: Draft) -> tuple[str | None, str | None]:
        """Return the NHS number (most children) and its verification status."""
        if self.rng.random() >= 0.97:
            return None, None
        status = self.rng.choices(("01", "02", "03", None), weights=(90, 6, 2, 2))[0]
        number = nhs_number_for(draft.id)
        return number, (status if number else None)

    def _upn(self, draft: Draft) -> str | None:
        """Return a UPN for a child who reached reception class, from the first school."""
        reached = academic_age(draft.birth, draft.as_of)
        if reached < 4 or self.rng.random() >= 0.95:
            return None
        school = self.rng.choice(draft.authority.schools["primary"])
        year = (school_year_start(draft.as_of).year - (reached - 4)) % 100
        cohort = f"{draft.authority.la_number}{school.establishment}{year:02d}"
        self.upn_serials[cohort] += 1
        return make_upn(draft.authority.la_number, school.establishment, year,
                        self.upn_serials[cohort] % 1000)

    def _child_row(self, draft: Draft) -> dict[str, Any]:
        """Return the child row: identifiers, status, retention and timestamps."""
        rng = self.rng
        nhs, nhs_status = self._nhs(draft)
        retention = retention_date(draft.birth, draft.death, draft.extended)
        status = record_status_on(retention, REFERENCE_DATE)
        created = timestamp(rng, between(rng, max(draft.birth, draft.as_of - dt.timedelta(730)),
                                         draft.as_of))
        updated = timestamp(rng, retention) if status == "archived" else \
            max(created, timestamp(rng, between(rng, created.date(), REFERENCE_DATE)))
        return {"id": draft.id, "resource_id": identity.patient_id(draft.cpid),
                "careteam_id": identity.team_careteam_id(draft.cpid),
                "contactpoint_id": draft.cpid, "nhs_number": nhs, "nhs_number_status": nhs_status,
                "upn": self._upn(draft), "gender": draft.gender, "birth_date": draft.birth,
                "death_date": draft.death, "shielded": "shielded" in draft.tags,
                "record_status": status, "extended_retention": draft.extended,
                "retention_date": retention, "managing_organisation_id":
                draft.authority.organisation_id, "version": 1, "created": created,
                "last_updated": updated, **draft.home}

    # --- parents and carers -----------------------------------------------------------------

    def _relations(self, draft: Draft) -> tuple[str, ...]:
        """Return the carers' relationships: a household, or one carer for a young adult."""
        if draft.extended:
            # Kept on past 18: carers only (docs/domain.md), no parental responsibility.
            return ("foster-carer",) if draft.extended == "care-leaver" else \
                (self.rng.choice(("mother", "father")),)
        return self.rng.choices(HOUSEHOLD_SHAPES, cum_weights=HOUSEHOLD_CUM_WEIGHTS)[0]

    def _carers(self, draft: Draft) -> list[dict[str, Any]]:
        """Return 1-4 carer rows with relationship, responsibility and contact details."""
        rows = []
        for position, relation in enumerate(self._relations(draft)):
            row = self._carer_person(draft, relation)
            if draft.home["address_status"] in codes.ADDRESS_STATUSES_WITH_ADDRESS:
                lives_apart = relation == "father" and position > 0 and self.rng.random() < 0.15
                home = self.household_address(draft.authority) if lives_apart else draft.home
                row.update({k: v for k, v in home.items() if k.startswith("address_")
                            and k not in ("address_status", "address_start", "address_end")})
            adult = draft.extended is not None
            row.update({"id": self.ids.take("carer"), "child_id": draft.id,
                        "position": position, "relation": relation,
                        "parental_responsibility": not adult and
                        self.rng.random() < PARENTAL_RESPONSIBILITY.get(relation, 0.0)})
            rows.append(row)
        return rows

    def _carer_person(self, draft: Draft, relation: str) -> dict[str, Any]:
        """Return a carer's name and contact columns (the authority itself for a care order)."""
        empty = dict.fromkeys(("address_saon", "address_paon", "address_street",
                               "address_locality", "address_town", "address_postcode",
                               "address_uprn"))
        if relation == "local-authority":
            authority = draft.authority
            return {**empty, "title": None, "given": [], "family": f"{authority.base} Council",
                    "phone": authority.phone, "email": authority.email, **authority.address}
        rng = self.rng
        female = relation in _FEMALE_RELATIONS or (
            relation not in _MALE_RELATIONS and rng.random() < 0.6)
        given = rng.choice(self.names.female if female else self.names.male)
        same_family = relation in ("father", "mother") and rng.random() < 0.75
        family = draft.family if same_family else self._family_name()
        titles = _TITLES.get(relation, ("Ms", "Mrs") if female else ("Mr",))
        return {**empty, "title": rng.choice(titles) if rng.random() < 0.5 else None,
                "given": [given], "family": family,
                "phone": mobile_number(rng) if rng.random() < 0.9 else None,
                "email": personal_email(rng, given, family) if rng.random() < 0.6 else None}

    # --- services in contact ----------------------------------------------------------------

    def _involvements(self, draft: Draft) -> None:
        """Fill ``draft.involvements``: school, GP, further services, a sensitive one."""
        sensitive = "sensitive" in draft.tags
        needs_lead = any(status in draft.tags for status, _ in ECAF_QUOTAS)
        education = self._education(draft)
        if education:
            draft.involvements.append(education)
        if self.rng.random() < 0.97:
            practice = self.rng.choice(draft.authority.services["gp"])
            start = min(draft.as_of, draft.birth + dt.timedelta(days=self.rng.randrange(14, 60)))
            draft.involvements.append(self._involvement(draft, "gp", practice, start))
        further = self.rng.choices(range(len(FURTHER_WEIGHTS)), weights=FURTHER_WEIGHTS)[0]
        roles = self._further_roles(draft, min(further, 6 - sensitive - needs_lead))
        for role in roles:
            draft.involvements.append(self._further(draft, role))
        if sensitive:
            draft.involvements.append(self._sensitive(draft))
        if not needs_lead and roles and self.rng.random() < 0.3:
            draft.involvements[-1 - sensitive]["lead_professional"] = True

    def _education(self, draft: Draft) -> dict[str, Any] | None:
        """Return the involvement of the educational setting the child attends, if any."""
        phase, first_age = self._phase(draft)
        if phase is None:
            return None
        rng = self.rng
        reached = academic_age(draft.birth, draft.as_of)
        start = dt.date(school_year_start(draft.as_of).year - (reached - first_age), 9, 1)
        if rng.random() < 0.1:
            start = between(rng, start, draft.as_of)
        school = rng.choice(draft.authority.schools[phase])
        return self._involvement(draft, "education", school, min(start, draft.as_of),
                                 with_staff=rng.random() < 0.25)

    def _phase(self, draft: Draft) -> tuple[str | None, int]:
        """Return the setting's phase for the child's school year and the age it starts at."""
        if draft.adult:
            return None, 0
        reached, rng = academic_age(draft.birth, draft.as_of), self.rng
        if reached >= 4 and rng.random() < 0.015:
            return "special", 4
        if reached == 3:
            return ("nursery", 3) if rng.random() < 0.8 else (None, 0)
        if 4 <= reached <= 10 or 11 <= reached <= 15:
            if rng.random() >= 0.97:
                return None, 0
            return ("primary", 4) if reached <= 10 else ("secondary", 11)
        if reached >= 16:
            draw = rng.random()
            return ("college", 16) if draw < 0.45 else ("secondary", 11) if draw < 0.8 \
                else (None, 0)
        return None, 0

    def _further_roles(self, draft: Draft, count: int) -> list[str]:
        """Return ``count`` distinct non-sensitive roles the child's age admits (at most)."""
        age = age_on(draft.birth, draft.as_of)
        eligible = {"social-worker": True, "early-help": age < 18, "other": True,
                    "health-visitor": age < 5, "school-nurse": 5 <= age < 18,
                    "education-welfare": 5 <= age < 17, "youth-offending": 10 <= age < 18,
                    "connexions": 13 <= age < 25}
        pool = [r for r, ok in eligible.items() if ok]
        roles: list[str] = []
        while pool and len(roles) < count:
            role = self.rng.choices(pool, weights=[ROLE_WEIGHTS[r] for r in pool])[0]
            pool.remove(role)
            roles.append(role)
        return roles

    def _further(self, draft: Draft, role: str) -> dict[str, Any]:
        """Return an involvement of a further service, current or ended."""
        rng = self.rng
        service = rng.choice(draft.authority.services[role])
        start = between(rng, max(draft.birth, draft.as_of - dt.timedelta(days=4 * 365)),
                        draft.as_of)
        row = self._involvement(draft, role, service, start, with_staff=rng.random() < 0.85)
        if rng.random() < 0.2:
            row["period_end"] = between(rng, start, draft.as_of)
        return row

    def _sensitive(self, draft: Draft) -> dict[str, Any]:
        """Return a sensitive service's involvement, always with its basis (docs/domain.md)."""
        age = age_on(draft.birth, draft.as_of)
        roles = [r for r, ok in (("camhs", age < 18), ("substance-misuse", age >= 11),
                                 ("sexual-health", age >= 13)) if ok]
        role = self.rng.choice(roles)
        row = self._further(draft, role)
        row["sensitive"] = True
        # Gillick competence: most young people of 13 and over consent for themselves.
        bases = ("child-consent", "carer-consent", "significant-harm")
        weights = (70, 20, 10) if age >= 13 else (0, 80, 20)
        row["consent_basis"] = self.rng.choices(bases, weights=weights)[0]
        return row

    def _involvement(self, draft: Draft, role: str, service: Service, start: dt.date, *,
                     with_staff: bool = True) -> dict[str, Any]:
        """Return an involvement row of ``service`` (with a practitioner if ``with_staff``)."""
        position = len(draft.involvements)
        staff = self.rng.choice(service.staff) if with_staff and service.staff else None
        row_id = self.ids.take("involvement")
        draft.parties[row_id] = (service.code, staff.local_id if staff else "")
        row = {"id": row_id, "child_id": draft.id, "position": position, "role": role,
                "organisation_id": service.organisation_id,
                "practitioner_id": staff.id if staff else None, "sensitive": False,
                "consent_basis": None, "lead_professional": False, "caf_completed": False,
                "period_start": start, "period_end": None,
                "phone": staff.phone if staff else service.phone,
                "email": staff.email if staff else service.email}
        row["resource_id"] = draft.role_id(row)
        return row

    def _local_identifiers(self, draft: Draft) -> list[dict[str, Any]]:
        """Return case ids of social care, youth justice and early help for their children."""
        prefixes = {"social-worker": "SC", "youth-offending": "YJ", "early-help": "EH"}
        # One case id per organisation, even when it works with the child twice.
        keys = {(i["organisation_id"], f"{prefixes[i['role']]}{draft.id:07d}"): None
                for i in draft.involvements if i["role"] in prefixes}
        return [{"id": self.ids.take("local_identifier"), "child_id": draft.id,
                 "organisation_id": org_id, "value": value} for org_id, value in keys]

    # --- eCAF ---------------------------------------------------------------------------------

    def _lead(self, draft: Draft) -> dict[str, Any]:
        """Return the involvement that leads the Team Around the Child (added if none can)."""
        candidates = [i for i in draft.involvements if i["role"] in LEAD_ROLES
                      and i["practitioner_id"] is not None and i["period_end"] is None]
        if candidates:
            return self.rng.choice(candidates)
        service = self.rng.choice(draft.authority.services["early-help"])
        start = between(self.rng, max(draft.birth, draft.as_of - dt.timedelta(365)), draft.as_of)
        lead = self._involvement(draft, "early-help", service, start)
        while any(i["resource_id"] == lead["resource_id"] for i in draft.involvements):
            # An earlier early-help episode with this service, worker and start: one
            # involvement per natural key (adapter.store.records.merge_keyed refuses two).
            step = dt.timedelta(days=1 if lead["period_start"] < draft.as_of else -1)
            lead["period_start"] += step
            lead["resource_id"] = draft.role_id(lead)
        draft.involvements.append(lead)
        return lead

    def _assessment(self, draft: Draft) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return the child's eCAF assessment reference and its team, if the child has one."""
        status = next((s for s, _ in ECAF_QUOTAS if s in draft.tags), None)
        if status is None:
            return [], []
        for involvement in draft.involvements:
            involvement["lead_professional"] = False
        lead = self._lead(draft)
        lead["lead_professional"] = True
        lead["caf_completed"] = status in ("completed", "closed")
        row = self._assessment_row(draft, status, lead)
        return [row], self._team(draft, row, lead)

    def _assessment_dates(self, draft: Draft, status: str) -> dict[str, dt.date | None]:
        """Return started, completed and closed dates in order, none after ``as_of``."""
        rng, as_of = self.rng, draft.as_of
        earliest = min(as_of, draft.birth + dt.timedelta(days=7))
        window = 90 if status == "draft" else 3 * 365
        started = between(rng, max(earliest, as_of - dt.timedelta(days=window)), as_of)
        completed = closed = None
        if status in ("completed", "closed") and not (status == "closed" and rng.random() < 0.1):
            completed = between(rng, started, min(as_of, started + dt.timedelta(days=120)))
        if status == "closed":
            after = completed or started
            closed = between(rng, after, min(as_of, after + dt.timedelta(days=365)))
        return {"started_date": started, "completed_date": completed, "closed_date": closed}

    def _assessment_row(self, draft: Draft, status: str,
                        lead: dict[str, Any]) -> dict[str, Any]:
        """Return the assessment row led by the ``lead`` involvement."""
        pk = self.ids.take("assessment")
        assessment_id = f"ECAF-{draft.authority.la_number}-{pk:07d}"
        dates = self._assessment_dates(draft, status)
        last = max(d for d in dates.values() if d is not None)
        return {"id": pk, "resource_id": identity.ecaf_careteam_id(assessment_id),
                "lead_role_id": identity.lead_role_id(assessment_id),
                "assessment_id": assessment_id, "child_id": draft.id, "status": status,
                **dates, "lead_practitioner_id": lead["practitioner_id"],
                "lead_organisation_id": lead["organisation_id"],
                "consent_to_share": self.rng.random() < 0.92, "version": 1,
                "last_updated": timestamp(self.rng, last), "phone": lead["phone"],
                "email": lead["email"]}

    def _team(self, draft: Draft, assessment: dict[str, Any],
              lead: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the Team Around the Child: the lead, then up to three other services."""
        others = [i for i in draft.involvements if i is not lead and not i["sensitive"]]
        chosen = self.rng.sample(others, min(len(others), self.rng.randint(1, 3)))
        rows: list[dict[str, Any]] = []
        keys: set[str] = set()
        for member in [lead, *chosen]:
            key = identity.team_member_key(member["role"], *draft.parties[member["id"]])
            if key in keys:  # a member's key has no start date: one row per key, as stored
                continue
            keys.add(key)
            position = len(rows)
            rows.append({"id": self.ids.take("team_member"),
                         "resource_id": identity.member_role_id(assessment["assessment_id"], key),
                         "assessment_id": assessment["id"], "position": position,
                         "role": member["role"], "organisation_id": member["organisation_id"],
                         "practitioner_id": member["practitioner_id"],
                         "phone": member["phone"], "email": member["email"]})
        return rows
