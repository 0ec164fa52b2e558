"""The fictional authorities of the demo data, with their schools, GP practices, NHS and council
services and practitioners.

An authority and everything in it depend only on its index (never on the seed), so that a second
``demo-data`` run finds and reuses the organisations of the first, and a demo client configured
for the first authority works with every seed. Codes are shaped like the real ones but drawn
from ranges that make them recognisably synthetic (GSS codes such as ``E06900001``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from random import Random
from typing import Any, Final

from adapter import identity
from adapter.demo.names import (
    DRAMA_LANDLINES,
    DRAMA_LONDON,
    NameLists,
    ascii_slug,
    name_lists,
    postcode,
    street_name,
)

MAX_AUTHORITIES: Final = 150
# Organisations and practitioners carry this fixed timestamp, so that reruns are identical.
WORLD_TIMESTAMP: Final = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)

_PREFIXES: Final = ("North", "South", "East", "West", "Ash", "Oak", "Elm", "Thorn", "Brook",
                    "Kings", "Hart", "Stan", "Bram", "Wren", "Alder", "Fern")
_SUFFIXES: Final = ("moor", "bridge", "ford", "wold", "dale", "field", "ham", "ley", "mere",
                    "wick", "bury", "ton", "combe", "stead")
# GSS entity codes of children's services authorities (docs/domain.md) and the name each kind takes.
_KINDS: Final[tuple[tuple[str, str], ...]] = (
    ("E06", "{} Council"), ("E08", "{} Metropolitan Borough Council"),
    ("E09", "London Borough of {}"), ("E10", "{} County Council"))
# Postcode letters: the first never Q, V, X; the second never I, J, Z (Royal Mail).
_AREA_FIRST: Final = "ABCDEFGHKLMNPRSTUWYZ"
_AREA_SECOND: Final = "ABCDEFGHKLMNPRSTUWY"
_TITLES: Final = {"female": ("Ms", "Mrs", "Miss", "Dr"), "male": ("Mr", "Dr")}

# Council and NHS services: involvement role, organisation type, name pattern, staff count.
_SERVICES: Final = (
    ("social-worker", "social-care", "{} Children's Social Care", 10),
    ("early-help", "social-care", "{} Early Help Service", 6),
    ("youth-offending", "youth-justice", "{} Youth Justice Service", 4),
    ("connexions", "other", "Connexions {}", 3),
    ("education-welfare", "other", "{} Education Welfare Service", 3),
    ("substance-misuse", "voluntary", "{} Young People's Drug and Alcohol Service", 3),
    ("other", "voluntary", "{} Young Carers", 2),
)
_NHS_SERVICES: Final = (
    (("health-visitor", "school-nurse"), "{} 0-19 Public Health Nursing", (6, 4)),
    (("camhs",), "{} Child and Adolescent Mental Health Service", (4,)),
    (("sexual-health",), "{} Sexual Health Service", (3,)),
)
# Education settings: phase, organisation type, first DfE establishment number, how many.
_SCHOOLS: Final = (("nursery", "nursery", 1000, 1), ("primary", "school", 2000, 8),
                   ("secondary", "school", 4000, 3), ("special", "school", 7000, 1),
                   ("college", "college", 8000, 1))
_SCHOOL_NAMES: Final = {
    "nursery": ("{} Nursery School", "{} Children's Centre Nursery"),
    "primary": ("{} Primary School", "{} Infant and Junior School", "St {}'s C of E Primary School",
                "{} Primary Academy"),
    "secondary": ("{} High School", "{} Academy", "{} Community School"),
    "special": ("{} Special School",),
    "college": ("{} College",),
}
_SAINTS: Final = ("Mary", "John", "Peter", "Anne", "Michael", "Andrew", "Luke", "Hilda")
_GP_NAMES: Final = ("{} Medical Centre", "{} Surgery", "{} Health Centre", "The {} Practice")
GP_PRACTICES: Final = 6


@dataclass(frozen=True)
class Place:
    """An authority's geography: postcode area and districts, towns, telephone range."""

    area: str
    districts: tuple[int, ...]
    towns: tuple[str, ...]
    landline: str


