"""The search of ``Patient`` (FHIR R4 patient.html#search): its parameters and the SQL
condition of each criterion on the stored entries (``adapter.store.children``), the indexes each
is answered from in docs/scale.md "Search". Served by the provider of ``Patient``
(adapter/fhir/providers/patient.py) and by the CareTeam's chained subject search."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, Final, TypeVar

from sqlalchemy import (
    Select,
    and_,
    exists,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from adapter import systems
from adapter.db import built_once
from adapter.errors import BadRequest
from adapter.fhir.search import (
    BY_IDENTIFIER,
    EXACT_CONTAINS,
    NOT,
    Criterion,
    SearchParam,
    SearchRequest,
    negated,
    parse_date,
    reference_id,
    split_token,
)
from adapter.models import Child, ChildName, LocalIdentifier, Organisation
from adapter.models.canonical import normalise_name
from adapter.security.caller import Caller
from adapter.security.policy import hidden_unless, visible_to
from adapter.store.membership import in_selected
from adapter.store.organisations import given_match, organisation_code_condition
from adapter.store.prefix import (
    FIRST_LETTERS,
    after_first_word,
    contains_word_starting,
    first_letters,
    has_three_words,
    starts_with,
)

T = TypeVar("T")

GENDER_CODES: Final = {"male": "1", "female": "2", "other": "9", "unknown": "X"}


def _string_condition(column: Any, value: str, modifier: str | None) -> Any:
    """Return a FHIR string match on a normalised column (search.html#string: starts-with,
    case- and accent-insensitive; ``:contains``)."""
    if modifier == "contains":
        return column.like(f"%{normalise_name(value).replace('%', '').replace('_', '')}%")
    return starts_with(column, normalise_name(value))


def _given_words(value: str) -> list[Any]:
    """Return conditions, each answered from an index, of which one holds when a word of a
    child's given names starts with ``value`` (FHIR R4 search.html#string: any given name
    matches): the first word (``ix_child_name_given_prefix``), the second
    (``ix_child_name_given_rest``) or a later one of names of three words or more (the
    partial index ``ix_child_name_given_many``, a few names only)."""
    key = normalise_name(value)
    return [starts_with(ChildName.given_norm, key),
            starts_with(after_first_word(ChildName.given_norm), key),
            and_(has_three_words(ChildName.given_norm),
                 contains_word_starting(ChildName.given_norm, key))]


def _exact_names(value: str, which: str) -> list[Any]:
    """Return ``:exact`` on a child's names: the stored name, case and accents included
    (FHIR R4 search.html#string), narrowed by the normalised names' indexes."""
    family = [and_(ChildName.family_norm == normalise_name(value), ChildName.family == value)]
    exact_given = given_match(value, "exact", ChildName.given)
    given = [and_(word, exact_given) for word in _given_words(value)]
    return {"family": family, "given": given}.get(which, family + given)


def _name_matches(value: str, modifier: str | None, which: str) -> list[Any]:
    """Return the conditions on ChildName of which one holds when a name matches ``value``."""
    if modifier == "exact":
        return _exact_names(value, which)
    if modifier == "contains":
        family = [_string_condition(ChildName.family_norm, value, modifier)]
        given = [_string_condition(ChildName.given_norm, value, modifier),
                 contains_word_starting(ChildName.given_norm, normalise_name(value))]
    else:
        family = [starts_with(ChildName.family_norm, normalise_name(value))]
        given = _given_words(value)
    return {"family": family, "given": given}.get(which, family + given)


def _name_condition(criterion: Criterion, which: str) -> Any:
    """Return a condition matching any of a child's names on family, given or either.

    The children's ids among the names matched (``in_selected``), not a correlated ``EXISTS``:
    the databases find the names from their indexes first and look up only the page's children
    by primary key, in id order, where with ``EXISTS`` SQLite walks every child and probes its
    names, and PostgreSQL walks the children in id order until the page is full. Each way a name can
    match is its own SELECT of the ``UNION ALL``, so that each is answered from its own index
    (docs/scale.md "Search").
    """
    matches = [select(ChildName.child_id).where(match) for value in criterion.values
               for match in _name_matches(value, criterion.modifier, which)]
    return in_selected(Child.id, matches[0] if len(matches) == 1 else union_all(*matches))


def _nhs_number_condition(code: str, caller: Caller) -> Any:
    """Match an NHS number (spaces ignored), never on shielded children for callers without
    the right."""
    return and_(Child.nhs_number == code.replace(" ", ""), hidden_unless(caller))


def _upn_condition(code: str, caller: Caller) -> Any:
    """Match a Unique Pupil Number, never on shielded children for callers without the
    right."""
    return and_(Child.upn == code.upper(), hidden_unless(caller))


def _contactpoint_id_condition(code: str, _caller: Caller) -> Any:
    """Match a ContactPoint ID."""
    return Child.contactpoint_id == code.upper()


@functools.lru_cache(maxsize=8)
def _identifier_systems(own: systems.OwnSystems) -> dict[str, Callable[[str, Caller], Any]]:
    """Return the condition of a value of each identifier system a child is found by (``own``:
    this server's systems), in the order a value without a system tries them."""
    return {systems.NHS_NUMBER: _nhs_number_condition, own.upn: _upn_condition,
            own.contactpoint_id: _contactpoint_id_condition}


def _identifier_condition(value: str, caller: Caller, own: systems.OwnSystems) -> Any:
    """Return a condition for one identifier token (system|value or value alone; ``own``:
    this server's identifier systems). Only the condition of the system named is built."""
    system, code = split_token(value)
    by_system = _identifier_systems(own)
    if system in by_system:
        return by_system[system](code, caller)
    if system and system.startswith(own.id_system("local/")):
        return _local_identifier_condition(system.rsplit("/", 1)[-1], code, caller)
    if system:
        return Child.id.is_(None)  # a system this directory does not hold matches nothing
    return or_(*(condition(code, caller) for condition in by_system.values()))


def _local_identifier_condition(org_code: str, value: str, caller: Caller) -> Any:
    """Match a local identifier, only for callers of the allocating organisation."""
    if org_code != caller.organisation_code:
        return Child.id.is_(None)
    return exists().where(LocalIdentifier.child_id == Child.id, LocalIdentifier.value == value,
                          LocalIdentifier.organisation_id.in_(
                              select(Organisation.id).where(or_(
                                  Organisation.ods_code == org_code,
                                  Organisation.gss_code == org_code,
                                  Organisation.urn == org_code)))) & hidden_unless(caller)


def _date_condition(column: Any, value: str, name: str, as_date: bool) -> Any:
    """Return a FHIR date comparison (search.html#prefix) on ``column``."""
    rng = parse_date(value, name)
    start: Any = rng.start.date() if as_date else rng.start
    end: Any = rng.end.date() if as_date else rng.end
    return DATE_COMPARISONS[rng.prefix](column, start, end)


def _widen(moment: Any, sign: int) -> Any:
    """Return ``moment`` moved by 10% of a year for ``ap`` (approximately), search.html#prefix."""
    return moment + sign * dt.timedelta(days=36)


# Each prefix's comparison of a column with a date range [start, end), built only for the
# prefix asked (search.html#prefix).
DATE_COMPARISONS: Final[dict[str, Callable[[Any, Any, Any], Any]]] = {
    "eq": lambda c, start, end: and_(c >= start, c < end),
    "ne": lambda c, start, end: or_(c < start, c >= end),
    "lt": lambda c, start, _end: c < start,
    "le": lambda c, _start, end: c < end,
    "gt": lambda c, _start, end: c >= end,
    "ge": lambda c, start, _end: c >= start,
    "sa": lambda c, _start, end: c >= end,
    "eb": lambda c, start, _end: c < start,
    "ap": lambda c, start, end: and_(c >= _widen(start, -1), c < _widen(end, 1)),
}


def _gender_condition(value: str) -> Any:
    """Return a condition on the administrative gender code."""
    _system, code = split_token(value)
    if code not in GENDER_CODES:
        raise BadRequest(f"gender must be one of {', '.join(GENDER_CODES)}.", expression="gender")
    return Child.gender == GENDER_CODES[code]


def _postcode_condition(value: str, caller: Caller) -> Any:
    """Match postcodes by prefix, never on shielded children for callers without the right."""
    compact = "".join(value.upper().split())
    if not compact.isalnum():
        raise BadRequest("address-postalcode takes letters and digits.",
                         expression="address-postalcode")
    # The expression of the index ix_child_postcode_prefix (migration 0010), constants inline
    # (a bound parameter is not the index's expression), so it is used;
    # as ids matched first (like the names, _name_condition), so that SQLite does not walk the
    # children in id order to fill a page of a postcode few of them have.
    postcode = _postcode_alias()
    stored = func.replace(postcode.address_postcode, literal_column("' '"), literal_column("''"))
    matched = select(postcode.id).where(starts_with(stored, compact))
    return and_(in_selected(Child.id, matched), hidden_unless(caller))


@built_once
def _postcode_alias() -> Any:
    """Return the alias of the children a postcode is matched in, kept for the process (an
    alias made per request costs more than the rest of its condition: SQLAlchemy adapts its
    columns anew for each, and memoizes them on an alias that is kept)."""
    return aliased(Child, name="postcode_child")


def _organization_condition(value: str, modifier: str | None, own: systems.OwnSystems) -> Any:
    """Match the managing organisation by logical id (``:identifier``: by its identifier)."""
    if modifier == "identifier":
        return Child.managing_organisation_id.in_(
            select(Organisation.id).where(organisation_code_condition(*split_token(value), own)))
    rid = reference_id(value, "Organization", "organization")
    return Child.managing_organisation_id.in_(
        select(Organisation.id).where(Organisation.resource_id == rid))


PATIENT_PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id of the Patient", modifiers=NOT),
    SearchParam("_lastUpdated", "date", "When the entry last changed (with prefixes)"),
    SearchParam("identifier", "token",
                "system|value: NHS number, UPN, ContactPoint ID or your organisation's local id",
                "http://hl7.org/fhir/SearchParameter/Patient-identifier", NOT),
    SearchParam("family", "string", "Family name, current or former (starts with)",
                "http://hl7.org/fhir/SearchParameter/individual-family", EXACT_CONTAINS),
    SearchParam("given", "string", "A given name (starts with)",
                "http://hl7.org/fhir/SearchParameter/individual-given", EXACT_CONTAINS),
    SearchParam("name", "string", "Family or given name (starts with)",
                "http://hl7.org/fhir/SearchParameter/Patient-name", EXACT_CONTAINS),
    SearchParam("birthdate", "date", "Date of birth (eq, ne, lt, le, gt, ge, sa, eb, ap)",
                "http://hl7.org/fhir/SearchParameter/individual-birthdate"),
    SearchParam("gender", "token", "male | female | other | unknown",
                "http://hl7.org/fhir/SearchParameter/individual-gender", NOT),
    SearchParam("address-postalcode", "string",
                "Postcode (starts with); never matches a shielded child for callers without "
                "the shielding right",
                "http://hl7.org/fhir/SearchParameter/individual-address-postalcode"),
    SearchParam("organization", "reference", "The managing local authority (Organization)",
                "http://hl7.org/fhir/SearchParameter/Patient-organization", BY_IDENTIFIER),
)}


