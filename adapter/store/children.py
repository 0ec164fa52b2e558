"""Children's directory entries as FHIR Patients: load, disclose, audit, render; search;
create and update from a FHIR Patient (the REST handler of ``Patient``)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Final

from sqlalchemy import Select, and_, bindparam, exists, func, or_, select
from sqlalchemy.orm import Session, joinedload, selectinload

from adapter import identifiers
from adapter import settings as settings_module
from adapter.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    issue,
)
from adapter.fhir import references, systems
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.search import (
    BY_IDENTIFIER,
    EXACT_CONTAINS,
    NOT,
    Criterion,
    SearchParam,
    SearchRequest,
    decode_cursor,
    encode_cursor,
    negated,
    parse_date,
    reference_id,
    split_token,
)
from adapter.fhir.validation import require_valid, validate_stored
from adapter.mapping import fhir as mapping
from adapter.models import Child, ChildName, Involvement, LocalIdentifier, Organisation
from adapter.models.canonical import normalise_name
from adapter.notify import ledger
from adapter.security import audit
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
    organisation_identifier_condition,
    organisation_key_copy,
    stored_organisation,
    write_errors,
)
from adapter.store.prefix import starts_with
from adapter.store.records import apply_child

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
def _children_statement() -> Select[Child]:
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
    resource = mapping.child_to_patient(disclosure.child, redacted=disclosure.redacted,
                                       base=base())
    issues = [issue("warning", "suppressed", BREAK_GLASS)] if disclosure.override else []
    return Rendered(resource, child.version, child.last_updated, issues)


def _string_condition(column: Any, value: str, modifier: str | None) -> Any:
    """Return a FHIR string match on a normalised column (search.html#string: starts-with,
    case- and accent-insensitive; ``:contains``)."""
    if modifier == "contains":
        return column.like(f"%{normalise_name(value).replace('%', '').replace('_', '')}%")
    return starts_with(column, normalise_name(value))


def _exact_name(value: str, which: str) -> Any:
    """Return ``:exact`` on a child's names: the stored name, case and accents included
    (FHIR R4 search.html#string), narrowed by the normalised family name's index."""
    family = and_(ChildName.family_norm == normalise_name(value), ChildName.family == value)
    given = given_match(value, "exact", ChildName.given)
    return {"family": family, "given": given}.get(which, or_(family, given))


def _name_condition(criterion: Criterion, which: str) -> Any:
    """Return a condition matching any of a child's names on family, given or either."""
    options = []
    for value in criterion.values:
        if criterion.modifier == "exact":
            options.append(_exact_name(value, which))
            continue
        family = _string_condition(ChildName.family_norm, value, criterion.modifier)
        given = or_(_string_condition(ChildName.given_norm, value, criterion.modifier),
                    ChildName.given_norm.like(f"% {normalise_name(value)}%"))
        options.append({"family": family, "given": given}.get(which, or_(family, given)))
    return exists().where(ChildName.child_id == Child.id, or_(*options))


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
    # The expression of the index ix_child_postcode_prefix (migration 0010), so it is used.
    stored = func.replace(Child.address_postcode, " ", "")
    return and_(starts_with(stored, compact), hidden_unless(caller))


def _organization_condition(value: str, modifier: str | None) -> Any:
    """Match the managing organisation by logical id (``:identifier``: by its identifier)."""
    if modifier == "identifier":
        return Child.managing_organisation_id.in_(
            select(Organisation.id).where(organisation_identifier_condition(value)))
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


def _patient_record(session: Session, resource: dict[str, Any], caller: Caller,
                    existing: Child | None) -> tuple[Child, list[dict[str, Any]]]:
    """Validate and map a Patient to a transient Child, completing what a Patient does not
    carry from the stored entry: involvements other than the GP, and other organisations'
    local ids. Returns the child and the validation's warnings and information (what was not
    kept).

    :raises Invalid: not a valid Patient.
    """
    notes = require_valid("Patient", resource)
    references.require_resolved(session, "Patient", resource, caller)
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


class PatientHandler:
    """The REST handler of ``Patient``."""

    resource_type: ClassVar[str] = "Patient"
    interactions: ClassVar[tuple[str, ...]] = (
        "read", "vread", "history-instance", "search-type", "search-type-post", "create",
        "update", "conditional-update", "validate")
    search_params: ClassVar[dict[str, SearchParam]] = PATIENT_PARAMS
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset({"CareTeam:subject"})
    profile: ClassVar[str | None] = "Patient"

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return the current Patient as ``caller`` may see it."""
        return render_patient(session, load_child(session, resource_id, caller), caller, "read")

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Return one version of a Patient.

        :raises NotFound: no such version.
        """
        current = load_child(session, resource_id, caller)
        if version == current.version:
            return render_patient(session, current, caller, "vread")
        for stored in history.child_versions(session, resource_id):
            if stored.version == version and not stored.deleted:
                return render_patient(session, history.child_from_snapshot(stored), caller,
                                      "vread", current)
        raise NotFound(f"Patient/{resource_id} has no version {version}.")

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Return every version of a Patient, newest first."""
        current = load_child(session, resource_id, caller)
        out: list[tuple[Rendered | None, int, str, dt.datetime]] = [(
            render_patient(session, current, caller, "history"), current.version,
            "POST" if current.version == 1 else "PUT", current.last_updated)]
        for stored in history.child_versions(session, resource_id):
            rendered = render_patient(session, history.child_from_snapshot(stored), caller,
                                      "history", current)
            out.append((rendered, stored.version, "POST" if stored.version == 1 else "PUT",
                        stored.last_updated))
        return out

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of Patients (keyset paging on the internal id)."""
        query = patient_select(search, caller).order_by(Child.id)
        if search.cursor:
            last = decode_cursor(search.cursor, 1)[0]
            if not last.isdigit():
                raise BadRequest("_cursor is not a paging cursor of this search: follow the "
                                 "Bundle's next link.", expression="_cursor")
            query = query.where(Child.id > int(last))
        # The page's ids first (the search's own conditions), then its children in one joined
        # SELECT: two statements whatever the page size, instead of one per loaded list.
        ids = list(dict.fromkeys(session.scalars(
            query.with_only_columns(Child.id).limit(search.count + 1))))
        more = len(ids) > search.count
        children = list(session.scalars(_children_statement(),
                                        {"ids": ids[:search.count]}).unique()) if ids else []
        matches = [render_patient(session, c, caller, "search").resource for c in children]
        included = self._revincluded(session, children, caller) if search.revincludes else []
        cursor = encode_cursor(children[-1].id) if more and children else None
        return Page(matches, included, cursor)

    def _revincluded(self, session: Session, children: list[Child],
                     caller: Caller) -> list[dict[str, Any]]:
        """Return the CareTeams whose subject is one of ``children`` (``_revinclude``)."""
        from adapter.store.careteams import careteams_of

        return [r for child in children for r in careteams_of(session, child, caller)]

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many Patients match (no audit: no child's data is disclosed)."""
        query = patient_select(search, caller).with_only_columns(func.count(Child.id))
        return int(session.scalar(query.order_by(None)) or 0)

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Create an entry from a Patient (allocating a ContactPoint ID when it has none).

        :raises Conflict: an entry with that ContactPoint ID exists.
        """
        record, ignored = _patient_record(session, resource, caller, None)
        require_own_authority(record.managing_organisation, caller)
        if session.scalar(select(Child.id).where(
                Child.contactpoint_id == record.contactpoint_id)) is not None:
            raise Conflict("An entry with this ContactPoint ID exists: update it with PUT.",
                           expression="Patient.identifier")
        require_entry_rules(session, record, None, caller)
        with entry_write(session, record, caller):
            child, _outcome = apply_child(session, record, None)
        return self._saved(session, child, caller, "create", ignored, created=True)

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Update an entry from a Patient (``If-Match`` guards against lost updates).

        :raises PreconditionFailed: ``If-Match`` names an older version.
        :raises Invalid: the body's id differs from the URL's.
        """
        if resource.get("id") not in (None, resource_id):
            raise Invalid("The Patient's id must match the id in the URL.",
                          expression="Patient.id")
        existing = session.scalar(child_query().where(Child.resource_id == resource_id))
        if existing is None:
            return self._create_at(session, resource_id, resource, caller)
        self._check_writable(existing, caller, if_match)
        record, ignored = _patient_record(session, resource, caller, existing)
        if record.contactpoint_id != existing.contactpoint_id:
            raise Invalid("The ContactPoint ID of an entry cannot change.",
                          expression="Patient.identifier")
        require_own_authority(record.managing_organisation, caller)
        require_entry_rules(session, record, existing, caller)
        before = history.child_snapshot(existing)
        # Flushed here, the version check first: a concurrent writer gets 412, not 409.
        with entry_write(session, record, caller):
            child, outcome = apply_child(session, record, existing)
        if outcome != "unchanged":
            session.add(before)  # the superseded version, stored once this update has won
        return self._saved(session, child, caller, "update", ignored, created=False,
                           changed=outcome != "unchanged")

    def _create_at(self, session: Session, resource_id: str, resource: dict[str, Any],
                   caller: Caller) -> WriteResult:
        """Create through PUT: only at the id this server derives from the ContactPoint ID.

        :raises Invalid: another id.
        """
        result = self.create(session, resource, caller)
        if result.rendered.resource["id"] != resource_id:
            raise Invalid("A new Patient can be created by PUT only at the id derived from its "
                          "ContactPoint ID; use POST instead.", expression="Patient.id")
        return result

    def _check_writable(self, existing: Child, caller: Caller, if_match: int | None) -> None:
        """Check version, ownership and shielding before an update.

        :raises PreconditionFailed: stale ``If-Match``.
        :raises Forbidden: another authority's entry, or shielded without the right.
        """
        if if_match is not None and if_match != existing.version:
            raise PreconditionFailed(f"If-Match names version {if_match}, the current version is "
                                     f"{existing.version}: read it again and re-apply.")
        require_own_authority(existing.managing_organisation, caller)
        if existing.shielded and not caller.has_right("shielded"):
            raise Forbidden("Updating a shielded entry needs the shielding right (part of it "
                            "is withheld from you).", expression="Patient")

    def _saved(self, session: Session, child: Child, caller: Caller, action: str,
               notes: list[dict[str, Any]], *, created: bool,
               changed: bool = True) -> WriteResult:
        """Flush (with the snapshot of the superseded version), audit and render a written
        entry.

        :raises PreconditionFailed: a concurrent update won (optimistic lock).
        :raises Conflict: a unique key was taken meanwhile.
        :raises Invalid: a value the database cannot hold.
        """
        with write_errors("entry"):
            session.flush()
        audit.record(session, action if changed else "update-unchanged", resource_type="Patient",
                     resource_id=child.resource_id, child_ref=child.resource_id, caller=caller)
        # The answer carries the whole entry as the writer may see it (other organisations'
        # involvements too): the writer now holds it and is in scope of the purge.
        ledger.record_delivery(session, caller, child, "write")
        rendered = render_patient(session, child, caller, None)
        rendered.issues = notes + rendered.issues
        return WriteResult(rendered, created, changed)

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """Entries are not deleted by callers: they are archived by the retention rules.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("A directory entry is not deleted: it is archived when its "
                               "retention ends (docs/domain.md 'Retention').")

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Return the issues a create of ``resource`` would meet (nothing is stored): its
        shape, the profiles, the mapping, its references against what is stored and the
        directory's age rules (the rules that need the caller's write itself, such as one
        live entry per NHS number, are met at the write)."""
        issues = validate_stored("Patient", resource, caller)
        if any(i["severity"] in ("error", "fatal") for i in issues):
            return issues
        record, _ignored = mapping.patient_to_child(resource, base=base())
        if (record.record_status or "live") == "live":
            try:
                require_within_age_rules(record.birth_date, record.death_date,
                                         record.extended_retention, "Patient.birthDate",
                                         "Patient.deceasedDateTime")
            except Invalid as refused:
                issues.append(issue("error", refused.issue_code, refused.message,
                                    refused.expression))
        return issues