@dataclass
class OrgPlan:
    """An organisation to find or create: its row (without id) and what it provides."""

    row: dict[str, Any]
    roles: tuple[str, ...] = ()
    phase: str = ""
    establishment: str = ""
    staff: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AuthorityPlan:
    """One fictional children's services authority and its organisations."""

    index: int
    base: str
    la_number: str
    place: Place
    organisations: list[OrgPlan]


def authority_base_name(index: int) -> str:
    """Return the place name of authority ``index`` (distinct for every index in range)."""
    combos = [p + s for p in _PREFIXES for s in _SUFFIXES]
    # 97 is coprime with the 224 combinations: a permutation that starts at "Northmoor".
    return combos[(index * 97) % len(combos)]


def plan_place(index: int, base: str, rng: Random) -> Place:
    """Return the postcode area, districts, towns and telephone range of an authority."""
    first = base[0] if base[0] in _AREA_FIRST else "W"
    second = next((c.upper() for c in base[1:] if c.upper() in _AREA_SECOND), "A")
    districts = tuple(sorted(rng.sample(range(1, 30), 6)))
    towns = (base, *(f"{w} {base}" for w in rng.sample(("Upper", "Lower", "Little", "Great",
                                                        "Old", "New"), 2)),
             *(f"{base} {w}" for w in rng.sample(("Green", "Heath", "Vale", "Park", "End"), 2)))
    landline = DRAMA_LONDON if _KINDS[index % 4][0] == "E09" \
        else DRAMA_LANDLINES[index % len(DRAMA_LANDLINES)]
    return Place(area=first + second, districts=districts, towns=towns, landline=landline)


def plan_authority(index: int) -> AuthorityPlan:
    """Return authority ``index`` with all its organisations and practitioners.

    :raises ValueError: ``index`` is outside 0..MAX_AUTHORITIES-1.
    """
    if not 0 <= index < MAX_AUTHORITIES:
        raise ValueError(f"authorities: at most {MAX_AUTHORITIES}")
    # Synthetic data, not secrets: a seeded generator is what makes it reproducible.
    rng = Random(f"contactpoint-demo-authority/{index}")  # noqa: S311
    base = authority_base_name(index)
    # 37 is coprime with the 738 DfE numbers 201..938: distinct for every index.
    la_number = str(201 + (index * 37) % 738)
    place = plan_place(index, base, rng)
    builder = _OrgBuilder(index, base, place, rng, name_lists())
    organisations = [builder.local_authority(la_number), *builder.nhs_services(),
                     *builder.council_services(), *builder.schools(), *builder.gp_practices()]
    return AuthorityPlan(index=index, base=base, la_number=la_number, place=place,
                         organisations=organisations)