# The condition of one value of each parameter but the names (``_name_condition`` takes the
# criterion whole): (value, criterion, caller, this server's systems), a table built once
# rather than per criterion of every request.
ValueCondition = Callable[[str, Criterion, Caller, systems.OwnSystems], Any]
VALUE_CONDITIONS: Final[dict[str, ValueCondition]] = {
    "_id": lambda v, _c, _caller, _own: Child.resource_id == v,
    "_lastUpdated": lambda v, c, _caller, _own: _date_condition(
        Child.last_updated, v, c.param.name, False),
    "identifier": lambda v, _c, caller, own: _identifier_condition(v, caller, own),
    "birthdate": lambda v, c, _caller, _own: _date_condition(
        Child.birth_date, v, c.param.name, True),
    "gender": lambda v, _c, _caller, _own: _gender_condition(v),
    "address-postalcode": lambda v, _c, caller, _own: _postcode_condition(v, caller),
    "organization": lambda v, c, _caller, own: _organization_condition(v, c.modifier, own),
}


@functools.lru_cache(maxsize=8)
def own_systems(base: str) -> systems.OwnSystems:
    """Return this server's identifier systems under the canonical ``base`` (one per base: a
    server has one, tests a few)."""
    return systems.OwnSystems(base)


def criterion_condition(criterion: Criterion, caller: Caller, base: str) -> Any:
    """Return the SQL condition of one criterion (its values OR-ed; ``base``: the canonical
    base of this server's identifier systems).

    :raises BadRequest: a value is malformed.
    """
    name = criterion.param.name
    if name in ("family", "given", "name"):
        return _name_condition(criterion, name)
    condition, own = VALUE_CONDITIONS[name], own_systems(base)
    return negated(criterion, or_(*(condition(value, criterion, caller, own)
                                    for value in criterion.values)))


