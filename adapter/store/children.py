"""Children's directory entries as FHIR Patients: load, disclose, audit, render; search;
the records of creates and updates from a FHIR Patient (served by the provider of ``Patient``,
adapter/fhir/providers/patient.py)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from sqlalchemy import (
    Select,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session, aliased, joinedload, selectinload

from adapter import identifiers, systems
from adapter import settings as settings_module
from adapter.errors import BadRequest, Conflict, Gone, NotFound, issue
from adapter.fhir import references
from adapter.fhir.handlers import Rendered
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
from adapter.fhir.validation import require_valid
from adapter.mapping import fhir as mapping
from adapter.models import Child, ChildName, Involvement, LocalIdentifier, Organisation
from adapter.models.canonical import normalise_name
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import (
    copy_involvement,
    disclose_child,
    hidden_unless,
    implied_managing_authority,
    organisation_code,
    require_child_writer,
    visible_to,
    withheld_local_identifiers,
)
from adapter.store import history
from adapter.store.entry_rules import (
    age_rules_apply,
    require_unique_nhs_number,
    require_within_age_rules,
)
from adapter.store.organisations import (
    given_match,
    organisation_code_condition,
    organisation_key_copy,
    stored_organisation,
    write_errors,
)
from adapter.store.prefix import (
    after_first_word,
    contains_word_starting,
    has_three_words,
    in_selected,
    starts_with,
)

GENDER_CODES: Final = {"male": "1", "female": "2", "other": "9", "unknown": "X"}
MANAGING: Final = "Patient.managingOrganization"
NHS_NUMBER_EXPRESSION: Final = "Patient.identifier.where(system='https://fhir.nhs.uk/Id/nhs-number')"
BREAK_GLASS: Final = ("This child is shielded: your access used the shielding right, has been "
                      "recorded as an override and will be reviewed.")


def child_query() -> Select[Child]:
    """Return a select of children with every part a mapping needs loaded."""
    return select(Child).options(
        joinedload(Child.managing_organisation), selectinload(Child.names),
        selectinload(Child.carers), selectinload(Child.involvements),
        selectinload(Child.local_identifiers))


def _joined_child() -> Select[Child]:
    """Return a select of children loading, in the same SELECT, their names, carers,
    involvements (with their organisations) and local ids. One child's lists are short, so
    their product is a few rows, far cheaper to load than a statement per list; an
    involvement's practitioner, which a Patient does not show, is loaded only if asked for (a
    redacted copy)."""
    return select(Child).options(
        joinedload(Child.managing_organisation), joinedload(Child.names),
        joinedload(Child.carers), joinedload(Child.local_identifiers),
        joinedload(Child.involvements).lazyload(Involvement.practitioner))


@functools.cache
def _one_child_statement(admin: bool) -> Select[Child]:
    """Return the statement of a read by id (parameter ``rid``), built once per visibility
    (archived entries only for admins, as ``visible_to``)."""
    return _joined_child().where(
        Child.resource_id == bindparam("rid"),
        Child.id.is_not(None) if admin else Child.record_status == "live")


@functools.cache
def children_statement() -> Select[Child]:
    """Return the statement loading the children of a search page (parameter ``ids``, ids
    already filtered by the search and its caller's visibility), in id order."""
    return _joined_child().where(Child.id.in_(bindparam("ids", expanding=True))) \
        .order_by(Child.id)


def load_child(session: Session, resource_id: str, caller: Caller) -> Child:
    """Return the child with FHIR id ``resource_id``.

    :raises NotFound: no such child, or archived for this caller.
    :raises Gone: the child was deleted.
    """
    child = session.scalars(_one_child_statement(caller.has_right("admin")),
                            {"rid": resource_id}).unique().one_or_none()
    if child is not None:
        return child
    versions = history.child_versions(session, resource_id)
    if versions and versions[0].deleted:
        raise Gone(f"Patient/{resource_id} has been deleted.")
    raise NotFound(f"No Patient/{resource_id} on this server.")


def base() -> str:
    """Return the canonical base of this server's own systems (the bound settings')."""
    return settings_module.current().canonical_base


def render_patient(session: Session, child: Child, caller: Caller,
                   action: str | None, current: Child | None = None) -> Rendered:
    """Disclose, audit (as ``action``; None when the write's own record covers it) and map
    one child for ``caller``; ``current`` is the entry now when ``child`` is an earlier
    version (judged by both, docs/domain.md "Shielding")."""
    disclosure = disclose_child(child, caller, current)
    if action is not None:
        audit.record(session, action, resource_type="Patient", resource_id=child.resource_id,
                     child_ref=child.resource_id, override=disclosure.override, caller=caller)
        ledger.record_delivery(session, caller, child, action)
    resource = mapping.child_to_patient(disclosure.child, redacted=disclosure.redacted, base=base())
    issues = [issue("warning", "suppressed", BREAK_GLASS)] if disclosure.override else []
    return Rendered(resource, child.version, child.last_updated, issues)


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


def _identifier_condition(value: str, caller: Caller) -> Any:
    """Return a condition for one identifier token (system|value or value alone)."""
    system, code = split_token(value)
    own = systems.OwnSystems(base())
    hidden_if_shielded = hidden_unless(caller)
    by_system = {
        systems.NHS_NUMBER: and_(Child.nhs_number == code.replace(" ", ""), hidden_if_shielded),
        own.upn: and_(Child.upn == code.upper(), hidden_if_shielded),
        own.contactpoint_id: Child.contactpoint_id == code.upper(),
    }
    if system in by_system:
        return by_system[system]
    if system and system.startswith(own.id_system("local/")):
        return _local_identifier_condition(system.rsplit("/", 1)[-1], code, caller)
    if system:
        return Child.id.is_(None)  # a system this directory does not hold matches nothing
    return or_(*by_system.values())


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
    return {
        "eq": and_(column >= start, column < end), "ne": or_(column < start, column >= end),
        "lt": column < start, "le": column < end, "gt": column >= end, "ge": column >= start,
        "sa": column >= end, "eb": column < start,
        "ap": and_(column >= _widen(start, -1), column < _widen(end, 1)),
    }[rng.prefix]


def _widen(moment: Any, sign: int) -> Any:
    """Return ``moment`` moved by 10% of a year for ``ap`` (approximately), search.html#prefix."""
    return moment + sign * dt.timedelta(days=36)


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
    postcode = aliased(Child)
    stored = func.replace(postcode.address_postcode, literal_column("' '"), literal_column("''"))
    matched = select(postcode.id).where(starts_with(stored, compact))
    return and_(in_selected(Child.id, matched), hidden_unless(caller))


def _organization_condition(value: str, modifier: str | None) -> Any:
    """Match the managing organisation by logical id (``:identifier``: by its identifier)."""
    if modifier == "identifier":
        return Child.managing_organisation_id.in_(
            select(Organisation.id).where(organisation_code_condition(
                *split_token(value), systems.OwnSystems(base()))))
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


def criterion_condition(criterion: Criterion, caller: Caller) -> Any:
    """Return the SQL condition of one criterion (its values OR-ed).

    :raises BadRequest: a value is malformed.
    """
    name, values = criterion.param.name, criterion.values
    if name in ("family", "given", "name"):
        return _name_condition(criterion, name)
    builders: dict[str, Callable[[str], Any]] = {
        "_id": lambda v: Child.resource_id == v,
        "_lastUpdated": lambda v: _date_condition(Child.last_updated, v, name, False),
        "identifier": lambda v: _identifier_condition(v, caller),
        "birthdate": lambda v: _date_condition(Child.birth_date, v, name, True),
        "gender": _gender_condition,
        "address-postalcode": lambda v: _postcode_condition(v, caller),
        "organization": lambda v: _organization_condition(v, criterion.modifier),
    }
    return negated(criterion, or_(*(builders[name](value) for value in values)))


def patient_select(search: SearchRequest, caller: Caller) -> Select[Child]:
    """Return the select of children matching ``search`` for ``caller`` (no paging)."""
    query = child_query().where(visible_to(caller))
    for criterion in search.criteria:
        query = query.where(criterion_condition(criterion, caller))
    return query


def require_own_authority(child_authority: Organisation | None, caller: Caller) -> None:
    """A client writes only entries its own organisation manages (the write-authority policy).

    :raises Forbidden: another authority's entry.
    """
    require_child_writer(child_authority, caller, "Patient.managingOrganization")


def _allocate_contactpoint_id(session: Session) -> str:
    """Return a ContactPoint ID not yet used."""
    while True:
        cpid = identifiers.allocate_contactpoint_id()
        if session.scalar(select(Child.id).where(Child.contactpoint_id == cpid)) is None:
            return cpid


def _merged_involvements(record: Child, existing: Child) -> list[Any]:
    """Return the involvements of an entry updated from a Patient, in their stored order:
    every involvement other than the GP unchanged (a Patient carries only
    ``generalPractitioner``), the stored GP practices the Patient still names, then GP
    practices it adds."""
    named = {organisation_code(i.organisation): i for i in record.involvements if i.role == "gp"}
    kept = [copy_involvement(i) for i in existing.involvements
            if i.role != "gp" or organisation_code(i.organisation) in named]
    stored = {organisation_code(i.organisation) for i in existing.involvements if i.role == "gp"}
    return kept + [i for code, i in named.items() if code not in stored]


def patient_record(session: Session, resource: dict[str, Any], caller: Caller,
                   existing: Child | None) -> tuple[Child, list[dict[str, Any]]]:
    """Validate and map a Patient to a transient Child, completing what a Patient does not
    carry from the stored entry: involvements other than the GP, and other organisations'
    local ids. Returns the child and the validation's warnings and information (what was not
    kept).

    :raises Invalid: not a valid Patient.
    """
    settings = settings_module.current()
    notes = require_valid("Patient", resource, settings)
    references.require_resolved(session, "Patient", resource, caller, settings)
    record, _ignored = mapping.patient_to_child(resource, base=base())
    _refer_to_stored(session, record)
    if not record.contactpoint_id:
        record.contactpoint_id = existing.contactpoint_id if existing else \
            _allocate_contactpoint_id(session)
    if record.managing_organisation is None and existing is not None:
        record.managing_organisation = existing.managing_organisation
    elif record.managing_organisation is None:
        notes = [*notes, _implied_authority(session, record, caller)]
    if existing is not None:
        record.involvements = _merged_involvements(record, existing)
        record.local_identifiers = [*record.local_identifiers,
                                    *withheld_local_identifiers(existing, caller)]
    return record, notes


def _implied_authority(session: Session, record: Child, caller: Caller) -> dict[str, Any]:
    """Give a new entry without ``managingOrganization`` its writer's authority (the policy
    decides whether the writer is an authority's system); return the note saying so.

    :raises Invalid: the writer is not an authority's system (a national client).
    """
    own = session.scalar(select(Organisation).where(or_(
        Organisation.gss_code == caller.organisation_code,
        Organisation.ods_code == caller.organisation_code,
        Organisation.urn == caller.organisation_code)))
    authority = implied_managing_authority(caller, own, MANAGING)
    record.managing_organisation = organisation_key_copy(authority)
    return issue("information", "informational",
                 f"{MANAGING} was not given: the entry is managed by your authority "
                 f"({authority.gss_code}), whose system wrote it.", MANAGING)


def require_entry_rules(session: Session, record: Child, existing: Child | None,
                        caller: Caller) -> None:
    """Check the rules on a live entry that a Patient write makes: within the directory's
    age rules (when the write is judged by them), and no other live entry with its NHS number.

    :raises Invalid: outside the age rules (the rule quoted).
    :raises ExistingEntry: another live entry has the NHS number (409).
    """
    if (record.record_status or "live") != "live":
        return
    if age_rules_apply(record.birth_date, record.death_date, record.extended_retention,
                       existing.retention_date if existing else None,
                       existing.record_status if existing else None):
        require_within_age_rules(record.birth_date, record.death_date,
                                 record.extended_retention, "Patient.birthDate",
                                 "Patient.deceasedDateTime")
    require_unique_nhs_number(session, record.nhs_number, record.contactpoint_id, caller,
                              NHS_NUMBER_EXPRESSION)


@contextmanager
def entry_write(session: Session, record: Child, caller: Caller) -> Iterator[None]:
    """Apply and flush an entry (the body of the ``with``) in a savepoint: when a concurrent
    writer took its NHS number since :func:`require_entry_rules` looked (the unique index of
    migration 0011 refuses the second), the 409 still names the entry that won. The session
    holds no pending change when it starts (the savepoint would flush it outside).

    :raises ExistingEntry: a concurrent writer's live entry has the NHS number.
    :raises Conflict: another unique key is taken.
    :raises PreconditionFailed: a concurrent update won (optimistic lock).
    """
    try:
        with write_errors("entry"), session.begin_nested():
            yield
            session.flush()
    except Conflict:
        if (record.record_status or "live") == "live":
            require_unique_nhs_number(session, record.nhs_number, record.contactpoint_id,
                                      caller, NHS_NUMBER_EXPRESSION)
        raise


def _refer_to_stored(session: Session, record: Child) -> None:
    """Resolve the organisations a Patient refers to (managing authority, GP practices; by
    logical id and/or identifier) to keys of stored records: a reference names a shared
    record, it never creates or changes one (``adapter.security.policy.authority``).

    :raises Invalid: an organisation not known here, or a reference whose id and identifier
        disagree.
    """
    if record.managing_organisation is not None:
        record.managing_organisation = organisation_key_copy(stored_organisation(
            session, record.managing_organisation, "Patient.managingOrganization"))
    for involvement in record.involvements:
        involvement.organisation = organisation_key_copy(stored_organisation(
            session, involvement.organisation, "Patient.generalPractitioner"))