class _OrgBuilder:
    """Builds the organisation and practitioner rows of one authority."""

    def __init__(self, index: int, base: str, place: Place, rng: Random,
                 names: NameLists) -> None:
        """Start building authority ``index`` from its seeded generator."""
        self.index, self.base, self.place, self.rng, self.names = index, base, place, rng, names
        self.slug = ascii_slug(base, "-")
        self.phones = iter(rng.sample(range(1000), 1000))

    def phone(self) -> str:
        """Return the next unused fictional landline of this authority."""
        return self.place.landline.format(next(self.phones))

    def address(self, paon: str | None = None) -> dict[str, Any]:
        """Return the address columns of a building in this authority."""
        return {"address_saon": None,
                "address_paon": paon or str(self.rng.randrange(1, 200)),
                "address_street": street_name(self.rng, self.names),
                "address_locality": None, "address_town": self.rng.choice(self.place.towns),
                "address_postcode": postcode(self.rng, self.place.area, self.place.districts),
                "address_uprn": None}

    def org_row(self, name: str, type_: str, email: str, code: tuple[str, str], *,
                la_number: str | None = None, paon: str | None = None) -> dict[str, Any]:
        """Return an organisation row (without its id); ``code`` is (column, national code)."""
        codes = {"ods_code": None, "urn": None, "gss_code": None, code[0]: code[1]}
        return {"resource_id": identity.organisation_id(code[1]), "name": name,
                "type": type_, **codes, "la_number": la_number, "version": 1,
                "last_updated": WORLD_TIMESTAMP, "phone": self.phone(), "email": email,
                **self.address(paon)}

    def staff(self, org: dict[str, Any], role: str, count: int, first: int,
              domain: str) -> list[dict[str, Any]]:
        """Return ``count`` practitioners of ``org`` in ``role``, local ids from ``first``."""
        code = identity.organisation_code(org)
        rows = []
        for n in range(first, first + count):
            sex = self.rng.choice(("female", "male"))
            given = self.rng.choice(self.names.female if sex == "female" else self.names.male)
            family = self.rng.choice(self.names.family)
            title = "Dr" if role == "gp" else self.rng.choice(_TITLES[sex])
            local_id = f"{ascii_slug(role, '')[:3].upper()}{n:04d}"
            rows.append({
                "resource_id": identity.practitioner_id(code, local_id),
                "local_id": local_id, "version": 1, "last_updated": WORLD_TIMESTAMP,
                "title": title, "given": [given], "family": family, "phone": self.phone(),
                "email": f"{ascii_slug(given)}.{ascii_slug(family)}{n}@{domain}",
                "_role": role, "_org_code": code})
        return rows

    def local_authority(self, la_number: str) -> OrgPlan:
        """Return the authority itself (its directory team's contact)."""
        entity, pattern = _KINDS[self.index % 4]
        gss = f"{entity}{900001 + self.index:06d}"
        row = self.org_row(pattern.format(self.base), "local-authority",
                           f"directory.team@{self.slug}.gov.example", ("gss_code", gss),
                           la_number=la_number, paon="Civic Centre")
        return OrgPlan(row=row)

    def nhs_services(self) -> list[OrgPlan]:
        """Return the NHS trust and its services for children (ODS ``Rxx`` and ``Rxxnn``)."""
        trust = f"R{'ABCDEFGHJKLMNPQRTVWXY'[self.index // 10 % 21]}{self.index % 10}"
        plans = [OrgPlan(row=self.org_row(f"{self.base} Community Health NHS Trust", "nhs-trust",
                                          f"{self.slug}.trust@nhs.example", ("ods_code", trust)))]
        for n, (roles, pattern, counts) in enumerate(_NHS_SERVICES, start=1):
            row = self.org_row(pattern.format(self.base), "nhs-trust",
                               f"{self.slug}.{ascii_slug(roles[0], '')}@nhs.example",
                               ("ods_code", f"{trust}{n:02d}"))
            staff = [s for role, count in zip(roles, counts, strict=True)
                     for s in self.staff(row, role, count, 1 + 100 * roles.index(role),
                                         "nhs.example")]
            plans.append(OrgPlan(row=row, roles=roles, staff=staff))
        return plans

    def council_services(self) -> list[OrgPlan]:
        """Return the council's and voluntary services for children (ODS-style ``Y`` codes)."""
        plans = []
        for n, (role, type_, pattern, count) in enumerate(_SERVICES):
            domain = f"{self.slug}.gov.example" if type_ != "voluntary" \
                else f"{self.slug}-{ascii_slug(role, '')}.org.example"
            row = self.org_row(pattern.format(self.base), type_,
                               f"{ascii_slug(role, '')}@{domain}",
                               ("ods_code", f"Y{10000 + self.index * 10 + n:05d}"))
            plans.append(OrgPlan(row=row, roles=(role,),
                                 staff=self.staff(row, role, count, 1, domain)))
        return plans

    def schools(self) -> list[OrgPlan]:
        """Return the nursery, primary, secondary and special schools and the college."""
        plans, n = [], 0
        for phase, type_, first, count in _SCHOOLS:
            for k in range(count):
                stem = self.rng.choice(self.names.streets)
                pattern = self.rng.choice(_SCHOOL_NAMES[phase])
                name = pattern.format(self.rng.choice(_SAINTS) if "St {}" in pattern else stem)
                urn = str(500000 + self.index * 20 + n)
                domain = f"{ascii_slug(stem, '')}{urn[-3:]}.sch.example"
                row = self.org_row(name, type_, f"office@{domain}", ("urn", urn))
                plans.append(OrgPlan(row=row, roles=("education",), phase=phase,
                                     establishment=str(first + k + 1),
                                     staff=self.staff(row, "education", 2, 1, domain)))
                n += 1
        return plans

    def gp_practices(self) -> list[OrgPlan]:
        """Return the GP practices (ODS: a letter and five digits)."""
        plans = []
        for k in range(GP_PRACTICES):
            ods = f"{'ABCDEFGHJKLMNP'[self.index % 14]}{81000 + self.index * 10 + k:05d}"
            stem = self.rng.choice(self.names.streets)
            row = self.org_row(self.rng.choice(_GP_NAMES).format(stem), "gp-practice",
                               f"{ods.lower()}.practice@nhs.example", ("ods_code", ods))
            plans.append(OrgPlan(row=row, roles=("gp",),
                                 staff=self.staff(row, "gp", self.rng.randint(3, 5), 1,
                                                  "nhs.example")))
        return plans