def _walked_family(search: SearchRequest) -> Criterion | None:
    """Return the first criterion a page can walk ``ix_child_name_family_walk`` for: a
    family-name prefix (no modifier) of one value of ``FIRST_LETTERS`` letters or more."""
    for criterion in search.criteria:
        if (criterion.param.name == "family" and criterion.modifier is None
                and len(criterion.values) == 1
                and len(normalise_name(criterion.values[0])) >= FIRST_LETTERS):
            return criterion
    return None


def _family_starts(name: Any, key: str) -> Any:
    """Return the condition the family name of ``name`` (a ChildName alias) starts with the
    normalised ``key``: its first letters equal (the index's key), and for a longer key the
    name itself, read from the same index. For a key of exactly ``FIRST_LETTERS`` letters the
    equality alone: a second condition would make PostgreSQL take the two as independent and
    underestimate the matches."""
    equal = first_letters(name.family_norm) == key[:FIRST_LETTERS]
    return equal if len(key) == FIRST_LETTERS else and_(equal, starts_with(name.family_norm, key))


@built_once
def _name_aliases() -> tuple[Any, Any]:
    """Return the two aliases of the names a family walk joins, kept for the process (as
    ``_postcode_alias``: made per request, they were a seventh of a family search's CPU)."""
    return aliased(ChildName, name="family_name"), aliased(ChildName, name="earlier")