@dataclass(frozen=True)
class Staff:
    """A practitioner as the child generator uses it."""

    id: int
    organisation_id: int
    phone: str
    email: str
    local_id: str  # the staff id, part of an involvement's natural key


@dataclass(frozen=True)
class Service:
    """An organisation providing one role, with its practitioners in that role."""

    organisation_id: int
    phone: str
    email: str
    staff: tuple[Staff, ...]
    establishment: str = ""
    code: str = ""  # the organisation's natural code (adapter.identity.organisation_code)


@dataclass(frozen=True)
class Authority:
    """A written authority: its own row's id and contact, its services by role and schools by
    phase, all with database ids."""

    index: int
    base: str
    la_number: str
    place: Place
    organisation_id: int
    name: str
    phone: str
    email: str
    address: dict[str, Any]
    services: dict[str, tuple[Service, ...]]
    schools: dict[str, tuple[Service, ...]]


def resolve_authority(plan: AuthorityPlan, org_ids: dict[str, int],
                      staff_ids: dict[str, int]) -> Authority:
    """Return the authority of ``plan`` with the ids its rows have in the database."""
    services: dict[str, list[Service]] = {}
    schools: dict[str, list[Service]] = {}
    for org in plan.organisations:
        org_id = org_ids[org.row["resource_id"]]
        for role in org.roles:
            staff = tuple(Staff(staff_ids[s["resource_id"]], org_id, s["phone"], s["email"],
                                s["local_id"]) for s in org.staff if s["_role"] == role)
            service = Service(org_id, org.row["phone"], org.row["email"], staff,
                              org.establishment, identity.organisation_code(org.row))
            target = schools.setdefault(org.phase, []) if org.phase \
                else services.setdefault(role, [])
            target.append(service)
    la = plan.organisations[0].row
    address = {k: v for k, v in la.items() if k.startswith("address_")}
    return Authority(index=plan.index, base=plan.base, la_number=plan.la_number,
                     place=plan.place, organisation_id=org_ids[la["resource_id"]],
                     name=la["name"], phone=la["phone"], email=la["email"], address=address,
                     services={k: tuple(v) for k, v in services.items()},
                     schools={k: tuple(v) for k, v in schools.items()})