def _walk_family_names(query: Select[int], value: str, after: int | None) -> Select[int]:
    """Return ``query`` joined to the children's names whose family name starts with
    ``value``, one row per child (its first such name, by ``child_name.id``), ordered by child
    id: the page is read in ``ix_child_name_family_walk``'s order (migration 0016) and stops
    after the page (docs/scale.md "Search"). The join's ordering column comes first, because
    SQLite sorts an ``ORDER BY child.id`` over it anew; ``after`` (the keyset cursor) is set
    on the names too, because neither database carries a range through the join's equality."""
    key = normalise_name(value)
    name, earlier = _name_aliases()
    first = ~exists().where(earlier.child_id == name.child_id, earlier.id < name.id,
                            _family_starts(earlier, key))
    query = query.join(name, name.child_id == Child.id) \
        .where(_family_starts(name, key), first).order_by(name.child_id)
    return query if after is None else query.where(name.child_id > after)


def patient_select(search: SearchRequest, caller: Caller, base: str,
                   after: int | None = None) -> Select[int]:
    """Return the select of the ids of the children matching ``search`` for ``caller`` (no
    paging; ``after``: only the children of greater id, the keyset cursor of a next page). A
    family-name prefix makes the select ordered by child id (``_walk_family_names``).

    The ids alone, no ORM entity nor loader options: a search reads its page's entries by
    their ids afterwards (``adapter.store.rows.entries_rows``), a count counts them."""
    query = select(Child.id).where(visible_to(caller))
    walked = _walked_family(search)
    if walked is not None:
        query = _walk_family_names(query, walked.values[0], after)
    for criterion in search.criteria:
        if criterion is not walked:
            query = query.where(criterion_condition(criterion, caller, base))
    return query if after is None else query.where(Child.id > after)


def selected(session: Session, statement: Select[T]) -> list[T]:
    """Return the first column of the rows of ``statement``, run as a Core statement on the
    session's own connection: in its transaction (the read snapshot the page's entries are
    then read in, ``Database.read_transaction``), without the ORM's execution around a select
    of plain columns. Pending changes are flushed first when the session autoflushes, as its
    own ``execute`` would (a conditional update in a transaction Bundle sees the entries the
    Bundle wrote before it)."""
    if session.autoflush:
        session.flush()
    return list(session.connection().execute(statement).scalars())
